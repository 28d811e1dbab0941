"""Sequence classification and regression (GLUE): one label, or one score, per sentence or pair."""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from benchsuite.engine import IGNORED_LABEL, forward_all
from benchsuite.errors import UsageError
from benchsuite.tasks.base import Evaluation, TaskKind


class Classification(TaskKind):
    kind = "classification"
    outputs = ("logits",)
    per_token = False

    @property
    def auto_class(self):
        return AutoModelForSequenceClassification

    def model_kwargs(self) -> dict[str, Any]:
        if self.spec.is_regression:
            return {"num_labels": 1, "problem_type": "regression"}
        labels = self.spec.labels
        return {
            "num_labels": len(labels),
            "problem_type": "single_label_classification",
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
        }

    def _encode(self, rows: datasets.Dataset, *, labelled: bool = True) -> list[dict]:
        text_columns = list(self.spec.columns["text"])
        label_column = self.spec.columns["label"]
        self.require_columns(rows, text_columns + ([label_column] if labelled else []))
        if labelled:
            self.check_label_names(rows.features[label_column])
        encoded = self.tokenizer(*[rows[c][:] for c in text_columns], truncation=True,
                                 max_length=self.spec.max_length)
        keys = list(encoded.keys())
        cast = float if self.spec.is_regression else int
        labels = [cast(v) for v in rows[label_column][:]] if labelled else [IGNORED_LABEL] * len(rows)
        return [{**{k: encoded[k][i] for k in keys}, "labels": labels[i]} for i in range(len(rows))]

    def train_features(self, rows: datasets.Dataset) -> list[dict]:
        return self._encode(rows)

    def unlabelled_columns(self) -> list[str]:
        if self.spec.is_regression:  # a regression loss has no label value that it skips
            raise UsageError(f"task {self.spec.name} is a regression task, which cannot take unlabelled rows "
                             "(a transfer set); leave 'transfer' unset for it")
        return list(self.spec.columns["text"])

    def unlabelled_features(self, rows: datasets.Dataset) -> list[dict]:
        self.unlabelled_columns()
        return self._encode(rows, labelled=False)

    def evaluate(self, model: torch.nn.Module, rows: datasets.Dataset, *, batch_size: int) -> Evaluation:
        features = self._encode(rows)
        outputs, stats = forward_all(model, features, output_names=self.outputs, batch_size=batch_size,
                                     pad_token_id=self.tokenizer.pad_token_id, per_token=self.per_token,
                                     desc=f"evaluating {self.spec.name}")
        logits = np.stack(outputs["logits"])
        references = [f["labels"] for f in features]
        if self.spec.is_regression:
            predicted = logits[:, 0].astype(float).tolist()
        else:
            predicted = logits.argmax(-1).tolist()
        scores = self.compute_scores(predictions=predicted, references=references)
        rows_out = [
            {"row": i, "reference": ref, "prediction": pred, "logits": [round(float(x), 5) for x in logit]}
            for i, (ref, pred, logit) in enumerate(zip(references, predicted, logits, strict=True))
        ]
        return Evaluation(scores=scores, predictions=rows_out, forward=stats, inputs=features)
