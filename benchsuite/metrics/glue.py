"""GLUE classification and regression metrics in pure numpy, each reported on a 0-100 scale.

``compute(predictions=..., references=...)`` returns ``{name: float}``, e.g. ``{"accuracy": 90.0}``.

Degenerate inputs never raise, so a benchmark run is not lost at the scoring step:

* accuracy of zero examples is NaN;
* binary F1 (positive label 1) with no true positives is 0.0, including no positives at all;
* Matthews correlation is 0.0 when either side is constant (as scikit-learn does);
* Pearson and Spearman correlations are NaN when either side is constant, has fewer than
  two values or contains NaN (the correlation is undefined; scipy also returns NaN).
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer
          and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}
"""


class _GlueMetric(evaluate.Metric):
    """One score named like the metric, computed from 1-D predictions and references."""

    _description: str
    _dtype: str

    def _info(self) -> evaluate.MetricInfo:
        value = datasets.Value(self._dtype)
        return evaluate.MetricInfo(
            description=self._description,
            citation=_CITATION,
            inputs_description=f"predictions, references: lists of {self._dtype}, one per example.",
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, *, predictions: list, references: list) -> dict[str, float]:
        score = self._score(np.asarray(predictions), np.asarray(references))
        return {self.name: float(100.0 * score)}

    def _score(self, predictions: np.ndarray, references: np.ndarray) -> float:
        raise NotImplementedError


class Accuracy(_GlueMetric):
    _description = "Share of predictions equal to the reference label, 0-100 (NaN for no examples)."
    _dtype = "int64"

    def _score(self, predictions: np.ndarray, references: np.ndarray) -> float:
        return float(np.mean(predictions == references)) if predictions.size else float("nan")


class F1(_GlueMetric):
    _description = "Binary F1 of the positive label 1, 0-100 (0.0 when there are no true positives)."
    _dtype = "int64"

    def _score(self, predictions: np.ndarray, references: np.ndarray) -> float:
        unexpected = sorted(set(np.concatenate([predictions, references]).tolist()) - {0, 1})
        if unexpected:
            raise ValueError(f"binary F1 expects labels 0 and 1, got {unexpected}")
        tp = int(np.sum((predictions == 1) & (references == 1)))
        fp = int(np.sum((predictions == 1) & (references != 1)))
        fn = int(np.sum((predictions != 1) & (references == 1)))
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


class MatthewsCorrelation(_GlueMetric):
    _description = "Matthews correlation (multi-class form), -100 to 100 (0.0 when either side is constant)."
    _dtype = "int64"

    def _score(self, predictions: np.ndarray, references: np.ndarray) -> float:
        labels, codes = np.unique(np.concatenate([references, predictions]), return_inverse=True)
        k, n = labels.size, references.size
        true_codes, pred_codes = codes[:n], codes[n:]
        confusion = np.bincount(true_codes * k + pred_codes, minlength=k * k).reshape(k, k).astype(np.float64)
        true_sum, pred_sum = confusion.sum(axis=1), confusion.sum(axis=0)
        cov_true_pred = np.trace(confusion) * n - true_sum @ pred_sum
        cov_pred_pred = float(n) ** 2 - pred_sum @ pred_sum
        cov_true_true = float(n) ** 2 - true_sum @ true_sum
        if cov_pred_pred * cov_true_true == 0:
            return 0.0
        return float(cov_true_pred / np.sqrt(cov_true_true * cov_pred_pred))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r in float64; NaN when undefined (fewer than 2 values, a constant side, or NaN)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    if x.size < 2 or np.isnan(x).any() or np.isnan(y).any() or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    r = (dx / np.linalg.norm(dx)) @ (dy / np.linalg.norm(dy))
    return float(np.clip(r, -1.0, 1.0))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts_group = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], x.size)  # exclusive
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


class Pearson(_GlueMetric):
    _description = "Pearson correlation, -100 to 100 (NaN when a side is constant or has < 2 values)."
    _dtype = "float32"

    def _score(self, predictions: np.ndarray, references: np.ndarray) -> float:
        return _pearson(predictions, references)


class Spearmanr(_GlueMetric):
    _description = "Spearman rank correlation with averaged ties, -100 to 100 (NaN when undefined)."
    _dtype = "float32"

    def _score(self, predictions: np.ndarray, references: np.ndarray) -> float:
        if np.isnan(predictions).any() or np.isnan(references).any():
            return float("nan")
        return _pearson(_average_ranks(predictions), _average_ranks(references))
