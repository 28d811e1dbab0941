"""SQuAD v1.1 answer matching as the official evaluation script does it (normalise, exact match, token
F1); pure Python, so the report's bootstrap can use it without importing ``evaluate``."""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _normalize(text: str) -> str:
    """Lower-case, remove punctuation, remove articles, collapse whitespace (official order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(_normalize(prediction) == _normalize(gold))


def _token_f1(prediction: str, gold: str) -> float:
    """F1 of the bag-of-tokens overlap of the normalised strings, 0.0 to 1.0."""
    prediction_tokens = _normalize(prediction).split()
    gold_tokens = _normalize(gold).split()
    common = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)
