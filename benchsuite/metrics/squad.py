"""SQuAD v1.1 exact match and token F1, as the official evaluation script computes them, on a 0-100 scale.

Answers are normalised (lower-case, drop ``string.punctuation``, drop the articles a/an/the,
collapse whitespace); each question scores the best match over its gold answers. There must be
one prediction per reference: a prediction whose id is not among the references, a repeated
prediction id, or a reference without gold answers raise ``ValueError`` (``evaluate`` itself
rejects unequal numbers of predictions and references). With no references both scores are NaN.
"""

from __future__ import annotations

import datasets
import evaluate

from benchsuite.metrics.squad_text import _exact_match, _normalize, _token_f1  # noqa: F401

_CITATION = """\
@inproceedings{rajpurkar2016squad,
  title={{SQuAD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={Proceedings of EMNLP},
  year={2016}
}
"""

class Squad(evaluate.Metric):
    """SQuAD v1.1: ``{"exact_match": float, "f1": float}``, each 0-100."""

    def _info(self) -> evaluate.MetricInfo:
        text = datasets.Value("string")
        return evaluate.MetricInfo(
            description="SQuAD v1.1 exact match and token F1 (official script), 0-100.",
            citation=_CITATION,
            inputs_description=(
                'predictions: list of {"id": str, "prediction_text": str}; '
                'references: list of {"id": str, '
                '"answers": {"text": [str, ...], "answer_start": [int, ...]}}.'
            ),
            features=datasets.Features(
                {
                    "predictions": {"id": text, "prediction_text": text},
                    "references": {
                        "id": text,
                        "answers": datasets.Sequence({"text": text, "answer_start": datasets.Value("int32")}),
                    },
                }
            ),
        )

    def _compute(self, *, predictions: list[dict], references: list[dict]) -> dict[str, float]:
        predicted: dict[str, str] = {}
        for prediction in predictions:
            if prediction["id"] in predicted:
                raise ValueError(f"prediction id {prediction['id']!r} appears more than once")
            predicted[prediction["id"]] = prediction["prediction_text"]
        unknown = predicted.keys() - {reference["id"] for reference in references}
        if unknown:
            raise ValueError(f"prediction id {sorted(unknown)[0]!r} is not among the references "
                             f"({len(unknown)} unknown id(s) in all)")
        if not references:
            return {"exact_match": float("nan"), "f1": float("nan")}
        em_total = f1_total = 0.0
        for reference in references:
            golds = reference["answers"]["text"]
            if not golds:
                raise ValueError(f"reference {reference['id']!r} has no gold answers")
            text = predicted[reference["id"]]
            em_total += max(_exact_match(text, gold) for gold in golds)
            f1_total += max(_token_f1(text, gold) for gold in golds)
        n = len(references)
        return {"exact_match": 100.0 * em_total / n, "f1": 100.0 * f1_total / n}
