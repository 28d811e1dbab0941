"""Efficiency against the machine: a model's FLOPs per pass set beside the CPU's measured matmul peak.

A speedup says a compressed model is faster than its baseline; it does not say whether
either is any good. Here the FLOPs of one forward pass (counted by
``torch.utils.flop_counter.FlopCounterMode``, with the gaps filled in below) divided by
its time give the achieved GFLOP/s, and that over the best this machine does on a matrix
product in the same arithmetic gives the fraction of peak actually used. A compressor
declares its arithmetic in ``Compressor.compute``; each kind has its own peak:

* ``fp32``, ``bf16``, ``fp16``: ``torch.mm`` of two n x n matrices in that dtype. fp32
  uses n = 2048. Half precision is sized to the CPU: without native support (AVX2 only)
  torch converts on the fly and runs at a tenth of fp32 or less, so n is the largest of
  :data:`HALF_SIZES` whose measurement is estimated to take at most :data:`HALF_BUDGET_S`;
* ``int8``: the kernel behind a ``torch.ao`` dynamically quantized ``Linear`` layer.

Peaks are cached per CPU model, torch version and thread count, and every measurement
taken is kept: the peak a figure is held against is the best of them, so one measurement
taken while the cores were shared with other work does not hold every later cell to a
low peak. When a cell's achieved rate beats the peak of its kind, that kind is measured
again (the measurement is added and the best taken); a cell that still beats it gets no
fraction (``None``) and a note saying why, never a fraction above 1.

Gaps in ``FlopCounterMode`` (torch 2.13) that :func:`forward_flops` fills:

* the quantized linear ops (``quantized::linear_dynamic`` and friends, which
  ``torch.ao`` dynamically quantized ``Linear`` modules call) have no formula and count
  zero; they are counted here as the float ``Linear`` they replace, 2 * tokens * in * out;
* ``scaled_dot_product_attention`` on CPU decomposes to
  ``aten._scaled_dot_product_flash_attention_for_cpu``, which has no formula either; it
  is counted as the two matmuls it does, 2 * 2 * batch * heads * L_q * L_k * head_dim.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from benchsuite.fileio import write_text_atomic
from benchsuite.machine import cpu_model

# The compute types a peak is measured for (``Compressor.compute``), and the dtype of the float ones.
KINDS = ("fp32", "bf16", "fp16", "int8")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# fp32: n of the n x n torch.mm.
FP32_SIZE = 2048
# The int8 benchmark shape: tokens x in -> out, as a MiniLM-L6 FFN output layer (1536 -> 384) sees a
# batch of 32 sequences of 128 tokens.
INT8_SHAPE = (4096, 1536, 384)
# Half precision: the sizes n tried, smallest first (one product of each size is timed before it is
# taken), and the most seconds its measurement may be estimated to take. Without native half-precision
# kernels (AVX2 only) a 2048 product takes ten seconds or more.
HALF_SIZES = (128, 256, 512, 1024, 2048)
HALF_BUDGET_S = 1.5
# Each timed repeat runs the kernel enough times to last at least this long, so small sizes are not
# all timer noise.
_MIN_REPEAT_SECONDS = 0.02
# The cache file's layout; files without it (one measurement of fp32 and int8 each) are read as such.
CACHE_FORMAT = 2
_UNITS = {"fp32": "GFLOP/s", "bf16": "GFLOP/s", "fp16": "GFLOP/s", "int8": "GOP/s"}


def _now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class PeakMeasurement:
    """One measurement of one kind's peak."""

    kind: str  # one of KINDS
    gflops: float | None  # best over repeats of 2*m*k*n / seconds, in 1e9 ops/s (integer ops for int8)
    shape: tuple[int, int, int] | None  # (m, k, n) of the product timed; None when unavailable
    repeats: int
    method: str
    measured_at_utc: str
    engine: str | None = None  # int8: the torch.backends.quantized.engine used
    unavailable: str | None = None  # why gflops is None

    def to_json(self) -> dict:
        data = asdict(self)
        data["shape"] = list(self.shape) if self.shape is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> PeakMeasurement:
        data = dict(data)
        if data.get("kind") not in KINDS:
            raise ValueError(f"unknown peak kind {data.get('kind')!r}")
        gflops = data.get("gflops")
        if gflops is not None and not (isinstance(gflops, (int, float)) and math.isfinite(gflops) and gflops > 0):
            raise ValueError(f"a peak must be a positive number or null, got {gflops!r}")
        if gflops is None and data["kind"] == "fp32":  # measure_peak raises rather than record that
            raise ValueError("an fp32 peak cannot be unavailable")
        if data.get("shape") is not None:
            shape = tuple(int(v) for v in data["shape"])
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(f"a product shape is three positive sizes, got {data['shape']!r}")
            data["shape"] = shape
        return cls(**data)

    def describe(self) -> str:
        """What was timed, in a few words."""
        if self.shape is None:
            return f"{self.kind} (unavailable)"
        m, k, n = self.shape
        if self.kind == "int8":
            return f"int8 dynamically quantized Linear ({k} -> {n}) on {m} rows"
        return f"{self.kind} torch.mm of {n}x{n} matrices"


@dataclass(frozen=True)
class KindPeak:
    """The peak a figure is held against: the best measurement of one kind, and how many it is the best of."""

    measurement: PeakMeasurement
    best_of: int  # measurements of this kind with a value
    threads: int
    cpu_model: str
    torch_version: str

    @property
    def kind(self) -> str:
        return self.measurement.kind

    @property
    def gflops(self) -> float:
        return self.measurement.gflops

    def to_json(self) -> dict:
        return {**self.measurement.to_json(), "best_of": self.best_of, "threads": self.threads,
                "cpu_model": self.cpu_model, "torch_version": self.torch_version}


def describe_peak(peak: dict) -> str:
    """A :meth:`KindPeak.to_json` in words: what was timed, and the best of how many measurements, when."""
    what = PeakMeasurement.from_json({k: v for k, v in peak.items()
                                      if k not in ("best_of", "threads", "cpu_model", "torch_version")})
    return (f"the best {_UNITS[what.kind]} of {what.describe()} over {peak['best_of']} measurement(s) of this "
            f"machine at {peak['threads']} threads (that one taken {what.measured_at_utc})")


@dataclass(frozen=True)
class MatmulPeak:
    """Every peak measurement of one CPU model, torch version and thread count."""

    cpu_model: str
    threads: int
    torch_version: str
    measurements: tuple[PeakMeasurement, ...] = ()

    def of_kind(self, kind: str) -> tuple[PeakMeasurement, ...]:
        return tuple(m for m in self.measurements if m.kind == kind)

    def best(self, kind: str) -> KindPeak | None:
        """The best measurement of ``kind`` with a value, or None when there is none."""
        rated = [m for m in self.of_kind(kind) if m.gflops is not None]
        if not rated:
            return None
        return KindPeak(max(rated, key=lambda m: m.gflops), best_of=len(rated), threads=self.threads,
                        cpu_model=self.cpu_model, torch_version=self.torch_version)

    def unavailable(self, kind: str) -> str | None:
        """Why there is no value for ``kind`` (the latest reason recorded), None when there is one."""
        if self.best(kind) is not None:
            return None
        reasons = [m.unavailable for m in self.of_kind(kind) if m.unavailable]
        return reasons[-1] if reasons else f"no {kind} measurement"

    def missing(self) -> tuple[str, ...]:
        """The kinds never measured."""
        return tuple(kind for kind in KINDS if not self.of_kind(kind))

    def adding(self, *measurements: PeakMeasurement) -> MatmulPeak:
        return replace(self, measurements=self.measurements + tuple(measurements))

    def summary(self) -> dict:
        """The best of each kind and how many measurements there are: what a record keeps of the machine."""
        best = {kind: self.best(kind) for kind in KINDS}
        return {
            "cpu_model": self.cpu_model, "threads": self.threads, "torch_version": self.torch_version,
            **{f"{kind}_{'gops' if kind == 'int8' else 'gflops'}": best[kind].gflops if best[kind] else None
               for kind in KINDS},
            "measurements": {kind: len(self.of_kind(kind)) for kind in KINDS},
        }

    def to_json(self) -> dict:
        return {"format": CACHE_FORMAT, "cpu_model": self.cpu_model, "threads": self.threads,
                "torch_version": self.torch_version, "measurements": [m.to_json() for m in self.measurements]}

    @classmethod
    def from_json(cls, data: dict) -> MatmulPeak:
        """A cache file's content; one in the older single-measurement layout gives one measurement per kind."""
        if "measurements" not in data:
            return cls._from_single(data)
        if data.get("format") != CACHE_FORMAT:
            raise ValueError(f"unknown peak cache format {data.get('format')!r}")
        return cls(cpu_model=str(data["cpu_model"]), threads=int(data["threads"]),
                   torch_version=str(data["torch_version"]),
                   measurements=tuple(PeakMeasurement.from_json(m) for m in data["measurements"]))

    @classmethod
    def _from_single(cls, data: dict) -> MatmulPeak:
        """The layout before per-kind peaks: fp32_gflops and int8_gops of one measurement, one method for both."""
        method = f"(read from a single-measurement cache file) {data['method']}"
        size, when, repeats = int(data["fp32_size"]), str(data["measured_at_utc"]), int(data["repeats"])
        measurements = [PeakMeasurement.from_json({"kind": "fp32", "gflops": data["fp32_gflops"],
                                                   "shape": [size, size, size], "repeats": repeats,
                                                   "method": method, "measured_at_utc": when})]
        if data.get("int8_gops") is not None:
            measurements.append(PeakMeasurement.from_json({
                "kind": "int8", "gflops": data["int8_gops"], "shape": data["int8_shape"], "repeats": repeats,
                "method": method, "measured_at_utc": when, "engine": data.get("int8_engine")}))
        elif data.get("int8_unavailable"):
            measurements.append(PeakMeasurement(kind="int8", gflops=None, shape=None, repeats=repeats, method=method,
                                                measured_at_utc=when, unavailable=str(data["int8_unavailable"])))
        return cls(cpu_model=str(data["cpu_model"]), threads=int(data["threads"]),
                   torch_version=str(data["torch_version"]), measurements=tuple(measurements))


def measure_peak(kind: str, *, threads: int, repeats: int = 10, size: int | None = None,
                 int8_shape: tuple[int, int, int] = INT8_SHAPE, half_budget_s: float = HALF_BUDGET_S
                 ) -> PeakMeasurement:
    """One measurement of the best rate of ``kind`` this machine reaches with ``threads`` threads.

    ``size`` is n of the n x n product for the float kinds (fp32: :data:`FP32_SIZE` when None; bf16 and
    fp16: chosen from :data:`HALF_SIZES` within ``half_budget_s`` when None); int8 times ``int8_shape``.
    The previous thread count (and quantized engine) is restored afterwards. A kind other than fp32
    that cannot run here (no quantized engine, no half-precision mm) gives ``gflops`` None and the
    reason in ``unavailable``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown compute type {kind!r}; known: {', '.join(KINDS)}")
    if threads < 1 or repeats < 1 or (size is not None and size < 1):
        raise ValueError(f"threads, size and repeats must be positive, got {threads}, {size}, {repeats}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    common = (f"{threads} threads, warm-up, then the best of {repeats} repeats, each repeat running the "
              f"kernel enough times to last >= {_MIN_REPEAT_SECONDS * 1e3:.0f} ms; ops counted as 2*m*k*n "
              f"per product")
    engine: str | None = None
    try:
        if kind == "int8":
            m, k, n = int8_shape
            shape = tuple(int8_shape)
            method = (f"torch.ao dynamically quantized Linear ({k} -> {n}, qint8 weights, per-tensor) on a "
                      f"{m}x{k} fp32 input, activation quantization and fp32 output included; {common}")
            rate, engine = _int8_dynamic_linear_gops(shape, repeats)
        else:
            dtype = _DTYPES[kind]
            chosen = ""
            if size is None and kind == "fp32":
                size = FP32_SIZE
            elif size is None:
                size = _half_size(dtype, repeats, half_budget_s)
                chosen = (f"; n = {size}, the largest of {list(HALF_SIZES)} whose measurement was estimated "
                          f"(from one timed product of that size) to take <= {half_budget_s:g} s")
            shape = (size, size, size)
            method = (f"torch.mm of two random {size}x{size} {kind} matrices (preallocated {kind} output); "
                      f"{common}{chosen}")
            rate = _mm_gflops(dtype, size, repeats)
    except (ImportError, AttributeError, RuntimeError, NotImplementedError, TypeError) as exc:
        if kind == "fp32":
            raise
        return PeakMeasurement(kind=kind, gflops=None, shape=None, repeats=repeats,
                               method=f"{kind}: could not be measured", measured_at_utc=_now_utc(),
                               unavailable=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        torch.set_num_threads(previous_threads)
    return PeakMeasurement(kind=kind, gflops=round(rate, 2), shape=shape, repeats=repeats, method=method,
                           measured_at_utc=_now_utc(), engine=engine)


def measure_matmul_peak(*, threads: int, size: int = FP32_SIZE, repeats: int = 10,
                        int8_shape: tuple[int, int, int] = INT8_SHAPE, half_size: int | None = None,
                        kinds: tuple[str, ...] = KINDS) -> MatmulPeak:
    """One measurement of each of ``kinds`` (fp32 at ``size``, bf16/fp16 at ``half_size`` or sized to the CPU)."""
    measurements = tuple(
        measure_peak(kind, threads=threads, repeats=repeats, int8_shape=int8_shape,
                     size=size if kind == "fp32" else half_size if kind in _DTYPES else None)
        for kind in kinds)
    return MatmulPeak(cpu_model=cpu_model(), threads=threads, torch_version=torch.__version__,
                      measurements=measurements)


def _best_rate(call, ops_per_call: float, repeats: int) -> float:
    """``ops_per_call`` / seconds of ``call()``, best over ``repeats``, after warm-up; in G ops per second."""
    call()  # warm-up: allocations, packing, thread pool start
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-9)
    inner = max(1, math.ceil(_MIN_REPEAT_SECONDS / once))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            call()
        seconds = time.perf_counter() - start
        best = max(best, ops_per_call * inner / seconds)
    return best / 1e9


def _square(dtype: torch.dtype, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(dtype)
    b = torch.randn(n, n, generator=generator).to(dtype)
    return a, b, torch.empty(n, n, dtype=dtype)


@torch.inference_mode()
def _mm_gflops(dtype: torch.dtype, n: int, repeats: int) -> float:
    a, b, out = _square(dtype, n)
    return _best_rate(lambda: torch.mm(a, b, out=out), 2.0 * n**3, repeats)


def _measuring_seconds(seconds_per_call: float, repeats: int) -> float:
    """About how long :func:`_best_rate` takes for a kernel of ``seconds_per_call``."""
    return 2 * seconds_per_call + repeats * max(seconds_per_call, _MIN_REPEAT_SECONDS)


@torch.inference_mode()
def _one_product_seconds(dtype: torch.dtype, n: int) -> float:
    a, b, out = _square(dtype, n)
    torch.mm(a, b, out=out)  # warm-up
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    return max(time.perf_counter() - start, 1e-9)


def _half_size(dtype: torch.dtype, repeats: int, budget_s: float) -> int:
    """The largest of HALF_SIZES whose measurement is estimated to take <= ``budget_s``.

    Each size is timed (one product) before it is taken, and only when the time of the size below,
    scaled by n^3, leaves its measurement within budget: half-precision products without native
    kernels can run slower per FLOP as they grow, so a small one alone would underestimate."""
    n = HALF_SIZES[0]
    seconds = _one_product_seconds(dtype, n)
    for bigger in HALF_SIZES[1:]:
        if _measuring_seconds(seconds * (bigger / n) ** 3, repeats) > budget_s:
            break
        bigger_seconds = _one_product_seconds(dtype, bigger)
        if _measuring_seconds(bigger_seconds, repeats) > budget_s:
            break
        n, seconds = bigger, bigger_seconds
    return n


def _int8_dynamic_linear_gops(shape: tuple[int, int, int], repeats: int) -> tuple[float, str]:
    from torch.ao.quantization import quantize_dynamic  # ImportError where torch.ao is gone

    m, k, n = shape
    previous_engine = torch.backends.quantized.engine
    supported = torch.backends.quantized.supported_engines
    engine = next((e for e in ("x86", "fbgemm") if e in supported), None)
    if engine is None:
        raise RuntimeError(f"no x86/fbgemm quantized engine (supported: {supported})")
    try:
        torch.backends.quantized.engine = engine
        generator = torch.Generator().manual_seed(0)
        linear = torch.nn.Linear(k, n)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(n, k, generator=generator) * 0.05)
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            quantized = quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)
        if not isinstance(quantized[0], torch.ao.nn.quantized.dynamic.Linear):
            raise RuntimeError(f"quantize_dynamic gave {type(quantized[0]).__name__}, not a quantized Linear")
        x = torch.randn(m, k, generator=generator)
        with torch.inference_mode():
            return _best_rate(lambda: quantized(x), 2.0 * m * k * n, repeats), engine
    finally:
        torch.backends.quantized.engine = previous_engine


def _cache_path(cache_dir: Path, threads: int) -> Path:
    digest = hashlib.sha256(f"{cpu_model()}\n{torch.__version__}".encode()).hexdigest()[:12]
    return Path(cache_dir) / "machine" / f"matmul-peak-{threads}t-{digest}.json"


def _read_cache(path: Path, threads: int) -> MatmulPeak:
    """The measurements on file for this machine; none when the file is missing, unreadable or another machine's."""
    empty = MatmulPeak(cpu_model=cpu_model(), threads=threads, torch_version=torch.__version__)
    try:
        peak = MatmulPeak.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return empty
    if (peak.cpu_model, peak.threads, peak.torch_version) != (empty.cpu_model, threads, empty.torch_version):
        return empty
    return peak


def _write_cache(path: Path, peak: MatmulPeak) -> None:
    write_text_atomic(path, json.dumps(peak.to_json(), indent=2, sort_keys=True) + "\n")


def cached_matmul_peak(cache_dir: Path, *, threads: int) -> MatmulPeak:
    """Every peak measurement for this CPU model, thread count and torch version; kinds never measured are
    measured now and added.

    Stored as JSON under ``cache_dir / "machine"``. A file that cannot be read, or that describes another
    machine, is measured again and overwritten; one in the older single-measurement layout counts as one
    measurement of fp32 and of int8.
    """
    path = _cache_path(cache_dir, threads)
    peak = _read_cache(path, threads)
    missing = peak.missing()
    if missing:
        peak = peak.adding(*(measure_peak(kind, threads=threads) for kind in missing))
        _write_cache(path, peak)
    return peak


def remeasure_peak(cache_dir: Path, *, threads: int, kind: str) -> MatmulPeak:
    """Measure ``kind`` once more and add it to the cache (read again first, so measurements another
    process added meanwhile are kept)."""
    measurement = measure_peak(kind, threads=threads)
    path = _cache_path(cache_dir, threads)
    peak = _read_cache(path, threads).adding(measurement)
    missing = peak.missing()
    if missing:  # the file went away meanwhile
        peak = peak.adding(*(measure_peak(k, threads=threads) for k in missing))
    _write_cache(path, peak)
    return peak


# --- FLOPs of a forward pass -------------------------------------------------------------------


def _linear_flops(input_shape, *args, out_shape=None, **kwargs) -> int:
    """A linear op (quantized or not): 2 * rows * in_features * out_features."""
    *rows, k = input_shape
    return 2 * math.prod(rows) * k * out_shape[-1]


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q @ K^T and P @ V: 2 * batch * L_q * L_k * (d_qk + d_v), batch covering every leading dim (heads too)."""
    *batch, l_q, d_qk = query_shape
    l_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * math.prod(batch) * l_q * l_k * (d_qk + d_v)


def _extra_formulas() -> dict:
    """Formulas for ops FlopCounterMode has none for; ops it already counts are left to it."""
    formulas = {}
    for name in ("linear_dynamic", "linear_relu_dynamic", "linear_dynamic_fp16", "linear_relu_dynamic_fp16",
                 "linear_dynamic_fp16_unpacked_weight", "linear", "linear_relu"):
        try:
            formulas[getattr(torch.ops.quantized, name)] = _linear_flops
        except (AttributeError, RuntimeError):  # op absent from this torch build
            pass
    for name in ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu"):
        try:
            formulas[getattr(torch.ops.aten, name)] = _attention_flops
        except (AttributeError, RuntimeError):
            pass
    # With a formula for the top-level SDPA op FlopCounterMode no longer decomposes it, so every backend
    # (CPU flash, math, CUDA kernels) is counted once, by the same 2 * 2 * b * h * L_q * L_k * d torch uses.
    # Ops torch itself has a formula for keep torch's.
    return {op: f for op, f in formulas.items() if op not in flop_registry}


def forward_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Floating-point operations of ``model(**batch)``, a matmul (m,k)x(k,n) counting 2*m*k*n.

    Counted by ``FlopCounterMode`` under ``torch.inference_mode``, plus formulas for the
    quantized linear ops and CPU attention it does not count (see the module docstring):
    a dynamically quantized model counts the same FLOPs as the float model it came from.
    Attention is counted over the padded length, as it is computed. Elementwise ops,
    softmax, layer norm and embedding look-ups count zero.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    try:
        with torch.inference_mode(), counter:
            model(**batch)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def achieved_fraction(flops_per_pass: int, seconds_per_pass: float, peak: MatmulPeak, *,
                      kind: str = "fp32") -> dict:
    """Achieved GFLOP/s of a pass and its fraction of the machine's best ``kind`` peak on record.

    The fraction is never above 1: a pass faster than the peak gets ``fraction_of_peak`` None and a
    ``note`` saying why (otherwise ``note`` is None). Raises ValueError when there is no ``kind`` peak.
    """
    if seconds_per_pass <= 0:
        raise ValueError(f"seconds_per_pass must be positive, got {seconds_per_pass}")
    if kind not in KINDS:
        raise ValueError(f"unknown compute type {kind!r}; known: {', '.join(KINDS)}")
    used = peak.best(kind)
    if used is None:
        raise ValueError(f"no {kind} peak on record ({peak.unavailable(kind)})")
    achieved = flops_per_pass / seconds_per_pass / 1e9
    fraction = achieved / used.gflops
    note = None
    if fraction > 1:
        note = (f"achieved {achieved:.2f} {_UNITS[kind]} beats the {kind} peak of {used.gflops} {_UNITS[kind]} "
                f"(the best of {used.best_of} measurement(s)), which no pass can: the FLOPs are over-counted "
                f"(or run in cheaper arithmetic than {kind}) or the peak was measured while the machine was "
                f"busy, so no fraction is given")
    return {
        "achieved_gflops": round(achieved, 3),
        "peak_kind": kind,
        "peak_gflops": used.gflops,
        "fraction_of_peak": round(fraction, 4) if note is None else None,
        "note": note,
        "peak": used.to_json(),
    }


def peak_efficiency(flops_per_pass: int, seconds_per_pass: float, *, compute: str, cache_dir: Path,
                    threads: int) -> dict:
    """:func:`achieved_fraction` against the cached peak of the compute type a model runs, re-measuring
    that peak once when the pass beats it.

    ``compute`` is the compressor's declared arithmetic; when it has no peak here (an unknown type, no
    quantized engine) the fp32 peak is used and the note says so. ``peak_kind`` is the type held against,
    ``peak`` the measurement used (when and how it was taken, and the best of how many),
    ``peak_remeasured`` whether this pass set off a new measurement, ``matmul_peak`` the best of every kind.
    """
    if seconds_per_pass <= 0:
        raise ValueError(f"seconds_per_pass must be positive, got {seconds_per_pass}")
    peak = cached_matmul_peak(cache_dir, threads=threads)
    notes = []
    kind = compute
    if kind not in KINDS:
        notes.append(f"unknown compute type {compute!r}: held against the fp32 peak")
        kind = "fp32"
    elif peak.best(kind) is None:
        notes.append(f"no {kind} peak on this machine ({peak.unavailable(kind)}): held against the fp32 peak")
        kind = "fp32"
    achieved = flops_per_pass / seconds_per_pass / 1e9
    cached = peak.best(kind)
    remeasured = achieved > cached.gflops
    if remeasured:
        peak = remeasure_peak(cache_dir, threads=threads, kind=kind)
        now = peak.best(kind)
        notes.append(f"the pass beat the cached {kind} peak ({cached.gflops}, best of {cached.best_of}), so "
                     f"{kind} was measured again: now {now.gflops}, best of {now.best_of}")
    result = achieved_fraction(flops_per_pass, seconds_per_pass, peak, kind=kind)
    if result["note"]:
        notes.append(result["note"])
    return {
        "compute": compute,
        **result,
        "note": "; ".join(notes) or None,
        "peak_remeasured": remeasured,
        "matmul_peak": peak.summary(),
    }
