"""Extractive question answering (SQuAD v1.1): sliding windows in, best text span out.

A context longer than ``max_length`` becomes several windows (features) that overlap by
``doc_stride`` tokens. Training labels each window with the answer's start and end
token, or with [CLS] when the answer is not wholly inside it. At evaluation the
``n_best`` start and end logits of every window of a question are combined into
spans (inside the context, at most ``max_answer_length`` tokens), and the best
span's characters are cut from the original context text.
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering

from benchsuite.engine import INPUT_KEYS, forward_all
from benchsuite.tasks.base import Evaluation, TaskKind


class ExtractiveQA(TaskKind):
    kind = "extractive_qa"
    outputs = ("start_logits", "end_logits")
    per_token = True

    @property
    def auto_class(self):
        return AutoModelForQuestionAnswering

    def _param(self, name: str, default: Any) -> Any:
        return self.spec.params.get(name, default)

    def _windows(self, rows: datasets.Dataset):
        cols = self.spec.columns
        self.require_columns(rows, [cols["id"], cols["question"], cols["context"], cols["answers"]])
        stride = int(self._param("doc_stride", 128))
        if stride >= self.spec.max_length // 2:
            raise ValueError(f"doc_stride {stride} must be under half of max_length {self.spec.max_length}")
        # Some SQuAD questions start with blanks that would waste window space.
        questions = [q.lstrip() for q in rows[cols["question"]][:]]
        return self.tokenizer(
            questions, rows[cols["context"]][:], truncation="only_second", max_length=self.spec.max_length,
            stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
        )

    def train_features(self, rows: datasets.Dataset) -> list[dict]:
        enc = self._windows(rows)
        answers = rows[self.spec.columns["answers"]][:]
        inputs = [k for k in INPUT_KEYS if k in enc]
        features = []
        for w in range(len(enc["input_ids"])):
            example = enc["overflow_to_sample_mapping"][w]
            offsets, sequence_ids = enc["offset_mapping"][w], enc.sequence_ids(w)
            start_char = answers[example]["answer_start"][0]
            end_char = start_char + len(answers[example]["text"][0])
            context = [i for i, s in enumerate(sequence_ids) if s == 1]
            first, last = context[0], context[-1]
            if offsets[first][0] > start_char or offsets[last][1] < end_char:
                start = end = 0  # the answer is not wholly in this window: point at [CLS]
            else:
                start = first
                while start <= last and offsets[start][0] <= start_char:
                    start += 1
                end = last
                while end >= first and offsets[end][1] >= end_char:
                    end -= 1
                start, end = start - 1, end + 1
            features.append({**{k: enc[k][w] for k in inputs}, "start_positions": start, "end_positions": end})
        return features

    def evaluate(self, model: torch.nn.Module, rows: datasets.Dataset, *, batch_size: int) -> Evaluation:
        cols = self.spec.columns
        enc = self._windows(rows)
        inputs = [k for k in INPUT_KEYS if k in enc]
        features = [{k: enc[k][w] for k in inputs} for w in range(len(enc["input_ids"]))]
        outputs, stats = forward_all(model, features, output_names=self.outputs, batch_size=batch_size,
                                     pad_token_id=self.tokenizer.pad_token_id, per_token=self.per_token,
                                     desc=f"evaluating {self.spec.name}")
        windows_of: dict[int, list[int]] = {}
        for w, example in enumerate(enc["overflow_to_sample_mapping"]):
            windows_of.setdefault(example, []).append(w)
        ids, contexts, answers = rows[cols["id"]][:], rows[cols["context"]][:], rows[cols["answers"]][:]
        predictions, references, rows_out = [], [], []
        for example in range(len(rows)):
            text, score = self._best_span(enc, outputs, windows_of.get(example, []), contexts[example])
            predictions.append({"id": ids[example], "prediction_text": text})
            gold = answers[example]
            references.append({"id": ids[example], "answers": {"text": list(gold["text"]),
                                                                 "answer_start": list(gold["answer_start"])}})
            rows_out.append({"id": ids[example], "prediction": text, "score": round(score, 4),
                             "gold": list(answers[example]["text"]), "windows": len(windows_of.get(example, []))})
        scores = self.compute_scores(predictions=predictions, references=references)
        return Evaluation(scores=scores, predictions=rows_out, forward=stats, inputs=features)

    def _best_span(self, enc, outputs, windows: list[int], context: str) -> tuple[str, float]:
        n_best = int(self._param("n_best", 20))
        max_answer = int(self._param("max_answer_length", 30))
        best_text, best_score = "", -np.inf
        for w in windows:
            start_logits, end_logits = outputs["start_logits"][w], outputs["end_logits"][w]
            offsets, sequence_ids = enc["offset_mapping"][w], enc.sequence_ids(w)
            starts = np.argsort(start_logits)[::-1][:n_best]
            ends = np.argsort(end_logits)[::-1][:n_best]
            for s in starts:
                if sequence_ids[s] != 1:
                    continue
                for e in ends:
                    if sequence_ids[e] != 1 or e < s or e - s + 1 > max_answer:
                        continue
                    score = float(start_logits[s] + end_logits[e])
                    if score > best_score:
                        best_score = score
                        best_text = context[offsets[s][0] : offsets[e][1]]
        # No valid span (every window's best tokens outside the context): an empty answer.
        return best_text, best_score if np.isfinite(best_score) else 0.0
