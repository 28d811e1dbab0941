"""Peak memory of a model, measured in a fresh process: resident set size (RSS) in bytes.

What is measured: the RSS of a child process and all its descendants (psutil, summed; pages
shared between processes count once per process), sampled from the *parent* every
``interval_s`` (2 ms by default), so the child runs undisturbed: no sampling thread holds
its GIL. The child splits its run into phases by printing ``BENCHSUITE_PHASE <name>`` lines
(optionally followed by its ``time.monotonic()``, which places the boundary exactly; else
the moment the parent reads the line counts), and a phase's peak is the largest sample
between its marker and the next. A final ``BENCHSUITE_RESULT <json>`` line is handed back.

Sampling can miss a spike shorter than the interval, so the kernel's own high-water mark
is recorded beside it: ``ru_maxrss`` from ``wait4`` on the command. A child started
directly from a large parent inherits that parent's high-water mark across fork and exec
(a 1 GB runner would report >= 1 GB for a 10 MB child), so the command is started
through a small launcher that forks it from a ~10 MB process and reports its ``wait4``
usage; the launcher's own memory is not sampled.

``measure_model_memory`` applies this to a model: a ``benchsuite.measure.memory_probe`` process
of its own loads the model and runs the evaluation engine over real inputs, and the record
separates the cost of loading from the peak while running inference. The probe is forked from
a warm process that has imported torch and transformers once (``warm_probe``), or where that
cannot be done, started fresh.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from benchsuite.engine import model_inputs
from benchsuite.measure.footprint import WEIGHT_SUFFIXES

PHASE = "BENCHSUITE_PHASE"
RESULT = "BENCHSUITE_RESULT"
RUSAGE = "BENCHSUITE_RUSAGE"
RU_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kilobytes on Linux
_CHILDREN_REFRESH_S = 0.05  # finding descendants scans /proc (~1 ms), so it is redone only this often

# Forks the command from this small process and reports the kernel's usage for it, so that
# its ru_maxrss does not include the high-water mark of the (large) process that measures it.
_LAUNCHER = f"""
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    except OSError as exc:
        os.write(2, f"cannot run {{sys.argv[1]}}: {{exc}}\\n".encode())
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
sys.stdout.write(f"{RUSAGE} {{usage.ru_maxrss}}\\n")
sys.stdout.flush()
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def announce_phase(name: str) -> None:
    """For the child: start phase ``name`` now (the marker carries the exact time)."""
    print(f"{PHASE} {name} {time.monotonic():.6f}", flush=True)


def announce_result(result: dict) -> None:
    """For the child: hand ``result`` (JSON-serialisable) back to the parent."""
    print(f"{RESULT} {json.dumps(result)}", flush=True)


def rss_bytes() -> int:
    """This process's resident set size now."""
    return psutil.Process().memory_info().rss


@dataclass(frozen=True)
class ProcessMemory:
    """Resident memory of one command's run: bytes, sampled from the parent."""

    peak_rss_bytes: int  # largest sample over the whole run
    phase_peak_rss_bytes: dict[str, int]  # largest sample between a phase's marker and the next
    baseline_rss_bytes: int | None  # RSS at the first phase marker (None: the child printed none)
    ru_maxrss_bytes: int | None  # kernel high-water mark of the command (wait4), None if unknown
    samples: int
    interval_s: float
    duration_s: float
    result: dict | None = None  # the child's BENCHSUITE_RESULT, parsed
    method: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def sample_peak_rss(cmd: Sequence[str], *, interval_s: float = 0.002, timeout_s: float,
                    env: dict[str, str] | None = None) -> ProcessMemory:
    """Run ``cmd`` and sample its RSS (with its descendants) every ``interval_s`` until it exits.

    ``env`` replaces the environment as in ``subprocess.Popen`` (None: this one's);
    ``PYTHONUNBUFFERED=1`` is added so Python children's markers arrive when printed.
    Raises ``RuntimeError`` with the end of the child's stderr if it exits non-zero, and
    ``TimeoutError`` (after killing it) if it runs longer than ``timeout_s``.
    """
    child_env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    markers: list[tuple[float, str]] = []
    found: dict = {}
    with tempfile.TemporaryFile() as stderr:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, *cmd], stdout=subprocess.PIPE,
                                stderr=stderr, env=child_env, start_new_session=True)
        reader = threading.Thread(target=read_child_lines, args=(proc.stdout, markers, found), daemon=True)
        reader.start()
        try:
            times, values = sample_until(lambda: proc.poll() is not None, psutil.Process(proc.pid), start=start,
                                         interval_s=interval_s, timeout_s=timeout_s, what=cmd[0], stderr=stderr)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(timeout=10)
            proc.stdout.close()
        duration = time.monotonic() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with code {proc.returncode}{tail(stderr)}")
    return process_memory(times, values, markers, found, interval_s=interval_s, duration_s=duration,
                          method=(f"RSS of the command and its descendants (psutil, summed) sampled every "
                                  f"{interval_s * 1e3:g} ms from the parent; phase peak = largest sample between "
                                  f"{PHASE} markers; ru_maxrss from wait4 on the command, forked from a small "
                                  f"launcher so the parent's high-water mark is not inherited"))


def sample_until(finished, root: psutil.Process, *, start: float, interval_s: float, timeout_s: float, what: str,
                 stderr) -> tuple[array, array]:
    """Sample the summed RSS of ``root``'s descendants every ``interval_s`` until ``finished()``.

    Returns (monotonic times, RSS bytes) of the non-empty samples; ``TimeoutError`` once
    ``timeout_s`` has passed since ``start`` (the caller kills what it started)."""
    times, values = array("d"), array("q")
    procs: list[psutil.Process] = []
    refreshed = float("-inf")
    while not finished():
        now = time.monotonic()
        if now - start > timeout_s:
            raise TimeoutError(f"{what} ran longer than {timeout_s:g} s; killed{tail(stderr)}")
        if now - refreshed > _CHILDREN_REFRESH_S or not procs:
            procs, refreshed = _descendants(root), now
        rss = _total_rss(procs)
        if rss:
            times.append(now)
            values.append(rss)
        time.sleep(interval_s)
    return times, values


def process_memory(times: array, values: array, markers: list[tuple[float, str]], found: dict, *,
                   interval_s: float, duration_s: float, method: str) -> ProcessMemory:
    peaks, baseline = _phase_peaks(times, values, markers)
    maxrss = found.get("ru_maxrss")
    return ProcessMemory(
        peak_rss_bytes=max(values, default=0),
        phase_peak_rss_bytes=peaks,
        baseline_rss_bytes=baseline,
        ru_maxrss_bytes=maxrss * RU_MAXRSS_UNIT if maxrss is not None else None,
        samples=len(values),
        interval_s=interval_s,
        duration_s=round(duration_s, 3),
        result=found.get("result"),
        method=method,
    )


def read_child_lines(stream, markers: list[tuple[float, str]], found: dict) -> None:
    """Collect the markers and result of one measured command from ``stream``, up to the launcher's usage
    line (``found["ru_maxrss"]``, and ``found["exit_code"]`` when the line carries it) or the end of it."""
    for raw in stream:
        received = time.monotonic()
        line = raw.decode(errors="replace").strip()
        if line.startswith(PHASE + " "):
            parts = line.split()
            at = float(parts[2]) if len(parts) > 2 else received
            markers.append((at, parts[1]))
        elif line.startswith(RESULT + " "):
            try:
                found["result"] = json.loads(line[len(RESULT) + 1:])
            except json.JSONDecodeError:
                found["result"] = {"unparsed": line[len(RESULT) + 1:]}
        elif line.startswith(RUSAGE + " "):
            parts = line.split()
            found["ru_maxrss"] = int(parts[1])
            if len(parts) > 2:
                found["exit_code"] = int(parts[2])
            return


def _descendants(launcher: psutil.Process) -> list[psutil.Process]:
    try:
        return launcher.children(recursive=True)
    except psutil.Error:
        return []


def _total_rss(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            pass
    return total


def _phase_peaks(times: array, values: array, markers: list[tuple[float, str]]
                 ) -> tuple[dict[str, int], int | None]:
    """Per phase, the largest sample in [its marker, the next marker); the RSS at the first marker."""
    if not markers:
        return {}, None
    markers = sorted(markers)
    bounds = [at for at, _ in markers] + [float("inf")]
    peaks: dict[str, int] = {}
    for (at, name), end in zip(markers, bounds[1:], strict=True):
        lo, hi = bisect_left(times, at), bisect_left(times, end)
        if lo == hi:  # a phase shorter than the interval: the first sample after it began
            hi = min(lo + 1, len(times))
        if lo < hi:
            peaks[name] = max(peaks.get(name, 0), max(values[lo:hi]))
    first = bisect_right(times, markers[0][0])
    baseline = values[first - 1] if first else (values[0] if values else None)
    return peaks, baseline


def tail(stderr, limit: int = 4000) -> str:
    stderr.flush()
    stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, stderr.tell() - limit))
    text = stderr.read().decode(errors="replace").strip()
    return f"; stderr ends:\n{text}" if text else "; no stderr"


@dataclass(frozen=True)
class ModelMemory:
    """Memory a model needs on the CPU, in bytes, from a fresh process (``measure_model_memory``).

    transformers maps safetensors weights from the file instead of copying them: their pages
    become resident (file-backed, shared with the page cache) only when first read, so the
    load delta can be well below ``weight_bytes`` and the rest shows up during inference;
    embedding rows never looked up may never count. Weights materialised in memory
    (quantised, converted, ``.bin``) count in full at load.
    """

    load_peak_rss_bytes: int  # process RSS peak while the model loads
    inference_peak_rss_bytes: int  # process RSS peak during a full pass over the inputs
    load_delta_rss_bytes: int  # RSS after loading minus before: what keeping the model loaded costs
    load_delta_file_rss_bytes: int | None  # of that, file-backed pages (mmapped weights); None off Linux
    process_baseline_rss_bytes: int  # RSS before loading: interpreter, torch, transformers, the inputs
    ru_maxrss_bytes: int | None  # the kernel's high-water mark of the whole probe process
    weight_bytes: int  # the model folder's weight files (*.safetensors, *.bin, *.pt)
    batch_size: int
    threads: int
    examples: int
    method: str = field(default="")

    def to_json(self) -> dict:
        return asdict(self)


def measure_model_memory(model_dir: Path, inputs: Sequence[dict], *, batch_size: int, threads: int,
                         loader: str | None = None, interval_s: float = 0.002,
                         timeout_s: float = 1800) -> ModelMemory:
    """Load the model in ``model_dir`` in a fresh process and run it over ``inputs``; its memory.

    ``inputs`` are features as the engine takes them (lists of token ids under
    ``input_ids``, ``attention_mask``, ``token_type_ids``). ``loader`` is ``module:function``
    taking the folder and returning the ``nn.Module`` (default: by ``config.json``'s
    architectures, see ``memory_probe.load_pretrained``).
    """
    model_dir = Path(model_dir)
    with tempfile.TemporaryDirectory(prefix="benchsuite-memory-") as folder:
        path = Path(folder) / "inputs.jsonl"
        with path.open("w") as fh:
            for feature in inputs:
                fh.write(json.dumps({k: list(map(int, v)) for k, v in model_inputs(feature).items()}) + "\n")
        argv = ["--model", str(model_dir), "--inputs", str(path), "--batch-size", str(batch_size),
                "--threads", str(threads)]
        if loader:
            argv += ["--loader", loader]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1",
                   TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        from benchsuite.measure.warm_probe import sample_probe  # it builds on this module's sampling

        run, origin = sample_probe(argv, env=env, interval_s=interval_s, timeout_s=timeout_s)
    result = run.result or {}
    phase_rss = result.get("rss_bytes", {})
    if "load" not in run.phase_peak_rss_bytes or "inference" not in run.phase_peak_rss_bytes or not phase_rss:
        raise RuntimeError(f"the memory probe reported no load/inference phases (got {run.phase_peak_rss_bytes}, "
                           f"result {result})")
    # The process's RSS is never below where a phase started, so each phase peak is at least that.
    load_peak = max(run.phase_peak_rss_bytes["load"], phase_rss["start"], phase_rss["loaded"])
    inference_peak = max(run.phase_peak_rss_bytes["inference"], phase_rss["loaded"], phase_rss["done"])
    return ModelMemory(
        load_peak_rss_bytes=load_peak,
        inference_peak_rss_bytes=inference_peak,
        load_delta_rss_bytes=phase_rss["loaded"] - phase_rss["start"],
        load_delta_file_rss_bytes=_delta(result.get("rss_file_bytes", {}), "start", "loaded"),
        process_baseline_rss_bytes=phase_rss["start"],
        ru_maxrss_bytes=run.ru_maxrss_bytes,
        weight_bytes=weight_bytes(model_dir),
        batch_size=batch_size,
        threads=threads,
        examples=len(inputs),
        method=(f"a process of its own ({origin}: benchsuite.measure.memory_probe, {threads} threads) "
                f"loads the model and runs benchsuite.engine.forward_all over {len(inputs)} inputs at batch "
                f"{batch_size}; psutil RSS sampled every {interval_s * 1e3:g} ms from the parent, peak per phase "
                f"(load, inference); load delta = RSS after loading minus before, read by the child after gc; plus "
                f"ru_maxrss (wait4 in the small launcher or the warm process that started it, so the runner's "
                f"high-water mark is not inherited)"),
    )


def _delta(values: dict, before: str, after: str) -> int | None:
    if values.get(before) is None or values.get(after) is None:
        return None
    return values[after] - values[before]


def weight_bytes(model_dir: Path) -> int:
    """Total size of the weight files directly in ``model_dir``."""
    files = {p for p in Path(model_dir).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES}
    return sum(p.stat().st_size for p in files)
