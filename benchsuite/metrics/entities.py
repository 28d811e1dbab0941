"""Entities of a tag sequence, read as seqeval's default (conlleval-compatible, non-strict) mode reads
them; pure Python, so the report's bootstrap can use it without importing ``evaluate``."""

from __future__ import annotations

Entity = tuple[str, int, int]  # (type, first token, last token)

_ENDS_BEFORE = {("B", "B"), ("B", "S"), ("B", "O"), ("I", "B"), ("I", "S"), ("I", "O")}
_STARTS_AFTER = {("E", "E"), ("E", "I"), ("S", "E"), ("S", "I"), ("O", "E"), ("O", "I")}


def _split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; a tag without a type (``"O"``, ``"B"``) gets type ``"_"``."""
    return tag[:1], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _chunk_ends(prev_prefix: str, prev_type: str, prefix: str, type_: str) -> bool:
    if prev_prefix in ("E", "S") or (prev_prefix, prefix) in _ENDS_BEFORE:
        return True
    return prev_prefix not in ("O", ".") and prev_type != type_


def _chunk_starts(prev_prefix: str, prev_type: str, prefix: str, type_: str) -> bool:
    if prefix in ("B", "S") or (prev_prefix, prefix) in _STARTS_AFTER:
        return True
    return prefix not in ("O", ".") and prev_type != type_


def get_entities(tags: list[str]) -> list[Entity]:
    """Entities of one sentence as ``(type, first, last)`` with inclusive token indices."""
    entities: list[Entity] = []
    prev_prefix, prev_type, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, type_ = _split_tag(tag)
        if _chunk_ends(prev_prefix, prev_type, prefix, type_):
            entities.append((prev_type, begin, i - 1))
        if _chunk_starts(prev_prefix, prev_type, prefix, type_):
            begin = i
        prev_prefix, prev_type = prefix, type_
    return entities
