"""A transfer set: other tasks' training rows, unlabelled, as more inputs to distil on (Hinton et al. 2015).

A small task gives recovery few inputs on which to pull a compressed model towards its teacher: MRPC has
3,668 training pairs, which a model with shared layers fits (training loss 0.26) without matching the teacher
on new pairs. (Adding STS-B's and RTE's pairs did not change that at the same number of steps; README.)
``transfer=stsb,rte`` adds the *training* rows of those tasks, read as this task's inputs (their
text columns in order, so pairs go with pairs) and without labels: on them the model learns from the
teacher's outputs (the soft loss) and, when matching is on, its hidden states, never from a gold label. The
teacher's outputs on them are computed once and cached beside the task's own, which are reused.

Rows whose text (any column, lower-cased, spaces collapsed) is also in the text of this task's evaluation rows
are dropped, so no evaluated sentence is trained on; the record counts them. Only the source tasks' training
splits are read, as each one's spec and the mirror define them, and of each no more rows than the preset gives
the task itself (the smoke preset's 256; the quick preset's mrpc: all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets

from benchsuite.distillation.teacher import TeacherOutputs
from benchsuite.errors import UsageError


@dataclass(frozen=True)
class TransferSet:
    features: list[dict]  # the transfer rows as this task's inputs, their labels ignored
    facts: list[dict]  # per source task: its split, fingerprint, rows used and rows dropped, for the record


@dataclass(frozen=True)
class TransferData:
    """What recovery trains on with a transfer set: the task's training features, then the transfer set's."""

    features: list[dict]
    teacher_outputs: TeacherOutputs  # the teacher's outputs on every one of ``features``, in order
    facts: list[dict]


def normalised(text: str) -> str:
    return " ".join(str(text).lower().split())


def transfer_set(kind, names: Sequence[str], evaluated: datasets.Dataset, *, max_rows: int | None,
                 seed: int) -> TransferSet:
    """The training rows of the tasks ``names`` as unlabelled inputs of ``kind``'s task, less any row whose text
    is in ``evaluated`` (the task's evaluation rows); at most ``max_rows`` of each (sampled with ``seed``, as the
    preset samples the task's own; None: all)."""
    from benchsuite.data import load_task_data  # noqa: PLC0415 (data loading only when a transfer set is asked for)
    from benchsuite.tasks import load_task  # noqa: PLC0415

    spec = kind.spec
    columns = kind.unlabelled_columns()  # raises where the task's kind takes no unlabelled rows
    in_evaluation = {normalised(value) for column in columns for value in evaluated[column]}
    features: list[dict] = []
    facts: list[dict] = []
    for name in names:
        if name == spec.name:
            raise UsageError(f"transfer: {name} is the task itself, whose training rows recovery already uses; "
                             "name other tasks")
        source = load_task(name)
        source_columns = list(source.columns.get("text") or ()) if source.kind == "classification" else []
        if len(source_columns) != len(columns):
            raise UsageError(f"transfer: {name}'s inputs ({source.kind}, text columns {source_columns}) do not "
                             f"read as {spec.name}'s (text columns {columns}); name tasks with as many text columns")
        data = load_task_data(source, max_train=max_rows, max_eval=1, seed=seed)
        rows = data.train.select_columns(source_columns)
        renames = {a: b for a, b in zip(source_columns, columns, strict=True) if a != b}
        if renames:
            rows = rows.rename_columns(renames)
        texts = [rows[column][:] for column in columns]
        keep = [i for i in range(len(rows)) if not any(normalised(text[i]) in in_evaluation for text in texts)]
        features += kind.unlabelled_features(rows.select(keep))
        info = data.train_info
        facts.append({"task": name, "split": info.split, "fingerprint": info.fingerprint,
                      "rows_available": info.rows_available, "selection": info.selection, "rows": len(keep),
                      "dropped_in_evaluation": len(rows) - len(keep), **({"note": info.note} if info.note else {})})
    return TransferSet(features, facts)
