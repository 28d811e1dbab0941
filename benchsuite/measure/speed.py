"""Speed, measured so that a 1.3x can be believed.

Baseline and compressed model are timed *interleaved* in one process (A B A B ...), on
real inputs from the task's evaluation split, after warm-up, with the thread count
fixed: machine noise hits both alike, and each speedup is the ratio of two medians
taken side by side. Every figure comes with its spread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from benchsuite.engine import collate, length_sorted_batches, model_inputs


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one workload, summarised: milliseconds with percentiles and spread."""

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    iqr_ms: float
    cv: float  # coefficient of variation (std / mean)

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> Timing:
        ms = np.asarray(seconds, dtype=float) * 1e3
        q25, q50, q75, q90, q99 = np.percentile(ms, [25, 50, 75, 90, 99])
        return cls(n=len(ms), p50_ms=round(q50, 3), p90_ms=round(q90, 3), p99_ms=round(q99, 3),
                   iqr_ms=round(q75 - q25, 3), cv=round(float(ms.std() / ms.mean()), 4))

    def to_json(self) -> dict:
        return asdict(self)


def latency_inputs(features: Sequence[dict], pad_token_id: int, *, count: int, seed: int) -> list[dict]:
    """``count`` real single-example inputs sampled from the evaluation features."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(features), size=min(count, len(features)), replace=False)
    return [collate([model_inputs(features[i])], pad_token_id) for i in sorted(chosen)]


def throughput_inputs(features: Sequence[dict], pad_token_id: int, *, batch_size: int, batches: int,
                      seed: int) -> list[dict]:
    """``batches`` real batches, as the evaluation engine forms them (sorted by length, padded)."""
    rng = np.random.default_rng(seed)
    all_batches = length_sorted_batches([len(f["input_ids"]) for f in features], batch_size)
    full = [b for b in all_batches if len(b) == batch_size] or all_batches
    chosen = rng.choice(len(full), size=min(batches, len(full)), replace=False)
    return [collate([model_inputs(features[i]) for i in full[j]], pad_token_id) for j in sorted(chosen)]


@torch.inference_mode()
def interleaved(models: dict[str, torch.nn.Module], inputs: Sequence[dict], *, warmup: int, rounds: int
                ) -> dict[str, list[float]]:
    """Seconds per pass over ``inputs`` for each model, alternating models every pass.

    Returns, per model, one time per input per round (``rounds * len(inputs)`` values).
    """
    for model in models.values():
        model.eval()
        for batch in inputs[:warmup]:
            model(**batch)
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds):
        # Alternate the order every round, so neither model always runs first.
        order = list(models.items()) if r % 2 == 0 else list(reversed(models.items()))
        for batch in inputs:
            for name, model in order:
                start = time.perf_counter()
                model(**batch)
                times[name].append(time.perf_counter() - start)
    return times


@dataclass(frozen=True)
class SpeedSettings:
    latency_inputs: int = 48
    throughput_batch_size: int = 32
    throughput_batches: int = 4
    warmup: int = 4
    rounds: int = 3


def compare_speed(baseline: torch.nn.Module, model: torch.nn.Module, features: Sequence[dict], *,
                  pad_token_id: int, seed: int, settings: SpeedSettings = SpeedSettings()
                  ) -> tuple[dict, list[dict]]:
    """Latency at batch 1 and throughput at a larger batch, of ``model`` beside ``baseline``.

    Speedups are ratios of the two models' times on the same inputs in the same round;
    their median and interquartile range over rounds (throughput) or inputs (latency) say
    how far to trust them. Also returns the throughput batches, for counting their FLOPs.
    """
    pair = {"baseline": baseline, "model": model}
    singles = latency_inputs(features, pad_token_id, count=settings.latency_inputs, seed=seed)
    lat = interleaved(pair, singles, warmup=settings.warmup, rounds=settings.rounds)
    bs = settings.throughput_batch_size
    batches = throughput_inputs(features, pad_token_id, batch_size=bs, batches=settings.throughput_batches,
                                seed=seed)
    thr = interleaved(pair, batches, warmup=1, rounds=settings.rounds)
    samples = sum(len(b["input_ids"]) for b in batches)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def per_round(times: list[float]) -> np.ndarray:  # seconds for one pass over all batches
        return np.asarray(times).reshape(settings.rounds, len(batches)).sum(axis=1)

    base_rounds, model_rounds = per_round(thr["baseline"]), per_round(thr["model"])
    throughput_ratio = base_rounds / model_rounds
    latency_ratio = np.asarray(lat["baseline"]) / np.asarray(lat["model"])
    return {
        "threads": torch.get_num_threads(),
        "latency_batch1": {name: Timing.from_seconds(v).to_json() for name, v in lat.items()},
        "throughput": {
            "batch_size": bs,
            "batches": len(batches),
            "samples": samples,
            "padding_fraction": round(1 - tokens / sum(b["input_ids"].numel() for b in batches), 4),
            "samples_per_s": round(samples / float(np.median(model_rounds)), 2),
            "tokens_per_s": round(tokens / float(np.median(model_rounds)), 1),
            "baseline_samples_per_s": round(samples / float(np.median(base_rounds)), 2),
        },
        "speedup_throughput": _ratio_summary(throughput_ratio),
        "speedup_latency": _ratio_summary(latency_ratio),
        "method": (f"baseline and model timed interleaved in one process (order alternating per round), "
                   f"{settings.warmup} warm-up inputs; latency: {len(singles)} real evaluation examples at batch 1 "
                   f"x {settings.rounds} rounds; throughput: {len(batches)} real length-sorted batches of {bs} "
                   f"x {settings.rounds} rounds; speedup = baseline time / model time on the same input and "
                   f"round, summarised by median and IQR"),
    }, batches


def _ratio_summary(ratios: np.ndarray) -> dict:
    q25, q50, q75 = np.percentile(ratios, [25, 50, 75])
    return {"median": round(float(q50), 3), "q25": round(float(q25), 3), "q75": round(float(q75), 3)}


# A speedup counts as realised only when its interquartile range clears this margin.
SPEEDUP_MARGIN = 0.05
# Signs that the machine was busy while a cell was timed. Calibrated on the 95 quick-preset records
# timed on a quiet machine (wave 1): there the baseline's batch-1 latency CV across the 48 inputs
# (which differ in length) was 0.13-0.32, and the throughput ratio's IQR at most 0.099 of its median;
# cells timed while tests shared the cores read CVs of 0.51-3.6.
NOISY_BASELINE_CV = 0.45
NOISY_RATIO_SPREAD = 0.10
NOISY = "noisy: re-measure"


def noise(speed: dict) -> str | None:
    """Why this cell's timings cannot be trusted (the machine was busy), or None when they look clean."""
    cv = speed["latency_batch1"]["baseline"]["cv"]
    ratio = speed["speedup_throughput"]
    spread = (ratio["q75"] - ratio["q25"]) / ratio["median"] if ratio["median"] > 0 else float("inf")
    reasons = []
    if cv > NOISY_BASELINE_CV:
        reasons.append(f"the baseline's batch-1 latency CV was {cv:.2f} (> {NOISY_BASELINE_CV} on a quiet machine)")
    if spread > NOISY_RATIO_SPREAD:
        reasons.append(f"the batch-32 speedup's IQR was {spread:.0%} of its median (> {NOISY_RATIO_SPREAD:.0%})")
    return "; ".join(reasons) or None


def verdict(speed: dict, *, shrank: bool, reference: bool = False) -> str:
    """One phrase per cell: did the method buy speed, or only size? Noise first: a busy machine's
    timings get no verdict but "noisy: re-measure".

    ``shrank``: parameters, non-zeros or bytes on disk fell by more than 5%. ``reference``: the baseline
    timed against itself, whose ratio must sit at 1 within the margin.
    """
    q25, q75 = speed["speedup_throughput"]["q25"], speed["speedup_throughput"]["q75"]
    if noise(speed) or (reference and (q25 > 1 + SPEEDUP_MARGIN or q75 < 1 - SPEEDUP_MARGIN)):
        return NOISY
    if reference:
        return "reference"
    if q25 > 1 + SPEEDUP_MARGIN:
        return "faster"
    if q75 < 1 - SPEEDUP_MARGIN:
        return "slower"
    return "smaller, not faster" if shrank else "no measurable change"


def shrank(*, params: int, params_nonzero: int, disk_bytes: int | None, before_params: int,
           before_params_nonzero: int, margin: float = 0.05, fp32_bytes: int = 4) -> bool:
    """Did one of the model's sizes fall by more than ``margin``? The teacher is fp32, so its file is
    about ``fp32_bytes`` per parameter."""
    return (params < (1 - margin) * before_params
            or params_nonzero < (1 - margin) * before_params_nonzero
            or (disk_bytes is not None and disk_bytes < (1 - margin) * fp32_bytes * before_params))
