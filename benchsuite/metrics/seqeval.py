"""Entity-level precision/recall/F1 and token accuracy for tag sequences, on a 0-100 scale.

Entities are read as seqeval's default (conlleval-compatible, non-strict) mode reads them, for
IOB1, IOB2 and IOBES tags: a ``B-``/``S-`` tag, or an ``I-``/``E-`` tag after ``O``, after an
``E-``/``S-`` tag or after a tag of another type, starts an entity; so ``O I-PER I-PER`` is one
PER entity and ``B-PER I-LOC`` is two. Entities never cross sentences. An entity counts as found
only when its type and both ends match. Precision (recall) is 0.0 when there are no predicted
(gold) entities; F1 is 0.0 when both are 0. Token accuracy over zero tokens is NaN.
"""

from __future__ import annotations

import datasets
import evaluate

from benchsuite.metrics.entities import Entity, get_entities  # noqa: F401 (re-exported)

_CITATION = """\
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018}
}
"""

# How entities are read from tags, said in every token-classification record and so in the report.
ENTITY_MODE_NOTE = ("entity scores use seqeval's default (conlleval-compatible, non-strict) mode: an I- tag after O "
                    "or after another type starts an entity")

class Seqeval(evaluate.Metric):
    """``{"precision", "recall", "f1", "accuracy"}``, each 0-100; the first three are micro-averaged."""

    def _info(self) -> evaluate.MetricInfo:
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description="Entity-level precision/recall/F1 (seqeval default mode) and token accuracy, 0-100.",
            citation=_CITATION,
            inputs_description="predictions, references: lists of sentences, each a list of tag strings.",
            features=datasets.Features({"predictions": tags, "references": tags}),
        )

    def _compute(self, *, predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
        predicted: set[tuple[int, Entity]] = set()
        gold: set[tuple[int, Entity]] = set()
        correct_tokens = total_tokens = 0
        for index, (pred_tags, gold_tags) in enumerate(zip(predictions, references, strict=True)):
            if len(pred_tags) != len(gold_tags):
                raise ValueError(f"sentence {index}: {len(pred_tags)} predicted tags "
                                 f"but {len(gold_tags)} reference tags")
            predicted.update((index, entity) for entity in get_entities(pred_tags))
            gold.update((index, entity) for entity in get_entities(gold_tags))
            correct_tokens += sum(p == g for p, g in zip(pred_tags, gold_tags, strict=True))
            total_tokens += len(gold_tags)
        found = len(predicted & gold)
        precision = found / len(predicted) if predicted else 0.0
        recall = found / len(gold) if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if found else 0.0
        accuracy = correct_tokens / total_tokens if total_tokens else float("nan")
        return {key: 100.0 * value for key, value in
                {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}.items()}
