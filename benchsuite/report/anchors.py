"""Published figures to hold results against, read from data: a task's ``anchor:`` field in its YAML,
and each compressor family's entry in ``benchsuite/families.yaml`` (with its plot colour). Adding a
task or a family means adding data, not editing the report."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from benchsuite.errors import UsageError

FAMILIES_FILE = Path(__file__).resolve().parents[1] / "families.yaml"


@functools.cache
def families() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(FAMILIES_FILE.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{FAMILIES_FILE}: expected a mapping of family name -> {{colour, anchor}}")
    return data


def method_anchors(names: Iterable[str]) -> list[str]:
    """``family: anchor`` lines for the families present that have one."""
    known = families()
    return [f"{name}: {known[name]['anchor']}" for name in sorted(set(names)) if known.get(name, {}).get("anchor")]


@functools.cache
def task_anchor(task: str) -> str:
    """The task spec's published reference, or "none" (also for a task whose spec is not installed here)."""
    from benchsuite.tasks import load_task  # noqa: PLC0415

    try:
        return load_task(task).anchor or "none"
    except UsageError:
        return "none (no task file of that name here)"
