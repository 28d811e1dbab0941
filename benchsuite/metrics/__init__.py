"""Offline metrics for benchsuite: ``load_metric(name)`` builds one, every score is on a 0-100 scale.

Each metric is an ``evaluate.Metric`` defined in this package, so nothing is fetched from the Hub.
Importing this module is cheap (``evaluate`` is imported by ``load_metric``), so ``METRIC_NAMES``
can be used while parsing task specs.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import evaluate

# name -> (module inside this package, class name)
_REGISTRY: dict[str, tuple[str, str]] = {
    "accuracy": ("glue", "Accuracy"),
    "f1": ("glue", "F1"),
    "matthews_correlation": ("glue", "MatthewsCorrelation"),
    "pearson": ("glue", "Pearson"),
    "spearmanr": ("glue", "Spearmanr"),
    "squad": ("squad", "Squad"),
    "seqeval": ("seqeval", "Seqeval"),
}

METRIC_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def load_metric(name: str) -> evaluate.Metric:
    """Return a fresh in-memory instance of the metric called ``name`` (one of ``METRIC_NAMES``).

    Raises ``KeyError`` naming the known metrics and the closest match for an unknown name.
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, METRIC_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}{hint}")
    module_name, class_name = _REGISTRY[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)(keep_in_memory=True)
