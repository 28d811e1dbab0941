"""Movement against magnitude at the same budget: each movement-pruned cell beside its magnitude twin, paired.

Sanh et al. 2020 compare movement and magnitude pruning at one sparsity with one fine-tuning budget; this
section does the same with the records. A cell whose pruning stage is ``movement`` or ``soft_movement`` meets a
``magnitude`` cell of the same experiment (on any machine: scores do not depend on it) when

- their pruning stages recovered with the same options (:data:`RECOVERY_OPTIONS`: the loss, epochs, learning
  rate, precision, attention dropout, transfer set, checkpoint choice, and where the pruning started). Each
  record lists the options it set away from their defaults, so two cells agree on one when neither set it or
  both set it to the same value;
- every other stage of their pipelines is the same (``+embedding_int8`` meets ``+embedding_int8``);
- both pruned the word-embedding table or neither did;
- the movement cell is at least as sparse as the magnitude cell, by at most :data:`SPARSER` (``soft_movement``
  learns its sparsity unless told it; one that kept more weights would not be a fair comparison).

Each method's own options (magnitude's schedule, soft movement's threshold...) may differ: they are the method.
Both models answered the same evaluation units, so the difference of their scores gets a paired 95% bootstrap
interval, as the hard-label ablation does.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pandas as pd

from benchsuite.records import Record
from benchsuite.report.ablation import difference_verdict, paired_difference
from benchsuite.report.cells import Cell, Predictions
from benchsuite.report.sparsity import PrunedCell, pruned_cells, recovery_text, retention_text

MOVEMENT = ("movement", "soft_movement")
# RecoveryConfig's options (tests/test_report_movement.py holds this list to its fields), and the pruning start
RECOVERY_OPTIONS = ("alpha", "temperature", "hidden_weight", "hidden_distance", "attention_weight", "epochs",
                    "learning_rate", "train_precision", "attention_dropout", "transfer", "keep_best", "start")
SPARSER = 0.02  # the most the movement cell's sparsity may exceed the magnitude cell's (a share of the weights)
ROUNDING = 1e-4  # records give sparsity to 6 decimals: a movement cell this much less sparse is as sparse


def _stages(record: Record) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, params, changed) of each stage; one compressor is its own single stage."""
    info = record.compressor
    if info.stages:
        return [(s.name, s.config.get("params") or {}, s.changed or {}) for s in info.stages]
    return [(info.name, info.config.get("params") or {}, info.changed or {})]


def budget(record: Record, method: str) -> tuple | None:
    """What two cells of a pair must share: the pruning stage's recovery options as set away from their
    defaults, and every other stage with its options; None where the record does not say (no ``changed``)."""
    stages = _stages(record)
    pruning = next((s for s in stages if s[0] == method), None)
    if pruning is None or (record.compressor.stages is None and record.compressor.changed is None):
        return None
    _, _, changed = pruning
    recovery = tuple(sorted((k, repr(changed[k])) for k in RECOVERY_OPTIONS if k in changed))
    others = tuple((name, repr(sorted(params.items()))) for name, params, _ in stages if name != method)
    return recovery, others


def movement_pairs(records: list[tuple[Record, str]], cells: list[Cell]) -> list[tuple[PrunedCell, PrunedCell]]:
    """(movement, magnitude) pairs of :class:`~benchsuite.report.sparsity.PrunedCell`, in the order the
    pruning section lists the movement cells; each meets one magnitude cell, on its own machine where one is."""
    by_path = {path: record for record, path in records}
    magnitude: dict[tuple, list[PrunedCell]] = defaultdict(list)
    movement: list[tuple[tuple, PrunedCell]] = []
    for p in pruned_cells(records, cells):
        shared = budget(by_path[p.cell.record], p.method) if p.method in ("magnitude", *MOVEMENT) else None
        if shared is None:
            continue
        place = (p.cell.task, p.cell.model, p.cell.experiment, p.embedding_pruned, shared)
        if p.method == "magnitude":
            magnitude[place].append(p)
        else:
            movement.append((place, p))
    pairs = []
    for place, p in movement:
        fair = [m for m in magnitude.get(place, []) if -ROUNDING <= p.sparsity - m.sparsity <= SPARSER]
        if fair:
            same = [m for m in fair if m.cell.machine == p.cell.machine]
            pairs.append((p, (same or fair)[0]))
    return pairs


def movement_section(records: list[tuple[Record, str]], cells: list[Cell], predictions: Predictions) -> list[str]:
    """The Markdown section (empty without a pair); ``predictions``: the statistics the cells were built from."""
    pairs = movement_pairs(records, cells)
    if not pairs:
        return []
    by_path = {path: record for record, path in records}
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for moved, pruned in pairs:
        a, b = moved.cell, pruned.cell
        difference, interval = paired_difference(predictions, (by_path[a.record], a.record),
                                                  (by_path[b.record], b.record), a.score - b.score)
        grouped[a.task].append({
            "movement": f"`{a.label}`", "sparsity": f"{100 * moved.sparsity:.1f}%", "score": f"{a.score:.2f}",
            "retention %": retention_text(a), "magnitude": f"`{b.label}`",
            "its sparsity": f"{100 * pruned.sparsity:.1f}%", "its score": f"{b.score:.2f}",
            "its retention %": retention_text(b), "recovery": recovery_text(moved),
            "difference [paired 95%]": difference,
            "verdict": difference_verdict(interval, higher="movement keeps more", lower="magnitude keeps more"),
            "machines": a.machine if a.machine == b.machine else f"{a.machine} / {b.machine}"})
    lines = ["## Movement against magnitude at the same budget", "",
             "Each cell pruned by `movement` or `soft_movement` beside the `magnitude` cell of the same experiment",
             "whose pruning stage recovered with the same options (epochs, loss, precision...) and whose other",
             "pipeline stages are the same, the movement cell as sparse as the magnitude cell or up to 2 points",
             "sparser (never keeping more weights). The difference is the movement cell's score minus the magnitude",
             "cell's, with a paired 95% bootstrap interval over the evaluation units both answered. Sanh et al. 2020",
             "(SQuAD, BERT-base, 10% of the encoder's weights kept, with distillation): soft movement F1 84.9,",
             "magnitude 80.1.",
             ""]
    for task in sorted(grouped):
        lines += [f"### {task}", "", pd.DataFrame(grouped[task]).to_markdown(index=False), ""]
    return lines
