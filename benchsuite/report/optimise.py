"""The optimiser's report: ``reports/optimise.md`` and a plot per study under ``reports/optimise/``.

Per study (task, preset, machine, bound, objective): the runs and their budgets, the chosen pipeline
with its paired retention interval on the full evaluation split, the frontier of the measured
candidates (retention, speed and size), and every candidate tried with what became of it and the
seconds it took. Rendered from the study files and the records they point to only, deterministically,
so ``benchsuite report`` regenerates the same bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchsuite.fileio import write_text_atomic
from benchsuite.optimise.frontier import candidate_frontier
from benchsuite.optimise.study import SUFFIX, CandidateResult, Study, chosen, read_study
from benchsuite.report.cells import percent
from benchsuite.report.plots import pyplot, save_figure, slug

log = logging.getLogger("benchsuite.report")

REPORT = "optimise.md"
FOLDER = "optimise"


def load_studies(results_dir: Path) -> list[tuple[Study, str]]:
    """Every readable study file under ``results_dir``, with its path relative to it, sorted by path."""
    studies = []
    for path in sorted(results_dir.rglob(f"*{SUFFIX}")):
        try:
            studies.append((read_study(path), path.relative_to(results_dir).as_posix()))
        except ValueError as exc:
            log.warning("skipping %s", exc)
    return studies


def write_optimise_report(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write ``optimise.md`` and its plots when there are studies; returns the files written."""
    studies = load_studies(results_dir)
    if not studies:
        return []
    written, lines = [], [
        "# benchsuite optimise: the best pipeline for an accuracy bound", "",
        "Generated from the study files under `results/` (`*.study.json`, written by `benchsuite optimise`) and "
        "the records they name; do not edit by hand.", "",
        "Each study searched pipelines of the compressors that declare a `search_space` with Optuna's "
        "multi-objective TPE sampler (retention and the objective, the bound as a constraint). A candidate is first "
        "scored on a seeded slice of the evaluation split, after each pipeline stage and at the end; it is "
        "**stopped** when the upper end of its paired 95% bootstrap retention interval there is below the bound, "
        "otherwise it is scored on the full evaluation split and measured like any cell (**measured**; its record "
        "is linked). The **chosen** pipeline is the measured candidate with the best objective whose retention on "
        "the full split meets the bound (point estimate; its paired 95% interval is shown beside it). "
        "*speedup* is at batch 32 (median, interleaved with the baseline), *smaller* is the baseline's file size over "
        "the candidate's. Seconds are wall time: compress (training included, slice checks excluded), slice, "
        "score and measure, total.", ""]
    for study, path in studies:
        figure = out_dir / FOLDER / f"{slug(study.key.task)}-{study.key.objective}-{study.key.digest()}.png"
        measured = [c for c in study.candidates if c.status == "measured"]
        if measured or any(c.slice for c in study.candidates):
            written.append(study_plot(study, figure))
        lines += _section(study, path, figure if written and written[-1] == figure else None, out_dir)
    report = out_dir / REPORT
    write_text_atomic(report, "\n".join(lines).rstrip() + "\n")
    return [report, *written]


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _section(study: Study, path: str, figure: Path | None, out_dir: Path) -> list[str]:
    key = study.key
    threads = key.machine.get("torch_threads")
    lines = [f"## {key.task} ({key.preset}): keep {100 * key.min_retention:g}%, maximise {key.objective}", "",
             f"Machine: {key.machine.get('cpu')}, {threads} torch thread{'s' if threads != 1 else ''}, vector "
             f"extensions {', '.join(key.machine.get('cpu_vector_flags', [])) or 'none recorded'}. Study "
             f"`{path}`; slice {key.slice_examples} examples; at most {key.max_stages} stages; seed {key.seed}.", ""]
    lines += ["| run | started (UTC) | budget min | used min | stopped because | commit |", "|---|---|---|---|---|---|"]
    for number, run in enumerate(study.runs):
        commit = f"{(run.commit or '?')[:7]}{' (dirty)' if run.dirty else ''}"
        lines.append(f"| {number} | {run.started} | {run.budget_seconds / 60:.1f} | {run.seconds / 60:.1f} | "
                     f"{run.stopped_because} | {commit} |")
    lines.append("")
    left_out = {value: why for run in study.runs for value, why in run.left_out.items()}
    if left_out:
        lines += ["Declared values not searched on this machine: " + "; ".join(
            f"`{value}` ({why})" for value, why in sorted(left_out.items())) + ".", ""]
    best = chosen(study)
    if best is None:
        lines += [f"**Chosen: none.** No measured candidate keeps {100 * key.min_retention:g}% on the full "
                  f"evaluation split yet.", ""]
    else:
        retention = percent(best.retention, best.retention_ci_low, best.retention_ci_high)
        lines += [f"**Chosen: `{best.spec}`**: retention {retention} (paired 95% interval), speedup "
                  f"{_ratio(best.speedup)} at batch 32, {_ratio(best.compression)} smaller; record `{best.record}`.",
                  ""]
        if best.retention_ci_low is not None and best.retention_ci_low < 100 * key.min_retention:
            lines += [f"Its interval reaches below {100 * key.min_retention:g}%: the bound is met by the point "
                      f"estimate, not beyond noise.", ""]
    if figure is not None:
        lines += [f"![{key.task}: candidates]({figure.relative_to(out_dir).as_posix()})", ""]
    front = candidate_frontier(study.candidates)
    if front:
        lines += ["Frontier (no other measured candidate keeps more, runs faster and is smaller at once):", "",
                  "| candidate | retention [paired 95%] | speedup b32 | smaller | meets bound |",
                  "|---|---|---|---|---|"]
        for c in sorted(front, key=lambda c: -(c.retention or 0)):
            lines.append(f"| `{c.spec}` | {percent(c.retention, c.retention_ci_low, c.retention_ci_high)} | "
                         f"{_ratio(c.speedup)} | {_ratio(c.compression)} | {'yes' if c.meets_bound else 'no'} |")
        lines.append("")
    lines += ["Every candidate tried:", "",
              "| # | run | candidate | outcome | slice retention | retention [paired 95%] | speedup b32 | smaller | "
              "compress s | slice s | score+measure s | total s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in study.candidates:
        lines.append(f"| {c.number} | {c.run} | `{c.spec}` | {_outcome(c)} | {_slice(c)} | "
                     f"{percent(c.retention, c.retention_ci_low, c.retention_ci_high)} | {_ratio(c.speedup)} | "
                     f"{_ratio(c.compression)} | " + " | ".join(_seconds(c, k) for k in
                                                              ("compress", "slice", "score_and_measure", "total"))
                     + " |")
    total = sum(c.seconds.get("total", 0.0) for c in study.candidates)
    lines += ["", f"{len(study.candidates)} candidates, {total / 60:.1f} min of candidate time in all.", ""]
    return lines


def _outcome(c: CandidateResult) -> str:
    text = c.status + (" (record reused)" if c.reused_record else "")
    if c.status != "measured" and c.reason:
        text += ": " + c.reason.replace("|", "\\|")[:140]
    return text


def _slice(c: CandidateResult) -> str:
    if c.slice is None:
        return "-"
    return percent(c.slice.retention, c.slice.ci_low, c.slice.ci_high)


def _seconds(c: CandidateResult, key: str) -> str:
    return f"{c.seconds[key]:.0f}" if key in c.seconds else "-"


def study_plot(study: Study, path: Path) -> Path:
    """Retention against speedup and against compression for the measured candidates; stopped ones at their
    slice retention (grey crosses, no x figure: they sit at the left edge); the bound and the frontier drawn."""
    plt = pyplot()
    key = study.key
    bound = 100 * key.min_retention
    best = chosen(study)
    front = {c.spec for c in candidate_frontier(study.candidates)}
    measured = list({c.spec: c for c in study.candidates if c.status == "measured" and c.retention is not None}
                    .values())
    stopped = [c for c in study.candidates if c.status == "stopped" and c.slice and c.slice.retention is not None]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, attribute, xlabel in ((axes[0], "speedup", "speedup at batch 32 over the baseline"),
                                  (axes[1], "compression", "baseline file size / candidate file size")):
        points = [(getattr(c, attribute), c) for c in measured if getattr(c, attribute) is not None]
        for x, c in points:
            on_front = c.spec in front
            yerr = ([[c.retention - c.retention_ci_low], [c.retention_ci_high - c.retention]]
                    if c.retention_ci_low is not None else None)
            ax.errorbar(x, c.retention, yerr=yerr, fmt="o", markersize=6 if on_front else 4,
                        color="#1f77b4" if on_front else "#9ecae1", ecolor="#c6dbef", elinewidth=0.7, capsize=2,
                        zorder=3)
            ax.annotate(str(c.number), (x, c.retention), xytext=(3, 3), textcoords="offset points", fontsize=7)
            if best is not None and c.spec == best.spec:
                ax.scatter([x], [c.retention], s=220, facecolors="none", edgecolors="#d62728", linewidths=1.5,
                           zorder=4, label="chosen")
        if stopped:
            left = min([x for x, _ in points] + [1.0])
            ax.scatter([left] * len(stopped), [c.slice.retention for c in stopped], marker="x", color="#999999",
                       zorder=2, label="stopped on the slice (slice retention)")
        ax.axhline(bound, color="#d62728", linestyle="--", linewidth=0.8, label=f"bound {bound:g}%")
        ax.axvline(1, color="#000000", linewidth=0.6)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("retention of the baseline's score (%, bars: paired 95% interval)")
        ax.grid(True, linewidth=0.3, alpha=0.5)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            unique = dict(zip(labels, handles, strict=True))
            ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=7)
    threads = key.machine.get("torch_threads")
    fig.suptitle(f"optimise {key.task} ({key.preset}): keep {bound:g}%, maximise {key.objective}; "
                 f"{key.machine.get('cpu')}, {threads} thread{'s' if threads != 1 else ''} "
                 f"(numbers: candidates as listed in optimise.md; dark: frontier)")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out = save_figure(fig, path)
    plt.close(fig)
    return out
