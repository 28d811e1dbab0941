"""Task kinds (Python) and task specs (YAML under ``tasks/``)."""

from __future__ import annotations

from benchsuite.tasks.base import Evaluation, TaskKind
from benchsuite.tasks.classification import Classification
from benchsuite.tasks.qa import ExtractiveQA
from benchsuite.tasks.spec import TaskSpec, load_task, task_files
from benchsuite.tasks.tagging import TokenClassification

KIND_CLASSES: dict[str, type[TaskKind]] = {
    cls.kind: cls for cls in (Classification, ExtractiveQA, TokenClassification)
}


def task_kind(spec: TaskSpec, tokenizer) -> TaskKind:
    return KIND_CLASSES[spec.kind](spec, tokenizer)


__all__ = ["Evaluation", "TaskKind", "TaskSpec", "KIND_CLASSES", "load_task", "task_files", "task_kind"]
