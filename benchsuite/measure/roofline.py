"""Efficiency against the machine: a model's FLOPs per pass set beside the CPU's measured matmul peak.

A speedup says a compressed model is faster than its baseline; it does not say whether
either is any good. Here the FLOPs of one forward pass (counted by
``torch.utils.flop_counter.FlopCounterMode``, with the gaps filled in below) divided by
its time give the achieved GFLOP/s, and that over the best this machine does on a large
matrix product (fp32 ``torch.mm``, and the int8 kernel behind dynamically quantized
Linear layers) gives the fraction of peak actually used.

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
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from benchsuite.fileio import write_text_atomic
from benchsuite.machine import cpu_model

# The int8 benchmark shape: tokens x in -> out, as a MiniLM-L6 FFN output layer (1536 -> 384) sees a
# batch of 32 sequences of 128 tokens.
INT8_SHAPE = (4096, 1536, 384)
# Each timed repeat runs the kernel enough times to last at least this long, so small sizes are not
# all timer noise.
_MIN_REPEAT_SECONDS = 0.02


@dataclass(frozen=True)
class MatmulPeak:
    fp32_gflops: float  # best over repeats of 2*n^3 / seconds for torch.mm of n x n fp32 matrices
    int8_gops: float | None  # best over repeats of 2*M*K*N / seconds for a dynamically quantized Linear
    fp32_size: int  # n
    int8_shape: tuple[int, int, int] | None  # (M tokens, K in_features, N out_features)
    threads: int
    repeats: int
    torch_version: str
    cpu_model: str
    method: str
    measured_at_utc: str
    int8_engine: str | None = None  # torch.backends.quantized.engine used for the int8 kernel
    int8_unavailable: str | None = None  # why int8_gops is None

    def to_json(self) -> dict:
        data = asdict(self)
        data["int8_shape"] = list(self.int8_shape) if self.int8_shape is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> MatmulPeak:
        data = dict(data)
        if data.get("int8_shape") is not None:
            data["int8_shape"] = tuple(int(v) for v in data["int8_shape"])
        return cls(**data)


def measure_matmul_peak(*, threads: int, size: int = 2048, repeats: int = 10,
                        int8_shape: tuple[int, int, int] = INT8_SHAPE) -> MatmulPeak:
    """The best fp32 GFLOP/s and int8 GOP/s this machine reaches with ``threads`` threads.

    The previous thread count (and quantized engine) is restored afterwards. If the int8
    path is unavailable (no quantized engine, torch built without it), ``int8_gops`` is
    None and ``int8_unavailable`` says why.
    """
    if threads < 1 or size < 1 or repeats < 1:
        raise ValueError(f"threads, size and repeats must be positive, got {threads}, {size}, {repeats}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fp32 = _fp32_mm_gflops(size, repeats)
        int8: float | None = None
        engine: str | None = None
        reason: str | None = None
        try:
            int8, engine = _int8_dynamic_linear_gops(int8_shape, repeats)
        except (ImportError, AttributeError, RuntimeError, NotImplementedError) as exc:
            reason = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        torch.set_num_threads(previous_threads)
    m, k, n = int8_shape
    method = (f"fp32: torch.mm of two random {size}x{size} fp32 matrices (preallocated output); "
              f"int8: torch.ao dynamically quantized Linear ({k} -> {n}, qint8 weights, per-tensor) on a "
              f"{m}x{k} fp32 input, activation quantization and fp32 output included; "
              f"{threads} threads, warm-up, then the best of {repeats} repeats, each repeat running the "
              f"kernel enough times to last >= {_MIN_REPEAT_SECONDS * 1e3:.0f} ms; "
              f"ops counted as 2*m*k*n per product")
    return MatmulPeak(
        fp32_gflops=round(fp32, 2),
        int8_gops=round(int8, 2) if int8 is not None else None,
        fp32_size=size,
        int8_shape=tuple(int8_shape) if int8 is not None else None,
        threads=threads,
        repeats=repeats,
        torch_version=torch.__version__,
        cpu_model=cpu_model(),
        method=method,
        measured_at_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        int8_engine=engine,
        int8_unavailable=reason,
    )


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


@torch.inference_mode()
def _fp32_mm_gflops(n: int, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator)
    b = torch.randn(n, n, generator=generator)
    out = torch.empty(n, n)
    return _best_rate(lambda: torch.mm(a, b, out=out), 2.0 * n**3, repeats)


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


def cached_matmul_peak(cache_dir: Path, *, threads: int) -> MatmulPeak:
    """The matmul peak for this CPU model, thread count and torch version: measured once, then read back.

    Stored as JSON under ``cache_dir / "machine"``; a file that cannot be read, or that
    describes another machine, is measured again and overwritten.
    """
    cpu, version = cpu_model(), torch.__version__
    digest = hashlib.sha256(f"{cpu}\n{version}".encode()).hexdigest()[:12]
    path = Path(cache_dir) / "machine" / f"matmul-peak-{threads}t-{digest}.json"
    try:
        peak = MatmulPeak.from_json(json.loads(path.read_text()))
        if (peak.cpu_model, peak.threads, peak.torch_version) == (cpu, threads, version):
            return peak
    except (OSError, ValueError, TypeError, KeyError):
        pass
    peak = measure_matmul_peak(threads=threads)
    write_text_atomic(path, json.dumps(peak.to_json(), indent=2, sort_keys=True) + "\n")
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
                      int8: bool = False) -> dict:
    """Achieved GFLOP/s of a pass and its fraction of the machine's fp32 (or, with ``int8``, int8) peak."""
    if seconds_per_pass <= 0:
        raise ValueError(f"seconds_per_pass must be positive, got {seconds_per_pass}")
    peak_gflops = peak.int8_gops if int8 else peak.fp32_gflops
    if peak_gflops is None or peak_gflops <= 0:
        raise ValueError(f"no int8 peak on record ({peak.int8_unavailable})" if int8
                         else f"fp32 peak must be positive, got {peak_gflops}")
    achieved = flops_per_pass / seconds_per_pass / 1e9
    return {
        "achieved_gflops": round(achieved, 3),
        "peak_gflops": round(peak_gflops, 2),
        "fraction_of_peak": round(achieved / peak_gflops, 4),
    }
