"""Every measurement of one cell, in one place.

Size three ways (parameters with shared storage once, non-zeros, bytes of the file the
compressor saves and their gzip), memory of a fresh process that loads that file and
runs the evaluation inputs, speed beside the baseline (interleaved), and the achieved
FLOP/s against this machine's measured matmul peak.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from benchsuite.compressors.base import Compressor
from benchsuite.measure.footprint import Footprint, footprint, saved_size
from benchsuite.measure.memory import measure_model_memory
from benchsuite.measure.roofline import achieved_fraction, cached_matmul_peak, forward_flops
from benchsuite.measure.speed import compare_speed, verdict

# A method "shrank" the model when one of its sizes fell by more than this fraction.
SHRINK_MARGIN = 0.05
FP32_BYTES = 4


def measure_cell(*, compressor: Compressor, model: torch.nn.Module, before: Footprint,
                 load_baseline: Callable[[], torch.nn.Module], inputs: Sequence[dict], pad_token_id: int,
                 seed: int, cache_dir: Path, batch_size: int) -> dict:
    """The ``measurements`` section of a record. ``before`` is the fine-tuned model's footprint."""
    threads = torch.get_num_threads()
    after = footprint(model)
    with tempfile.TemporaryDirectory(prefix="benchsuite-cell-") as tmp:
        folder = Path(tmp) / "model"
        compressor.save(model, folder)
        disk = saved_size(folder, format=compressor.save_format)
        loader = f"{type(compressor).__module__}:{type(compressor).__qualname__}.load"
        memory = measure_model_memory(folder, inputs, batch_size=batch_size, threads=threads, loader=loader)
    baseline = load_baseline()
    speed, batches = compare_speed(baseline, model, inputs, pad_token_id=pad_token_id, seed=seed)
    flops = sum(forward_flops(model, batch) for batch in batches)
    flops_counted_on = "model"
    if flops == 0:  # ops torch cannot see (an ONNX Runtime session): the same computation as the fp32 teacher's
        flops, flops_counted_on = sum(forward_flops(baseline, batch) for batch in batches), "baseline"
    seconds = speed["throughput"]["samples"] / speed["throughput"]["samples_per_s"]
    peak = cached_matmul_peak(cache_dir, threads=threads)
    # An int8 model's linear layers run int8 kernels: compare with the int8 peak (its attention stays fp32).
    int8 = compressor.compute == "int8" and peak.int8_gops is not None
    # The teacher is fp32, so its safetensors file is about 4 bytes per parameter.
    shrank = (after.params < (1 - SHRINK_MARGIN) * before.params
              or after.params_nonzero < (1 - SHRINK_MARGIN) * before.params_nonzero
              or disk.size_bytes < (1 - SHRINK_MARGIN) * FP32_BYTES * before.params)
    return {
        "footprint": after.to_json(),
        "footprint_before": before.to_json(),
        "disk": disk.to_json(),
        "memory": memory.to_json(),
        "speed": speed,
        "efficiency": {
            "flops_per_throughput_pass": flops,
            **achieved_fraction(flops, seconds, peak, int8=int8),
            "peak_kind": "int8" if int8 else "fp32",
            "flops_counted_on": flops_counted_on,
            "matmul_peak": peak.to_json(),
            "method": "FLOPs of the throughput batches counted by torch FlopCounterMode (with quantized linear and "
                      "CPU attention formulas added), over the median time of one pass; peak = best "
                      + ("int8 quantized Linear GOP/s" if int8 else "fp32 torch.mm GFLOP/s")
                      + " of this machine at the same thread count",
        },
        "speedup_realised": "reference" if compressor.name == "baseline" else verdict(speed, shrank=shrank),
    }
