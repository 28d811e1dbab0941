"""What the teacher bought: each distilled cell against its hard-label ablation, paired on the same examples.

A compressor that recovers with a distillation signal (``alpha`` > 0, or hidden-state or attention
matching) has an ablation when the same experiment on the same machine holds a cell of the same
compressor whose options are identical except that the signal is off (``alpha`` = 0, no matching; the
temperature and distance then do nothing and are ignored). The two models answered the same evaluation
units, so the difference of their scores gets a paired 95% bootstrap interval, as retention does: it
says whether the teacher's signal made a measurable difference, which two retention figures side by side
cannot. Pipelines are left out (a stage's ablation would have to match the other stages too).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pandas as pd

from benchsuite.records import Record
from benchsuite.report import bootstrap
from benchsuite.report.cells import Cell, Predictions, baseline_key, experiment_key

SIGNAL = {"alpha": 0.0, "hidden_weight": 0.0, "attention_weight": 0.0}  # the hard-label values
IGNORED = ("temperature", "hidden_distance")  # no effect once the signal is off


def _params(record: Record) -> dict[str, Any] | None:
    if record.compressor.stages:
        return None
    params = record.compressor.config.get("params") or {}
    return params if "alpha" in params else None


def options_except(params: dict[str, Any], names) -> tuple:
    """The options other than ``names``, hashable: what two cells of a pair share."""
    return tuple(sorted((k, repr(v)) for k, v in params.items() if k not in names))


def at_values(params: dict[str, Any], values: dict[str, Any]) -> bool:
    """Whether each option of ``values`` holds its value there (an option left out holds it)."""
    return all(params.get(k, v) == v for k, v in values.items())


def variant_pairs(records: list[tuple[Record, str]], *, reference: Callable[[dict[str, Any]], bool],
                  recipe: Callable[[dict[str, Any]], tuple], across_machines: bool = False,
                  ) -> list[tuple[tuple[Record, str], tuple[Record, str]]]:
    """(variant, reference) pairs, each a (record, path), in path order of the variant: cells of one compressor
    in one experiment on one machine whose options share ``recipe``, the second with ``reference`` options.
    ``across_machines``: the reference may come from another machine (for scores, which do not depend on it the
    way speed does), one on the variant's own machine first."""
    references: dict[tuple, list[tuple[Record, str]]] = {}
    variants = []
    for record, path in sorted(records, key=lambda x: x[1]):
        params = _params(record) if record.status == "ok" and record.primary_score is not None else None
        if params is None:
            continue
        experiment = experiment_key(record) if across_machines else baseline_key(record)
        place = (experiment, record.compressor.name, recipe(params))
        if reference(params):
            references.setdefault(place, []).append((record, path))
        else:
            variants.append((place, (record, path)))
    pairs = []
    for place, (record, path) in variants:
        found = references.get(place)
        if found:
            same = [r for r in found if r[0].cell.machine == record.cell.machine]
            pairs.append(((record, path), (same or found)[0]))
    return pairs


def ablation_pairs(records: list[tuple[Record, str]]) -> list[tuple[tuple[Record, str], tuple[Record, str]]]:
    """(distilled, ablation) pairs, each a (record, path), in path order of the distilled one."""
    return variant_pairs(records, reference=lambda params: at_values(params, SIGNAL),
                         recipe=lambda params: options_except(params, {*SIGNAL, *IGNORED}))


def paired_difference(predictions: Predictions, pair: tuple[Record, str], other: tuple[Record, str],
                      difference: float) -> tuple[str, bootstrap.Interval | None]:
    """``difference`` (the first's score minus the other's) with its paired 95% interval, as a table shows it,
    and the interval (None where the two did not answer the same evaluation units)."""
    ours, theirs = predictions.statistic(*pair), predictions.statistic(*other)
    interval = (bootstrap.difference_interval(ours, theirs)
                if ours is not None and theirs is not None and set(ours.keys) == set(theirs.keys) else None)
    text = f"{difference:+.2f}"
    if interval is not None:
        text += f" [{interval.low:+.2f} to {interval.high:+.2f}]"
    return text, interval


def difference_verdict(interval: bootstrap.Interval | None, *, higher: str, lower: str) -> str:
    """``higher`` where the paired interval lies above 0, ``lower`` where below, else no measurable difference."""
    if interval is None:
        return "n/a"
    if interval.low > 0:
        return higher
    if interval.high < 0:
        return lower
    return "no measurable difference"


def ablation_section(records: list[tuple[Record, str]], cells: list[Cell], predictions: Predictions) -> list[str]:
    """The Markdown section (empty without a pair); ``predictions``: the statistics the cells were built from."""
    pairs = ablation_pairs(records)
    if not pairs:
        return []
    by_path = {c.record: c for c in cells}
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (record, path), (hard, hard_path) in pairs:
        cell, hard_cell = by_path[path], by_path[hard_path]
        difference, interval = paired_difference(predictions, (record, path), (hard, hard_path),
                                                 cell.score - hard_cell.score)
        grouped[cell.task].append({
            "with the teacher": f"`{cell.label}`", "score": f"{cell.score:.2f}",
            "retention %": f"{cell.retention:.1f}" if cell.retention is not None else "n/a",
            "hard labels only": f"`{hard_cell.label}`", "its score": f"{hard_cell.score:.2f}",
            "its retention %": f"{hard_cell.retention:.1f}" if hard_cell.retention is not None else "n/a",
            "difference [paired 95%]": difference,
            "verdict": difference_verdict(interval, higher="the teacher helps", lower="the teacher hurts"),
            "machine": cell.machine})
    lines = ["## Distillation against its hard-label ablation", "",
             "Each cell trained with a teacher's signal (soft targets, hidden-state or attention matching) beside the",
             "same compressor and options trained on the hard labels alone, in the same experiment on the same",
             "machine. The difference is the first's score minus the second's, with a paired 95% bootstrap interval",
             "over the evaluation units both answered.", ""]
    for task in sorted(grouped):
        lines += [f"### {task}", "", pd.DataFrame(grouped[task]).to_markdown(index=False), ""]
    return lines
