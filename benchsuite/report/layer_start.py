"""Where a shared layer starts: each sharing cell whose layers started from one of their group's layers
(``init`` ``first``, ``middle``, ``last``) against the same cell started from the group's ``average``.

Two cells pair when they are of one compressor in one experiment and their options differ in ``init`` alone.
The average-start twin may come from another machine (one on the same machine first): the section compares
scores, which the machine's kernels change far less than the training does, and it names both machines.
Both models answered the same evaluation units, so the score difference gets a paired 95% bootstrap
interval, as the hard-label ablation does. ``average`` was the default until these pairs showed it was the
worse start (``benchsuite.compressors.share.cross_layer``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from benchsuite.records import Record
from benchsuite.report.ablation import difference_verdict, options_except, paired_difference, variant_pairs
from benchsuite.report.cells import Cell, Predictions, percent

REFERENCE = "average"


def start_pairs(records: list[tuple[Record, str]]) -> list[tuple[tuple[Record, str], tuple[Record, str]]]:
    """(picked start, average start) pairs, each a (record, path); cells without ``init`` take no part."""
    sharing = [(record, path) for record, path in records
               if "init" in (record.compressor.config.get("params") or {})]
    return variant_pairs(sharing, reference=lambda params: params["init"] == REFERENCE,
                         recipe=lambda params: options_except(params, {"init"}), across_machines=True)


def start_section(records: list[tuple[Record, str]], cells: list[Cell], predictions: Predictions) -> list[str]:
    """The Markdown section (empty without a pair)."""
    pairs = start_pairs(records)
    if not pairs:
        return []
    by_path = {c.record: c for c in cells}
    rows: list[dict[str, Any]] = []
    for (record, path), (reference, reference_path) in pairs:
        cell, reference_cell = by_path[path], by_path[reference_path]
        difference, interval = paired_difference(predictions, (record, path), (reference, reference_path),
                                                 cell.score - reference_cell.score)
        init = record.compressor.config["params"]["init"]
        rows.append({
            "task": cell.task, "cell": f"`{cell.label}`", "init": init, "score": f"{cell.score:.2f}",
            "retention": _retention(cell), "started from the average": f"`{reference_cell.label}`",
            "its score": f"{reference_cell.score:.2f}", "its retention": _retention(reference_cell),
            "difference [paired 95%]": difference,
            "verdict": difference_verdict(interval, higher=f"{init} scores higher", lower="the average scores higher"),
            "machine": cell.machine if cell.machine == reference_cell.machine
            else f"{cell.machine}; the average: {reference_cell.machine}"})
    return ["## Where a shared layer starts", "",
            "Each sharing cell whose shared layers started as one of their group's trained layers (`init` `first`,",
            "`middle` or `last`) beside the same compressor and options started from the group's `average`, in the",
            "same experiment; on the same machine where there is such a twin, else on another (both named: these are",
            "scores, not speeds). The difference is the first's score minus the second's, with a",
            "paired 95% bootstrap interval over the evaluation units both answered. Cells recorded while `average`",
            "was the default do not name `init` in their label.", "",
            pd.DataFrame(rows).to_markdown(index=False), ""]


def _retention(cell: Cell) -> str:
    return percent(cell.retention, cell.retention_ci_low, cell.retention_ci_high)
