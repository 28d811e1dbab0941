"""Reports generated from the records under ``results/``; never edited by hand.

``write_reports`` writes, per preset, ``reports/<preset>.md`` (the answer first, the baselines'
learning curves where a task has a dev set, the pruned cells by sparsity, the distilled cells
against their hard-label ablations, the cells recovered faster against the default, the shared layers started
from one of their group's layers against their average, then the per-cell tables)
and its plots under ``reports/<preset>/``, and ``reports/summary.csv`` with a
row per successful cell of every preset, and, when ``benchsuite optimise`` has written study files,
``reports/optimise.md`` with a plot per study (:mod:`benchsuite.report.optimise`). It reads records
and their saved predictions only (typed, upgraded from older schemas when read): no compressor or
plugin is imported, so a report renders records of compressors that are not installed here. Output depends only on
the records (no clock, sorted rows, seeded bootstrap, PNGs without timestamps), so
regenerating from the same ``results/`` gives identical files. A file that is not a readable
record is skipped with a warning naming it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from benchsuite.errors import UsageError
from benchsuite.fileio import write_text_atomic
from benchsuite.records import Record, read_record, record_files
from benchsuite.report.cells import COLUMNS, Cell, Predictions, build_cells

log = logging.getLogger("benchsuite.report")

SUMMARY = "summary.csv"


def load_records(results_dir: Path) -> list[tuple[Record, str]]:
    """Every readable record under ``results_dir`` with its path relative to it, sorted by path."""
    records = []
    for path in record_files(results_dir):
        try:
            record = read_record(path)
        except ValueError as exc:
            log.warning("skipping %s", exc)
            continue
        records.append((record, path.relative_to(results_dir).as_posix()))
    return records


def summary_csv(cells: list[Cell]) -> str:
    """The summary table: a header of :data:`COLUMNS`, then a row per cell; unmeasured figures are empty."""
    import pandas as pd  # noqa: PLC0415

    frame = pd.DataFrame([[getattr(c, name) for name in COLUMNS] for c in cells], columns=list(COLUMNS))
    return frame.to_csv(index=False, lineterminator="\n")


def write_reports(results_dir: Path, out_dir: Path, *, plots: bool = True) -> list[Path]:
    """Write every report; returns the Markdown files (one per preset, sorted), then the summary CSV, then
    the plots."""
    from benchsuite.report.markdown import render  # noqa: PLC0415
    from benchsuite.report.optimise import load_studies, write_optimise_report  # noqa: PLC0415
    from benchsuite.report.plots import write_plots  # noqa: PLC0415

    if not results_dir.is_dir():
        raise UsageError(f"results folder {results_dir} does not exist; run 'benchsuite run' first")
    by_preset: dict[str, list[tuple[Record, str]]] = defaultdict(list)
    for record, path in load_records(results_dir):
        by_preset[record.preset].append((record, path))
    markdown, figures_written, every_cell = [], [], []
    searched: dict[str, set[str]] = defaultdict(set)
    for study, _ in load_studies(results_dir):
        searched[study.key.preset].add(study.key.task)
    for preset, records in sorted(by_preset.items()):
        predictions = Predictions(results_dir)  # read once, for the cells and the ablation section
        cells = build_cells(records, results_dir, predictions=predictions)
        every_cell += cells
        figures = write_plots(cells, out_dir / preset) if plots else {}
        path = out_dir / f"{preset}.md"
        write_text_atomic(path, render(preset, records, cells, figures, out_dir,
                                       optimised=sorted(searched.get(preset, ())), draw=plots,
                                       predictions=predictions))
        markdown.append(path)
        figures_written += figures.values()
    summary = out_dir / SUMMARY
    write_text_atomic(summary, summary_csv(every_cell))
    optimised = write_optimise_report(results_dir, out_dir)
    return [*markdown, summary, *optimised[:1], *figures_written, *optimised[1:]]
