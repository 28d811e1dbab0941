"""Bootstrap confidence intervals from a cell's saved per-example predictions.

A score is recomputed on resamples of the evaluation units (GLUE examples, SQuAD questions,
CoNLL sentences): each unit contributes a row of sufficient statistics (for binary F1 its
true positive, false positive and false negative; for entity F1 a sentence's found, predicted
and gold entities) and a resample is a vector of counts, how often each unit was drawn. The
score of a resample is the metric applied to the count-weighted sums, so it is exactly the
metric of the resampled data set (``score(ones)`` is the recorded score; tested against the
metric classes). Spearman's rank correlation does not decompose into sums; it is computed per
resample from count-weighted ranks.

The *floor* of a task is the best score of a predictor that ignores its input: one label (GLUE
classification) or one tag for every token (CoNLL), whichever scores highest on the evaluation units.
A model whose paired interval does not clear it has learnt nothing the score can show: on mrpc,
answering "equivalent" for every pair scores 81 F1, 94% of a fine-tuned MiniLM's F1.

*Paired* retention draws one count vector per resample and applies it to the compressed
model's and the baseline's units alike, so the difficulty of the drawn examples cancels:
the interval measures the models' difference, not the test set's sampling.

Intervals are percentile intervals (95%, :data:`RESAMPLES` resamples, seeded with
:data:`SEED` and the number of units, so the same predictions give the same interval).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RESAMPLES = 1000
SEED = 20261129
LEVEL = 0.95
METHOD = (f"{int(LEVEL * 100)}% percentile bootstrap over the evaluation units (GLUE examples, SQuAD questions, "
          f"CoNLL sentences), {RESAMPLES} resamples, seed {SEED}; retention intervals are paired: each resample "
          f"draws the same units for the model and its baseline")


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Statistic:
    """A metric over units, as sums of per-unit rows: ``score(counts)`` for a (resamples, units) count matrix."""

    keys: tuple[Any, ...]  # each unit's identity (row index or question id), for pairing two models
    rows: np.ndarray  # (units, k) sufficient statistics
    combine: Callable[[np.ndarray], np.ndarray]  # (..., k) sums -> (...,) score on 0-100
    per_resample: Callable[[np.ndarray], np.ndarray] | None = None  # counts -> scores, when sums do not suffice

    @property
    def units(self) -> int:
        return len(self.keys)

    def score(self, counts: np.ndarray) -> np.ndarray:
        if self.per_resample is not None:
            return self.per_resample(counts)
        return self.combine(counts @ self.rows)

    def point(self) -> float:
        return float(self.score(np.ones((1, self.units)))[0])

    def aligned(self, keys: Sequence[Any]) -> Statistic:
        """This statistic with its units in the order of ``keys`` (the same set of units)."""
        index = {k: i for i, k in enumerate(self.keys)}
        order = np.array([index[k] for k in keys])
        rows = self.rows[order]
        if self.per_resample is None:
            return Statistic(tuple(keys), rows, self.combine)
        return _spearman(rows[:, 0], rows[:, 1], tuple(keys))


@functools.lru_cache(maxsize=8)
def resample_counts(units: int, *, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, units) counts of uniform draws with replacement of ``units`` units, seeded by ``seed`` and
    ``units``: every model evaluated on the same units gets the same resamples. Read-only (it is cached)."""
    rng = np.random.default_rng([seed, units])
    drawn = rng.integers(0, units, size=(resamples, units)) + units * np.arange(resamples)[:, None]
    counts = np.bincount(drawn.ravel(), minlength=resamples * units).reshape(resamples, units).astype(np.float64)
    counts.flags.writeable = False
    return counts


def _percentiles(values: np.ndarray) -> Interval | None:
    """The percentile interval; None when the score is undefined (NaN) on more than a tenth of the resamples."""
    defined = values[np.isfinite(values)]
    if defined.size == 0 or defined.size < 0.9 * values.size:
        return None
    values = defined
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high))


def score_interval(stat: Statistic, *, resamples: int = RESAMPLES, seed: int = SEED) -> Interval | None:
    """The score's percentile interval; None when the score is undefined on most resamples."""
    if stat.units == 0:
        return None
    return _percentiles(stat.score(resample_counts(stat.units, resamples=resamples, seed=seed)))


def retention_interval(model: Statistic, baseline: Statistic, *, paired: bool = True,
                       resamples: int = RESAMPLES, seed: int = SEED) -> Interval | None:
    """100 x model score / baseline score. Paired: the same resampled units for both (the units must be
    the same set). Unpaired (for comparison): independent draws."""
    if set(model.keys) != set(baseline.keys):
        raise ValueError(f"the two models were evaluated on different units ({model.units} vs {baseline.units}); "
                         f"a paired interval needs the same evaluation rows")
    baseline = baseline.aligned(model.keys)
    counts = resample_counts(model.units, resamples=resamples, seed=seed)
    other = counts if paired else resample_counts(model.units, resamples=resamples, seed=seed + 1)
    base = baseline.score(other)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(base != 0, 100 * model.score(counts) / base, np.nan)
    return _percentiles(ratio)


def difference_interval(model: Statistic, other: Statistic, *, resamples: int = RESAMPLES,
                        seed: int = SEED) -> Interval | None:
    """model score - other score, paired: the same resampled units for both (the same set of units)."""
    if set(model.keys) != set(other.keys):
        raise ValueError(f"the two were evaluated on different units ({model.units} vs {other.units}); "
                         f"a paired interval needs the same evaluation rows")
    counts = resample_counts(model.units, resamples=resamples, seed=seed)
    return _percentiles(model.score(counts) - other.aligned(model.keys).score(counts))


def floor(kind: str, metric: str, predictions: list[dict]) -> tuple[Any, Statistic] | None:
    """The best input-ignoring predictor on these units: (its constant, its statistic), the constant being the
    label or tag it predicts everywhere. None where no constant prediction has a score (a correlation, an
    extractive answer)."""
    if kind == "classification" and metric in ("accuracy", "f1", "matthews_correlation"):
        constants = sorted({r["reference"] for r in predictions})
        candidates = [(c, _classification(metric, [{**r, "prediction": c} for r in predictions])) for c in constants]
    elif kind == "token_classification" and metric in ("accuracy", "precision", "recall", "f1"):
        constants = sorted({tag for r in predictions for tag in r["reference"]})
        candidates = [(c, _tagging(metric, [{**r, "prediction": [c] * len(r["reference"])} for r in predictions]))
                      for c in constants]
    else:
        return None
    return max(candidates, key=lambda item: item[1].point(), default=None)


# --- the metrics, as sums ------------------------------------------------------------------------


def _safe_div(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1), empty)


def _mean(rows: np.ndarray, keys: tuple) -> Statistic:
    """Per-unit values (0..1) in column 0; score = 100 x their mean (NaN for no units)."""
    rows = np.column_stack([rows, np.ones(len(rows))])
    return Statistic(keys, rows, lambda s: 100 * _safe_div(s[..., 0], s[..., 1], np.nan))


def _binary_f1(pred: np.ndarray, ref: np.ndarray, keys: tuple) -> Statistic:
    rows = np.column_stack([(pred == 1) & (ref == 1), (pred == 1) & (ref != 1), (pred != 1) & (ref == 1)])
    return Statistic(keys, rows.astype(np.float64),
                     lambda s: 100 * _safe_div(2 * s[..., 0], 2 * s[..., 0] + s[..., 1] + s[..., 2], 0.0))


def _matthews(pred: np.ndarray, ref: np.ndarray, keys: tuple) -> Statistic:
    labels, codes = np.unique(np.concatenate([ref, pred]), return_inverse=True)
    k, n = labels.size, ref.size
    rows = np.zeros((n, k * k))
    rows[np.arange(n), codes[:n] * k + codes[n:]] = 1

    def combine(sums: np.ndarray) -> np.ndarray:
        confusion = sums.reshape(*sums.shape[:-1], k, k)
        total = confusion.sum(axis=(-2, -1))
        true_sum, pred_sum = confusion.sum(axis=-1), confusion.sum(axis=-2)
        trace = np.trace(confusion, axis1=-2, axis2=-1)
        cov_tp = trace * total - (true_sum * pred_sum).sum(-1)
        cov_pp = total**2 - (pred_sum * pred_sum).sum(-1)
        cov_tt = total**2 - (true_sum * true_sum).sum(-1)
        return 100 * _safe_div(cov_tp, np.sqrt(cov_tt * cov_pp), 0.0)

    return Statistic(keys, rows, combine)


def _pearson_of_sums(s: np.ndarray) -> np.ndarray:
    """Pearson r from the sums of 1, x, y, x^2, y^2, xy; NaN where a side is constant (up to rounding)."""
    n, x, y, xx, yy, xy = (s[..., i] for i in range(6))
    var_x, var_y = n * xx - x * x, n * yy - y * y
    defined = (var_x > 1e-12 * np.abs(n * xx)) & (var_y > 1e-12 * np.abs(n * yy))
    r = _safe_div(n * xy - x * y, np.sqrt(np.where(defined, var_x * var_y, 1.0)), np.nan)
    return np.where(defined, 100 * np.clip(r, -1, 1), np.nan)


def _pearson(pred: np.ndarray, ref: np.ndarray, keys: tuple) -> Statistic:
    x, y = pred.astype(np.float64), ref.astype(np.float64)
    return Statistic(keys, np.column_stack([np.ones_like(x), x, y, x * x, y * y, x * y]), _pearson_of_sums)


def _weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The average rank each unit takes in a sample holding ``weights[i]`` copies of it (ties averaged)."""
    order = np.argsort(values, kind="mergesort")
    v, w = values[order], weights[order]
    new_group = np.concatenate([[True], v[1:] != v[:-1]])
    group = np.cumsum(new_group) - 1
    group_weight = np.bincount(group, weights=w)
    ends = np.cumsum(group_weight)
    ranks_sorted = (ends - group_weight + 1 + ends) / 2
    ranks = np.empty_like(values, dtype=np.float64)
    ranks[order] = ranks_sorted[group]
    return ranks


def _spearman(pred: np.ndarray, ref: np.ndarray, keys: tuple) -> Statistic:
    x, y = pred.astype(np.float64), ref.astype(np.float64)

    def per_resample(counts: np.ndarray) -> np.ndarray:
        out = np.empty(len(counts))
        for i, w in enumerate(counts):
            rx, ry = _weighted_ranks(x, w), _weighted_ranks(y, w)
            sums = w @ np.column_stack([np.ones_like(rx), rx, ry, rx * rx, ry * ry, rx * ry])
            out[i] = _pearson_of_sums(sums)
        return out

    return Statistic(keys, np.column_stack([x, y]), lambda s: s, per_resample=per_resample)


def _classification(metric: str, rows: list[dict]) -> Statistic | None:
    keys = tuple(r["row"] for r in rows)
    pred = np.array([r["prediction"] for r in rows])
    ref = np.array([r["reference"] for r in rows])
    if metric == "accuracy":
        return _mean((pred == ref).astype(np.float64), keys)
    if metric == "f1":
        return _binary_f1(pred, ref, keys)
    if metric == "matthews_correlation":
        return _matthews(pred, ref, keys)
    if metric == "pearson":
        return _pearson(pred, ref, keys)
    if metric == "spearmanr":
        return _spearman(pred, ref, keys)
    return None


def _qa(metric: str, rows: list[dict]) -> Statistic | None:
    from benchsuite.metrics.squad_text import _exact_match, _token_f1  # noqa: PLC0415 (the metric's own)

    one = {"f1": _token_f1, "exact_match": _exact_match}.get(metric)
    if one is None:
        return None
    values = np.array([max(one(r["prediction"], gold) for gold in r["gold"]) for r in rows], dtype=np.float64)
    return _mean(values, tuple(r["id"] for r in rows))


def _tagging(metric: str, rows: list[dict]) -> Statistic | None:
    from benchsuite.metrics.entities import get_entities  # noqa: PLC0415

    keys = tuple(r["row"] for r in rows)
    if metric == "accuracy":
        sums = np.array([[sum(p == g for p, g in zip(r["prediction"], r["reference"], strict=True)),
                          len(r["reference"])] for r in rows], dtype=np.float64).reshape(-1, 2)
        return Statistic(keys, sums, lambda s: 100 * _safe_div(s[..., 0], s[..., 1], np.nan))
    counts = []
    for r in rows:
        predicted, gold = set(get_entities(r["prediction"])), set(get_entities(r["reference"]))
        counts.append((len(predicted & gold), len(predicted), len(gold)))
    sums = np.array(counts, dtype=np.float64).reshape(-1, 3)
    if metric == "precision":
        return Statistic(keys, sums, lambda s: 100 * _safe_div(s[..., 0], s[..., 1], 0.0))
    if metric == "recall":
        return Statistic(keys, sums, lambda s: 100 * _safe_div(s[..., 0], s[..., 2], 0.0))
    if metric == "f1":
        return Statistic(keys, sums, lambda s: 100 * _safe_div(2 * s[..., 0], s[..., 1] + s[..., 2], 0.0))
    return None


_KINDS = {"classification": _classification, "extractive_qa": _qa, "token_classification": _tagging}


def statistic(kind: str, metric: str, predictions: list[dict]) -> Statistic | None:
    """The metric ``metric`` of a task kind over saved prediction rows; None for a metric it cannot resample."""
    build = _KINDS.get(kind)
    return build(metric, predictions) if build is not None else None
