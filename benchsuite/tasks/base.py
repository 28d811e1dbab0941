"""The contract of a task *kind*: how to tokenize, predict and score one family of tasks.

A kind turns dataset rows into features (token ids plus labels), names the model
head it needs, and turns the model's outputs back into per-example predictions and
scores. ``evaluate`` is the only place a model is scored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import datasets
import torch

from benchsuite.engine import ForwardStats
from benchsuite.errors import UsageError
from benchsuite.metrics import load_metric
from benchsuite.tasks.spec import TaskSpec


@dataclass(frozen=True)
class Evaluation:
    scores: dict[str, float]  # 0-100 scale, keyed as the metrics name them
    predictions: list[dict[str, Any]]  # one JSON-able row per evaluated example, for auditing
    forward: ForwardStats
    inputs: list[dict]  # the features the model ran on, for the measurements to reuse
    notes: tuple[str, ...] = ()


class TaskKind(ABC):
    kind: ClassVar[str]
    #: The model outputs a prediction is made from, and whether they have one row per token.
    outputs: ClassVar[tuple[str, ...]]
    per_token: ClassVar[bool]

    def __init__(self, spec: TaskSpec, tokenizer):
        self.spec = spec
        self.tokenizer = tokenizer

    @property
    @abstractmethod
    def auto_class(self):
        """The transformers Auto class of the head, e.g. AutoModelForSequenceClassification."""

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained`` that shape the head (number of labels...)."""
        return {}

    @abstractmethod
    def train_features(self, rows: datasets.Dataset) -> list[dict]:
        """Token ids plus the labels the model's forward takes (``labels``, ``start_positions``...)."""

    def unlabelled_columns(self) -> list[str]:
        """The text columns of a row without labels (a transfer set's, for distillation); kinds that cannot take
        such rows raise a UsageError."""
        raise UsageError(f"task {self.spec.name}: a transfer set of unlabelled rows is not supported for "
                         f"{self.kind} tasks, only for classification ones; leave 'transfer' unset")

    def unlabelled_features(self, rows: datasets.Dataset) -> list[dict]:
        """Features of rows with :meth:`unlabelled_columns` and no labels, their labels all
        :data:`benchsuite.engine.IGNORED_LABEL`. A kind that names unlabelled columns overrides this too."""
        self.unlabelled_columns()  # raises for a kind that takes no unlabelled rows
        raise NotImplementedError(f"{type(self).__name__} names unlabelled columns but does not override "
                                  "unlabelled_features to encode them")

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, rows: datasets.Dataset, *, batch_size: int) -> Evaluation:
        """Predict every row and score the predictions with the spec's metrics."""

    def compute_scores(self, *, predictions: list, references: list) -> dict[str, float]:
        scores: dict[str, float] = {}
        for name in self.spec.metrics:
            scores.update(load_metric(name).compute(predictions=predictions, references=references))
        return {k: float(v) for k, v in scores.items()}

    def check_label_names(self, feature) -> None:
        """Fail early when the dataset's label names differ from the spec's (a silent label swap)."""
        names = getattr(feature, "names", None)
        if names is not None and self.spec.labels is not None and list(names) != list(self.spec.labels):
            raise UsageError(
                f"task {self.spec.name}: the dataset's label names {list(names)} differ from the spec's "
                f"labels {list(self.spec.labels)} ({self.spec.source}); fix the spec's labels"
            )

    def require_columns(self, rows: datasets.Dataset, columns: list[str]) -> None:
        missing = [c for c in columns if c not in rows.column_names]
        if missing:
            raise UsageError(
                f"task {self.spec.name}: the dataset has no column(s) {missing} (it has {rows.column_names}); "
                f"fix 'columns' in {self.spec.source}"
            )
