"""Memory probes forked from a warm process: Python, torch and transformers start once per run, not per cell.

``measure_model_memory`` measures each model in a process of its own. Starting Python and
importing torch, transformers and its modeling code takes a few seconds, the same for every
cell and most of a small model's probe: 8 to 11 s per probe of the tests' tiny BERT on a busy
2-core machine, against 1.3 to 1.6 s forked. The warm process pays it once: it imports what the probe
imports before its ``start`` marker (``memory_probe``, hence torch, transformers and the engine,
plus ``transformers.modeling_utils``, which every architecture's code needs), runs no tensor
operation, then forks one probe per request. The child runs ``memory_probe.main`` with the
request's arguments and environment, as ``python -m benchsuite.measure.memory_probe`` would.

What the record sees: the same phases, measured the same way, from the same starting point. A
fork copies the page tables of anonymous memory but not those of shared file mappings (the code
and read-only data of torch's libraries, ~100 MB), so the child first maps the file pages the
warm process has mapped (``populate``); without that it would start ~90 MB lower and count those
pages again inside its load and inference phases. Its kernel high-water mark (``ru_maxrss``,
``VmHWM``) starts from its RSS at the fork: it leaves out the imports' transient peak, which in a
fresh process comes before the ``start`` marker too. Measured against fresh processes on
all-MiniLM-L6-v2 (2 threads, 64 inputs at batch 32, 6 runs each, Xeon): the baseline, load peak
and load delta agree within 0.4 MB; the inference peak reads 563-577 MB forked and 559-583 MB
fresh, within a fresh process's own run-to-run spread.

Protocol, one line each way on the warm process's stdin and stdout::

    <- BENCHSUITE_READY                               imports done, no Python thread but the main one
    -> {"argv": [...], "env": {...}, "stderr": path}
    <- the child's BENCHSUITE_PHASE and BENCHSUITE_RESULT lines
    <- BENCHSUITE_RUSAGE <ru_maxrss> <exit code>      after wait4 on the child

Where ``os.fork`` is missing, or the imports started a Python thread (the child could wait forever
on a lock that thread held), the warm process is not used and each probe starts fresh, as before.
Forked children set their own thread count: the warm process never runs a tensor operation, so
no OpenMP pool exists to be inherited half-made (torch's import starts only idle native helper
threads, the state every DataLoader worker is forked from).
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import psutil

from benchsuite.measure import memory
from benchsuite.measure.memory import PHASE, RUSAGE, ProcessMemory

READY = "BENCHSUITE_READY"
_UNUSABLE = "BENCHSUITE_UNUSABLE"
# Each probe gets its whole environment; a change in any other variable starts a new warm process, since the imports
# may have read it. These change between probes of one run (the thread count; pytest's current test).
PER_PROBE_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTEST_CURRENT_TEST")
_START_TIMEOUT_S = 300


class WarmProbes:
    """One warm process and the probes forked from it, one at a time."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        env = dict(env, PYTHONUNBUFFERED="1")
        self._lock = threading.Lock()
        self._stderr = tempfile.TemporaryFile()
        self._stderr_tail = ""  # the end of the warm process's stderr, kept when it is closed
        self.proc = subprocess.Popen([sys.executable, "-m", "benchsuite.measure.warm_probe"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, env=env, start_new_session=True)
        first = _readline(self.proc.stdout, _START_TIMEOUT_S)
        if first != READY:
            self.close()
            raise OSError(f"the warm probe process did not start ({first or 'no output'}){self._stderr_tail}")

    def sample(self, argv: list[str], *, env: dict[str, str], interval_s: float, timeout_s: float) -> ProcessMemory:
        """Fork a probe that runs ``memory_probe.main(argv)`` in environment ``env``; sample it as
        ``memory.sample_peak_rss`` samples a command. Any failure but the probe's own leaves this
        process closed (the next probe starts a new one)."""
        with self._lock, tempfile.NamedTemporaryFile(prefix="benchsuite-probe-", suffix=".stderr") as stderr:
            markers: list[tuple[float, str]] = []
            found: dict = {}
            reader = threading.Thread(target=memory.read_child_lines, args=(self.proc.stdout, markers, found),
                                      daemon=True)
            start = time.monotonic()
            try:
                self.proc.stdin.write((json.dumps({"argv": argv, "env": env, "stderr": stderr.name}) + "\n").encode())
                self.proc.stdin.flush()
                reader.start()
                times, values = memory.sample_until(lambda: not reader.is_alive(), psutil.Process(self.proc.pid),
                                                    start=start, interval_s=interval_s, timeout_s=timeout_s,
                                                    what="the memory probe", stderr=stderr)
            except BaseException:
                self.close()  # a timeout, an interrupt or a broken pipe: the child and the warm process go
                raise
            duration = time.monotonic() - start
            if "exit_code" not in found:
                self.close()
                raise RuntimeError(f"the warm probe process ended during a probe{self._stderr_tail}")
            if found["exit_code"] != 0:
                raise RuntimeError(f"the memory probe ({' '.join(argv)}) exited with code {found['exit_code']}"
                                   f"{memory.tail(stderr)}")
        return memory.process_memory(
            times, values, markers, found, interval_s=interval_s, duration_s=duration,
            method=(f"RSS of the probe and its descendants (psutil, summed) sampled every {interval_s * 1e3:g} ms "
                    f"from the parent; phase peak = largest sample between {PHASE} markers; the probe {FORKED}; "
                    f"ru_maxrss from wait4 there"))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the warm process and any probe it forked
            except ProcessLookupError:
                pass
        self.proc.wait()
        if not self._stderr.closed:
            self._stderr_tail = memory.tail(self._stderr)
            self._stderr.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:  # a broken pipe on flush
                pass


_warm: WarmProbes | None = None
_unavailable: str | None = None  # why probes start fresh in this process, once found out


FORKED = "forked from a warm process that had imported torch and transformers"
FRESH = "a fresh python -m"


def sample_probe(argv: list[str], *, env: dict[str, str], interval_s: float,
                 timeout_s: float) -> tuple[ProcessMemory, str]:
    """Run the memory probe with ``argv`` under ``env``, forked from this process's warm process where
    it can be (started on first use, again when ``env`` changes outside ``PER_PROBE_ENV``), else fresh.
    Returns the sampled run and where the probe came from (``FORKED`` or ``FRESH``)."""
    global _warm, _unavailable
    base = {k: v for k, v in env.items() if k not in PER_PROBE_ENV}
    if _unavailable is None and not hasattr(os, "fork"):
        _unavailable = "os.fork is not available"
    if _unavailable is None:
        if _warm is not None and (_warm.env != base or not _warm.alive):
            _warm.close()
            _warm = None
        if _warm is None:
            try:
                _warm = WarmProbes(base)
            except OSError as exc:
                _unavailable = str(exc)
        if _warm is not None:
            return _warm.sample(argv, env=env, interval_s=interval_s, timeout_s=timeout_s), FORKED
    return memory.sample_peak_rss([sys.executable, "-m", "benchsuite.measure.memory_probe", *argv],
                                  interval_s=interval_s, timeout_s=timeout_s, env=env), FRESH


@atexit.register
def _close_warm() -> None:
    if _warm is not None:
        _warm.close()


def _readline(stream, timeout_s: float) -> str:
    """The first line of ``stream`` (stripped), '' at its end or after ``timeout_s``."""
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return got[0].decode(errors="replace").strip() if got else ""


# --- the warm process ---------------------------------------------------------------------------------------------

def serve() -> None:
    """Import what every probe needs, then fork one probe per request line until stdin ends."""
    import transformers.modeling_utils  # noqa: F401  (what import_modeling_code pulls in for any architecture)

    from benchsuite.measure import memory_probe

    # A Python thread could hold a lock the child would then wait on forever (torch's native helpers are idle).
    threads = threading.active_count()
    if threads != 1:
        print(f"{_UNUSABLE} the imports started {threads - 1} Python threads; forking from here is not safe",
              flush=True)
        return
    try:
        populate(resident_file_pages()[:1])
    except OSError as exc:
        print(f"{_UNUSABLE} file pages cannot be mapped ahead in a forked probe: {exc}", flush=True)
        return
    print(READY, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        resident = resident_file_pages()
        pid = os.fork()
        if pid == 0:
            _probe(request, memory_probe.main, resident)
        _, status, usage = os.wait4(pid, 0)
        print(f"{RUSAGE} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}", flush=True)


def _probe(request: dict, main, resident: list[tuple[int, int]]) -> None:
    """The forked child: the warm process's file pages mapped, stderr to the request's file, the request's
    environment, the probe; never returns."""
    code = 1
    try:
        fd = os.open(request["stderr"], os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 2)
        os.close(fd)
        populate(resident)
        os.environ.clear()
        os.environ.update(request["env"])
        main(request["argv"])
        code = 0
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def resident_file_pages() -> list[tuple[int, int]]:
    """(address, length) runs of this process's file-backed pages that are mapped now (``/proc/self/pagemap``)."""
    page = os.sysconf("SC_PAGE_SIZE")
    runs: list[tuple[int, int]] = []
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or not fields[5].startswith("/"):
                continue  # anonymous memory, the stack, [vdso]: a fork copies those mappings
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            pagemap.seek(lo // page * 8)
            entries = memoryview(pagemap.read((hi - lo) // page * 8)).cast("Q")
            start = None
            for i, entry in enumerate(entries):
                if entry >> 63:  # present
                    start = i if start is None else start
                elif start is not None:
                    runs.append((lo + start * page, (i - start) * page))
                    start = None
            if start is not None:
                runs.append((lo + start * page, (len(entries) - start) * page))
    return runs


_MADV_POPULATE_READ = 22  # Linux 5.14


def populate(runs: list[tuple[int, int]]) -> None:
    """Map the pages of ``runs`` into this process, reading them as a fresh process's imports did.

    A fork copies the page tables of anonymous memory but not those of shared file mappings (the
    code and read-only data of torch's libraries): the child would start ~100 MB below a fresh
    process and count those pages again as it touches them, inside the load and inference phases."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for address, length in runs:
        if libc.madvise(address, length, _MADV_POPULATE_READ) != 0:
            error = ctypes.get_errno()
            if error not in (errno.EFAULT, errno.ENOMEM):  # the mapping went away: nothing left to map
                raise OSError(error, f"madvise(MADV_POPULATE_READ): {os.strerror(error)}")


if __name__ == "__main__":
    serve()
