"""Pareto plots of the summary rows (matplotlib, Agg, PNG): per task and machine, and an overview.

Each point is a cell, coloured by family and labelled by its compressor config; the baseline is
a black star; error bars are the score's bootstrap interval (vertical) and the speedup's
interquartile range (horizontal); the line is the frontier of that plot's two figures over the cells
above the floor; the dotted line is the task's floor (an input-ignoring predictor's score) and a
hollow point a cell at it. Speed is never mixed across machines: each machine gets its own figures.
Output is deterministic (no timestamps in the files), so regenerating gives identical bytes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from benchsuite.report.anchors import families
from benchsuite.report.cells import Cell
from benchsuite.report.frontier import groups

OTHER_COLOURS = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
TASK_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")


def _colour(family: str, present: list[str]) -> str:
    """The family's colour from ``families.yaml``; a family not listed there takes a spare one."""
    known = families()
    if known.get(family, {}).get("colour"):
        return known[family]["colour"]
    others = [f for f in present if not known.get(f, {}).get("colour")]
    return OTHER_COLOURS[others.index(family) % len(OTHER_COLOURS)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def pyplot():
    import matplotlib  # noqa: PLC0415 (imported only when plots are written)

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.rcParams.update({"font.size": 8, "svg.hashsalt": "benchsuite"})
    return plt


def _frontier_line(points: list[tuple[float, float]], *, larger_x_better: bool) -> list[tuple[float, float]]:
    """The 2-D Pareto frontier (higher y, and larger or smaller x), sorted by x."""
    key = (lambda p: (-p[0], -p[1])) if larger_x_better else (lambda p: (p[0], -p[1]))
    line, best_y = [], float("-inf")
    for x, y in sorted(points, key=key):
        if y > best_y:
            line.append((x, y))
            best_y = y
    return sorted(line)


def frontier_points(cells: list[Cell], x_of, *, larger_x_better: bool) -> list[tuple[float, float]]:
    """The line a plot draws: the frontier of (x, score) over the cells above the floor (a cell no better than a
    constant predictor is on no frontier, as in the report's tables)."""
    points = [(x_of(c), c.score) for c in cells if not c.at_floor and c.score is not None and x_of(c) is not None]
    return _frontier_line(points, larger_x_better=larger_x_better)


def _scatter(ax, cells: list[Cell], x_of, xerr_of, *, xlabel: str, larger_x_better: bool, families: list[str]):
    """One point per cell, numbered as in the figure's key (numbers stay legible where configs crowd)."""
    for number, cell in enumerate(cells, start=1):
        x = x_of(cell)
        if x is None or cell.score is None:
            continue
        yerr = ([[cell.score - cell.score_ci_low], [cell.score_ci_high - cell.score]]
                if cell.score_ci_low is not None else None)
        xerr = xerr_of(cell)
        colour = _colour(cell.family, families)
        ax.errorbar(x, cell.score, yerr=yerr, xerr=xerr, fmt="*" if cell.is_baseline else "o",
                    markersize=11 if cell.is_baseline else 5, color=colour, ecolor=colour, elinewidth=0.7,
                    capsize=2, alpha=0.9, zorder=3, markerfacecolor="none" if cell.at_floor else colour)
        ax.annotate(str(number), (x, cell.score), xytext=(3, 3 if number % 2 else -8), textcoords="offset points",
                    fontsize=7, color=colour, zorder=4)
    floors = {c.floor_score for c in cells if c.floor_score is not None}
    if len(floors) == 1:
        ax.axhline(floors.pop(), color="#555555", linewidth=0.8, linestyle=":", zorder=1)
    line = frontier_points(cells, x_of, larger_x_better=larger_x_better)
    if len(line) > 1:
        ax.step([p[0] for p in line], [p[1] for p in line], where="post" if not larger_x_better else "pre",
                color="#999999", linewidth=1, linestyle="--", zorder=2, label="frontier")
    ax.set_xlabel(xlabel)
    ax.grid(True, linewidth=0.3, alpha=0.5)


def _key(ax, cells: list[Cell], families: list[str]) -> None:
    """The numbered configs, in the family colours."""
    ax.axis("off")
    step = min(0.045, 0.98 / max(len(cells), 1))
    for number, cell in enumerate(cells, start=1):
        ax.text(0, 1 - number * step, f"{number:>2}  {_short(cell.label)}", transform=ax.transAxes,
                fontsize=7 if step >= 0.03 else 6, color=_colour(cell.family, families), family="monospace")


def _short(label: str, width: int = 60) -> str:
    return label if len(label) <= width else label[: width - 3] + "..."


def _legend(fig, families: list[str]) -> None:
    from matplotlib.lines import Line2D  # noqa: PLC0415

    handles = [Line2D([], [], marker="*" if f == "baseline" else "o", linestyle="", color=_colour(f, families),
                      label=f) for f in families]
    handles.append(Line2D([], [], color="#999999", linestyle="--", label="frontier"))
    handles.append(Line2D([], [], color="#555555", linestyle=":", marker="o", markerfacecolor="none",
                          label="floor (input-ignoring predictor); hollow: a cell at it"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=130, metadata={"Software": None})
    tmp.replace(path)
    return path


def task_plot(cells: list[Cell], path: Path) -> Path:
    """Score against batch-32 speedup, and score against size on disk, for one task on one machine."""
    plt = pyplot()
    families = sorted({c.family for c in cells}, key=lambda f: (f != "baseline", f))
    first = cells[0]
    fig, (left, right, key) = plt.subplots(1, 3, figsize=(16, 6), gridspec_kw={"width_ratios": [5, 5, 3.2]})
    _scatter(left, cells, lambda c: c.speedup,
             lambda c: ([[c.speedup - c.speedup_q25], [c.speedup_q75 - c.speedup]] if c.speedup_q25 is not None
                        else None),
             xlabel="speedup at batch 32 (baseline time / model time; bars: IQR)", larger_x_better=True,
             families=families)
    _scatter(right, cells, lambda c: c.size_bytes / 1e6 if c.size_bytes else None, lambda c: None,
             xlabel="size on disk (MB)", larger_x_better=False, families=families)
    _key(key, cells, families)
    for ax in (left, right):
        ax.set_ylabel(f"{first.metric} (bars: 95% bootstrap interval)")
    fig.suptitle(f"{first.task} ({first.preset}, {first.model}): {first.machine}\n{first.experiment}")
    _legend(fig, families)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def overview_plot(cells: list[Cell], path: Path) -> Path:
    """Retention against batch-32 speedup for every task of one machine (markers: tasks; colours: families)."""
    plt = pyplot()
    from matplotlib.lines import Line2D  # noqa: PLC0415

    families = sorted({c.family for c in cells}, key=lambda f: (f != "baseline", f))
    tasks = sorted({c.task for c in cells})
    fig, ax = plt.subplots(figsize=(10, 6))
    for cell in cells:
        if cell.retention is None or cell.speedup is None or cell.is_baseline:
            continue
        marker = TASK_MARKERS[tasks.index(cell.task) % len(TASK_MARKERS)]
        yerr = ([[cell.retention - cell.retention_ci_low], [cell.retention_ci_high - cell.retention]]
                if cell.retention_ci_low is not None else None)
        colour = _colour(cell.family, families)
        ax.errorbar(cell.speedup, cell.retention, yerr=yerr, fmt=marker, color=colour, ecolor=colour,
                    elinewidth=0.6, capsize=1.5, markersize=5, alpha=0.85,
                    markerfacecolor="none" if cell.at_floor else colour)
    ax.axhline(100, color="#000000", linewidth=0.8)
    ax.axvline(1, color="#000000", linewidth=0.8)
    ax.set_xlabel("speedup at batch 32 over the task's baseline")
    ax.set_ylabel("retention of the baseline score (%, bars: paired 95% bootstrap interval; hollow: at the "
                  "task's floor)")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    handles = [Line2D([], [], marker="o", linestyle="", color=_colour(f, families), label=f)
               for f in families if f != "baseline"]
    handles += [Line2D([], [], marker=TASK_MARKERS[i % len(TASK_MARKERS)], linestyle="", color="#555555", label=t)
                for i, t in enumerate(tasks)]
    ax.legend(handles=handles, loc="lower right", fontsize=7)
    first = cells[0]
    ax.set_title(f"All tasks ({first.preset}, {first.model}): {first.machine}")
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def write_plots(cells: list[Cell], out_dir: Path) -> dict[tuple, Path]:
    """Every plot of one preset's cells, under ``out_dir``; returns (task, model, machine, experiment) or
    ("overview", model, machine) -> path. A task's newest experiment on a machine has the plain file name and
    is the one in the overview; an older one's name ends with its digest."""
    written: dict[tuple, Path] = {}
    by_machine: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    seen: set[tuple[str, str, str]] = set()
    for (_, task, model, machine, experiment), members in groups(cells).items():
        newest = (task, model, machine) not in seen
        seen.add((task, model, machine))
        if any(c.speedup is not None or c.size_bytes for c in members):
            suffix = "" if newest else "-" + experiment.rsplit("[", 1)[-1].rstrip("]")
            name = f"{task}-{slug(model)}-{slug(machine)}{suffix}.png"
            written[(task, model, machine, experiment)] = task_plot(members, out_dir / name)
        if newest:
            by_machine[(model, machine)] += members
    for (model, machine), members in sorted(by_machine.items()):
        if any(c.retention is not None and c.speedup is not None and not c.is_baseline for c in members):
            written[("overview", model, machine)] = overview_plot(members, out_dir / f"overview-{slug(model)}-"
                                                                                      f"{slug(machine)}.png")
    return written
