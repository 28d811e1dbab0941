"""Which cells are worth shipping: the Pareto frontier of a task on one machine, and each family's best.

A cell is on the frontier when no other cell of the same task, model, preset and machine is at
least as good on retention, batch-32 speedup and size on disk at once, and better on one of
them. Cells missing one of the three figures take no part, and so do cells at the task's floor (no
better than a predictor that ignores its input): such a model is small and fast, and useless.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from benchsuite.report.cells import Cell

KEEP = 99.0  # retention (percent) a family's best must keep, unless its loss is within noise


def _objectives(cell: Cell) -> tuple[float, float, float] | None:
    if cell.retention is None or cell.speedup is None or not cell.size_bytes or cell.at_floor:
        return None
    return cell.retention, cell.speedup, -float(cell.size_bytes)


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def frontier(cells: Iterable[Cell]) -> list[Cell]:
    """The cells no other cell dominates, in the given order."""
    scored = [(c, o) for c in cells if (o := _objectives(c)) is not None]
    return [c for c, o in scored if not any(dominates(other, o) for _, other in scored)]


def speeds_tie(a: Cell, b: Cell) -> bool:
    """Whether two cells' batch-32 speedups are equal within the noise: their interquartile ranges overlap
    (without ranges, only equal medians tie)."""
    ranges = (a.speedup_q25, a.speedup_q75, b.speedup_q25, b.speedup_q75)
    if any(r is None for r in ranges):
        return a.speedup == b.speedup
    return a.speedup_q25 <= b.speedup_q75 and b.speedup_q25 <= a.speedup_q75


def held_by_noise(cell: Cell, cells: Iterable[Cell]) -> list[Cell]:
    """The cells that would dominate ``cell`` if speeds within the noise counted as equal: each keeps at least
    as much and is at least as small, better on one of the two, and slower than ``cell`` by less than the noise
    (:func:`speeds_tie`). A frontier cell with any holds its place on a speed difference the run cannot tell
    from noise; when the baseline is one of them, the compression bought nothing the run can tell apart."""
    mine = _objectives(cell)
    if mine is None:
        return []
    out = []
    for other in cells:
        theirs = _objectives(other)
        if other is cell or theirs is None:
            continue
        retention, size = (theirs[0], mine[0]), (theirs[2], mine[2])
        if (all(t >= m for t, m in (retention, size)) and any(t > m for t, m in (retention, size))
                and theirs[1] < mine[1] and speeds_tie(cell, other)):
            out.append(other)
    return out


def keeps_accuracy(cell: Cell) -> bool:
    kept = cell.retention is not None and (cell.retention >= KEEP or cell.retention_verdict in ("within noise", "gain",
                                                                                                "reference"))
    return kept and not cell.at_floor


def best_of_families(cells: Iterable[Cell]) -> dict[str, Cell]:
    """Each family's best cell: the fastest (batch 32) of those that keep accuracy (:func:`keeps_accuracy`),
    ties to the smaller file; when none keeps it, the one with the highest retention, a cell above the task's
    floor before one at it."""
    by_family: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        if not cell.is_baseline and cell.retention is not None:
            by_family[cell.family].append(cell)
    best = {}
    for family, members in sorted(by_family.items()):
        keeping = [c for c in members if keeps_accuracy(c) and c.speedup is not None]
        if keeping:
            best[family] = max(keeping, key=lambda c: (c.speedup, -(c.size_bytes or 0), c.retention))
        else:
            best[family] = max(members, key=lambda c: (not c.at_floor, c.retention, c.speedup or 0.0))
    return best


def groups(cells: Iterable[Cell]) -> dict[tuple[str, str, str, str, str], list[Cell]]:
    """Cells by (preset, task, model, machine, experiment): the sets whose scores, speed and size are
    comparable; a task's experiments in order of task version, newest first."""
    out: dict[tuple[str, str, str, str, str], list[Cell]] = defaultdict(list)
    for cell in cells:
        out[(cell.preset, cell.task, cell.model, cell.machine, cell.experiment)].append(cell)
    return dict(sorted(out.items(), key=lambda item: (*item[0][:4], -_version(item[0][4]), item[0][4])))


def _version(experiment: str) -> int:
    return int(experiment.split(",")[0].removeprefix("task v"))
