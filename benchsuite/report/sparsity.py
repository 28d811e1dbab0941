"""Retention against sparsity: every unstructured-pruning cell of a task on one axis.

Unstructured pruning comes as several methods (``magnitude``, ``movement``, ``soft_movement``), at several
sparsities and recovery budgets, alone or in a pipeline; ``soft_movement`` learns how many weights it
keeps instead of being told. To compare methods at the sparsity they reached, and to see where a task's
retention starts to fall, this section lists each task's pruned cells (per experiment, across machines:
retention is a ratio of scores, not a speed) sorted by the zeros in the encoder's Linears as the record's
layout counts them, with the recovery that stage trained, the retention and its paired interval, and the
file; a plot per task draws retention against sparsity, one colour per method, each point marked with its
recovery epochs. Rendered from records and
:class:`~benchsuite.report.cells.Cell` rows only.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchsuite.records import Record
from benchsuite.report.cells import Cell
from benchsuite.report.plots import OTHER_COLOURS, pyplot, save_figure, slug

METHOD_COLOURS = {"magnitude": "#1f77b4", "movement": "#d62728", "soft_movement": "#2ca02c"}


@dataclass(frozen=True)
class PrunedCell:
    cell: Cell
    method: str  # the pruning stage's compressor
    sparsity: float  # zeros over weights in the encoder's Linears
    embedding_pruned: bool  # the word-embedding table was pruned too
    epochs: float | None  # the recovery that stage trained (None: not recorded)
    steps: int | None


def pruning_stage(record: Record) -> tuple[str, dict[str, Any], dict[str, Any] | None] | None:
    """(name, layout, recovery) of the record's stage that zeroed encoder Linear weights, or None."""
    info = record.compressor
    if info.stages:
        layouts = (info.layout or {}).get("stages") or []
        recoveries: dict[str, dict[str, Any] | None] = {}
        for name, recovery in info.stage_recoveries():
            recoveries.setdefault(name, recovery)  # the first stage of that name, as its layout is found
        stages = [(s.get("name", ""), s.get("layout") or {}, recoveries.get(s.get("name", ""))) for s in layouts]
    else:
        stages = [(info.name, info.layout or {}, info.recovery)]
    for name, layout, recovery in stages:
        if "encoder_linear" in (layout.get("sets") or {}):
            return name, layout, recovery
    return None


def pruned_cells(records: list[tuple[Record, str]], cells: list[Cell]) -> list[PrunedCell]:
    by_path = {c.record: c for c in cells}
    found = []
    for record, path in records:
        cell = by_path.get(path)  # successful cells only
        stage = pruning_stage(record) if cell is not None and cell.retention is not None else None
        if stage is None:
            continue
        name, layout, recovery = stage
        recovery = recovery or {}
        found.append(PrunedCell(cell, name, float(layout["sets"]["encoder_linear"]["sparsity"]),
                                "word_embeddings" in layout["sets"], recovery.get("epochs"), recovery.get("steps")))
    return sorted(found, key=lambda p: (p.cell.task, p.cell.model, p.cell.experiment, p.sparsity, p.method,
                                        p.cell.label, p.cell.machine))


def retention_text(c: Cell) -> str:
    """The cell's retention for a table, one decimal, with its paired interval where known."""
    if c.retention is None:
        return "n/a"
    interval = f" [{c.retention_ci_low:.1f}-{c.retention_ci_high:.1f}]" if c.retention_ci_low is not None else ""
    return f"{c.retention:.1f}{interval}"


def recovery_text(p: PrunedCell) -> str:
    """The recovery its pruning stage trained, for a table."""
    return "n/a" if p.epochs is None else f"{p.epochs:g} ep, {p.steps} steps"


def _row(p: PrunedCell) -> dict[str, Any]:
    c = p.cell
    size = f"{c.size_bytes / 1e6:.1f}" if c.size_bytes else "n/a"
    return {"encoder sparsity": f"{100 * p.sparsity:.1f}%", "method": p.method,
            "embedding table": "pruned too" if p.embedding_pruned else "not pruned",
            "recovery": recovery_text(p),
            "config": f"`{c.label}`", "score": f"{c.score:.2f}", "retention %": retention_text(c),
            "verdict": c.floor_verdict if c.at_floor else (c.retention_verdict or "n/a"),
            "size MB": size + (f" ({c.compression:.2f}x smaller)" if c.compression else ""),
            "machine": c.machine}


def _plot(members: list[PrunedCell], title: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    fig.subplots_adjust(left=0.08, right=0.72)  # the key sits right of the axes, clear of every point
    methods = sorted({p.method for p in members})
    spare = [m for m in methods if m not in METHOD_COLOURS]
    for method in methods:
        colour = METHOD_COLOURS.get(method) or OTHER_COLOURS[spare.index(method) % len(OTHER_COLOURS)]
        points = [p for p in members if p.method == method]
        for p in points:
            c = p.cell
            yerr = ([[c.retention - c.retention_ci_low], [c.retention_ci_high - c.retention]]
                    if c.retention_ci_low is not None else None)
            ax.errorbar(100 * p.sparsity, c.retention, yerr=yerr, fmt="s" if p.embedding_pruned else "o",
                        color=colour, ecolor=colour, markersize=6, capsize=2, elinewidth=0.7,
                        markerfacecolor="none" if c.at_floor else colour, label=method if p is points[0] else None)
            if p.epochs is not None:
                ax.annotate(f"{p.epochs:g} ep", (100 * p.sparsity, c.retention), xytext=(4, -3),
                            textcoords="offset points", fontsize=7, color=colour)
    ax.axhline(100, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel("zeros in the encoder's Linear weights (%)")
    ax.set_ylabel("retention (% of the baseline's score), paired 95% interval")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(x=0.08)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1),
              title="method (hollow: at the floor;\nsquare: embedding table pruned too)")
    save_figure(fig, path)
    plt.close(fig)


def sparsity_section(records: list[tuple[Record, str]], cells: list[Cell], out_dir: Path,
                     figures_dir: Path | None) -> list[str]:
    """The Markdown section (empty when no cell pruned weights); with ``figures_dir``, a plot per task."""
    found = pruned_cells(records, cells)
    if not found:
        return []
    lines = ["## Pruning: retention against sparsity", "",
             "Every cell that zeroed weights of the encoder's Linears, by the share of them that are zero in the saved",
             "model, with the recovery training of its pruning stage. Retention is a ratio of scores, so cells of one",
             "experiment measured on different machines share a table; the size is that cell's file.", ""]
    grouped: dict[tuple, list[PrunedCell]] = defaultdict(list)
    for p in found:
        grouped[(p.cell.task, p.cell.model, p.cell.experiment)].append(p)
    experiments = Counter((task, model) for task, model, _ in grouped)
    for (task, model, experiment), members in grouped.items():
        heading = f"### {task}, {model}" + (f", {experiment}" if experiments[(task, model)] > 1 else "")
        lines += [heading, "", pd.DataFrame([_row(p) for p in members]).to_markdown(index=False), ""]
        if figures_dir is not None and len({p.sparsity for p in members}) > 1:
            digest = experiment.rsplit("[", 1)[-1].rstrip("]")
            path = figures_dir / f"{slug(task)}-{slug(model)}-sparsity-{slug(digest)}.png"
            _plot(members, f"{task}, {model}: retention against sparsity", path)
            lines += [f"![{task}: retention against sparsity]({path.relative_to(out_dir).as_posix()})", ""]
    return lines
