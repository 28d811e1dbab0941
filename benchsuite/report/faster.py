"""What the faster recovery options cost: each cell recovered with ``train_precision=bf16`` or
``attention_dropout`` set against the same cell recovered by default (fp32, the model's own attention dropout).

Two cells pair when they are of one compressor in one experiment on one machine and their options differ in
those two alone. Both models answered the same evaluation units, so the score difference gets a paired 95%
bootstrap interval, as the hard-label ablation does; beside it, the seconds each recovery took (checkpoints
left out). Their ratio is shown only for recoveries recorded within :data:`SAME_SITTING_HOURS` of each other: the
machine type is the same across sessions, but its speed is not (3.18 and 1.09 s a step for the same 3-layer
SQuAD student in two sessions), so recoveries from different sittings are not timed against each other;
``benchmarks/recovery_step.py`` measures the options interleaved.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from benchsuite.records import Record
from benchsuite.report.ablation import at_values, difference_verdict, options_except, paired_difference, variant_pairs
from benchsuite.report.cells import Cell, Predictions

FAST = {"train_precision": "fp32", "attention_dropout": None}  # the options, at their defaults
SAME_SITTING_HOURS = 3.0  # a session's length here: recoveries further apart are not timed against each other


def faster_pairs(records: list[tuple[Record, str]]) -> list[tuple[tuple[Record, str], tuple[Record, str]]]:
    """(faster, default) pairs, each a (record, path)."""
    return variant_pairs(records, reference=lambda params: at_values(params, FAST),
                         recipe=lambda params: options_except(params, FAST))


def _seconds(record: Record) -> float | None:
    recovery = record.compressor.recovery or {}
    return recovery.get("seconds")


def recovery_times(faster: Record, default: Record) -> str:
    """Both recoveries' seconds, and their ratio when they were recorded in one sitting."""
    fast, slow = _seconds(faster), _seconds(default)
    if not (fast and slow):
        return "n/a"
    apart = abs(datetime.fromisoformat(faster.provenance.time_utc)
                - datetime.fromisoformat(default.provenance.time_utc)).total_seconds() / 3600
    if apart > SAME_SITTING_HOURS:
        return f"{slow:,.0f} / {fast:,.0f} (recorded {apart:,.0f} h apart: not compared)"
    return f"{slow:,.0f} / {fast:,.0f} ({slow / fast:.2f}x)"


def faster_section(records: list[tuple[Record, str]], cells: list[Cell], predictions: Predictions) -> list[str]:
    """The Markdown section (empty without a pair)."""
    pairs = faster_pairs(records)
    if not pairs:
        return []
    by_path = {c.record: c for c in cells}
    rows: list[dict[str, Any]] = []
    for (record, path), (default, default_path) in pairs:
        cell, default_cell = by_path[path], by_path[default_path]
        difference, interval = paired_difference(predictions, (record, path), (default, default_path),
                                                 cell.score - default_cell.score)
        rows.append({
            "task": cell.task, "with the speed options": f"`{cell.label}`", "score": f"{cell.score:.2f}",
            "by default": f"`{default_cell.label}`", "its score": f"{default_cell.score:.2f}",
            "difference [paired 95%]": difference,
            "verdict": difference_verdict(interval, higher="the faster recipe scores higher",
                                          lower="the faster recipe scores lower"),
            "recovery seconds, default / with the options": recovery_times(record, default),
            "machine": cell.machine})
    return ["## Faster recovery against the default recipe", "",
            "Each cell whose recovery ran its forward passes under bf16 autocast (`train_precision=bf16`) or with",
            "another dropout on attention probabilities (`attention_dropout`) beside the same compressor and options",
            "recovered by default (fp32, the model's own dropout), in the same experiment on the same machine. The",
            "difference is the first's score minus the second's, with a paired 95% bootstrap interval over the",
            "evaluation units both answered; the seconds are each recovery's own training time. Their ratio, shown",
            f"only for recoveries recorded within {SAME_SITTING_HOURS:.0f} hours of each other (this machine type's",
            "speed differs from session to session), says whether the options paid on that task; the interleaved",
            "measurement is `benchmarks/recovery_step.py`.", "",
            pd.DataFrame(rows).to_markdown(index=False), ""]
