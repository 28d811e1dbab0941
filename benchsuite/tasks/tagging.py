"""Token classification (CoNLL-2003 NER): a tag per word, predicted on the word's first sub-word."""

from __future__ import annotations

from typing import Any

import datasets
import torch
from transformers import AutoModelForTokenClassification

from benchsuite.engine import IGNORED_LABEL, forward_all
from benchsuite.metrics.seqeval import ENTITY_MODE_NOTE
from benchsuite.tasks.base import Evaluation, TaskKind


class TokenClassification(TaskKind):
    kind = "token_classification"
    outputs = ("logits",)
    per_token = True

    @property
    def auto_class(self):
        return AutoModelForTokenClassification

    def model_kwargs(self) -> dict[str, Any]:
        labels = self.spec.labels
        return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)}}

    def _encode(self, rows: datasets.Dataset) -> tuple[list[dict], list[list[int | None]]]:
        """Features with ``labels`` on each word's first sub-word (-100 elsewhere), and word ids."""
        tokens_column, tags_column = self.spec.columns["tokens"], self.spec.columns["tags"]
        self.require_columns(rows, [tokens_column, tags_column])
        self.check_label_names(getattr(rows.features[tags_column], "feature", None))
        encoded = self.tokenizer(rows[tokens_column][:], is_split_into_words=True, truncation=True,
                                 max_length=self.spec.max_length)
        keys = list(encoded.keys())
        tags = rows[tags_column][:]
        features, word_ids = [], []
        for i in range(len(rows)):
            words = encoded.word_ids(i)
            labels, previous = [], None
            for word in words:
                labels.append(IGNORED_LABEL if word is None or word == previous else int(tags[i][word]))
                previous = word
            features.append({**{k: encoded[k][i] for k in keys}, "labels": labels})
            word_ids.append(words)
        return features, word_ids

    def train_features(self, rows: datasets.Dataset) -> list[dict]:
        return self._encode(rows)[0]

    def evaluate(self, model: torch.nn.Module, rows: datasets.Dataset, *, batch_size: int) -> Evaluation:
        features, word_ids = self._encode(rows)
        outputs, stats = forward_all(model, features, output_names=self.outputs, batch_size=batch_size,
                                     pad_token_id=self.tokenizer.pad_token_id, per_token=self.per_token,
                                     desc=f"evaluating {self.spec.name}")
        names = self.spec.labels
        gold_ids = rows[self.spec.columns["tags"]][:]
        predictions, references, rows_out = [], [], []
        truncated_words = 0
        for i, (logits, words) in enumerate(zip(outputs["logits"], word_ids, strict=True)):
            best = logits.argmax(-1)
            n_words = len(gold_ids[i])
            # Words cut off by max_length get "O": counted and reported, never dropped.
            tags = ["O"] * n_words
            previous = None
            for position, word in enumerate(words):
                if word is not None and word != previous:
                    tags[word] = names[int(best[position])]
                previous = word
            seen = len({w for w in words if w is not None})
            truncated_words += n_words - seen
            gold = [names[t] for t in gold_ids[i]]
            predictions.append(tags)
            references.append(gold)
            rows_out.append({"row": i, "reference": gold, "prediction": tags})
        scores = self.compute_scores(predictions=predictions, references=references)
        notes = (ENTITY_MODE_NOTE,) + ((f"{truncated_words} words beyond max_length {self.spec.max_length} were "
                                         f"predicted 'O'",) if truncated_words else ())
        return Evaluation(scores=scores, predictions=rows_out, forward=stats, inputs=features, notes=notes)


