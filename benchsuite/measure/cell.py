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

from benchsuite.compressors.base import CompressionResult, Compressor
from benchsuite.measure.footprint import Footprint, footprint, saved_size
from benchsuite.measure.memory import measure_model_memory
from benchsuite.measure.roofline import describe_peak, forward_flops, peak_efficiency
from benchsuite.measure.speed import compare_speed, shrank, verdict


def measure_cell(*, compressor: Compressor, result: CompressionResult, before: Footprint,
                 load_baseline: Callable[[], torch.nn.Module], inputs: Sequence[dict], pad_token_id: int,
                 seed: int, cache_dir: Path, batch_size: int) -> dict:
    """The ``measurements`` section of a record. ``before`` is the fine-tuned model's footprint."""
    threads = torch.get_num_threads()
    model = result.model
    after = footprint(model)
    with tempfile.TemporaryDirectory(prefix="benchsuite-cell-") as tmp:
        folder = Path(tmp) / "model"
        compressor.save(result, folder)
        # A compressor that changed the tokenizer ships it: its files count (the baseline's tokenizer does not).
        extra = ([p for p in map(Path, result.tokenizer.save_pretrained(Path(tmp) / "tokenizer")) if p.is_file()]
                 if result.tokenizer is not None else [])
        disk = saved_size(folder, format=compressor.save_format, extra=extra)
        loader = f"{type(compressor).__module__}:{type(compressor).__qualname__}.load"
        memory = measure_model_memory(folder, inputs, batch_size=batch_size, threads=threads, loader=loader)
    baseline = load_baseline()
    speed, batches = compare_speed(baseline, model, inputs, pad_token_id=pad_token_id, seed=seed)
    flops = sum(forward_flops(model, batch) for batch in batches)
    flops_counted_on = "model"
    if flops == 0:  # ops torch cannot see (an ONNX Runtime session): the same computation as the fp32 teacher's
        flops, flops_counted_on = sum(forward_flops(baseline, batch) for batch in batches), "baseline"
    seconds = speed["throughput"]["samples"] / speed["throughput"]["samples_per_s"]
    # Held against the peak of the arithmetic the compressor declares (an int8 model's linear layers run int8
    # kernels; its attention stays fp32); re-measured once if the pass beats it, never a fraction above 1.
    efficiency = peak_efficiency(flops, seconds, compute=compressor.compute, cache_dir=cache_dir, threads=threads)
    smaller = shrank(params=after.params, params_nonzero=after.params_nonzero, disk_bytes=disk.size_bytes,
                     before_params=before.params, before_params_nonzero=before.params_nonzero)
    return {
        "footprint": after.to_json(),
        "footprint_before": before.to_json(),
        "disk": disk.to_json(),
        "memory": memory.to_json(),
        "speed": speed,
        "efficiency": {
            "flops_per_throughput_pass": flops,
            "flops_counted_on": flops_counted_on,
            **efficiency,
            "method": "achieved GFLOP/s = FLOPs of the throughput batches counted by torch FlopCounterMode (with "
                      "quantized linear and CPU attention formulas added) over the median time of one pass; "
                      f"compute type {compressor.compute!r}, compared with {describe_peak(efficiency['peak'])}; "
                      "fraction_of_peak null when the pass beats that peak even after re-measuring it",
        },
        # The baseline is timed against itself: its ratio must sit at 1, or the machine was busy.
        "speedup_realised": verdict(speed, shrank=smaller, reference=compressor.name == "baseline"),
    }
