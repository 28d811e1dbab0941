"""The Markdown report of one preset: the answer first, then the per-cell tables.

Top: for each task and machine, the frontier (cells no other cell beats on retention, speed and
size at once) and each family's best configuration, with their verdicts and plots; then the learning
curves, the pruned cells of each task by the sparsity they reached, each distilled cell against its
hard-label ablation, each cell recovered faster (bf16, attention dropout) against the default, and each
sharing cell started from one of its group's layers against the same started from their average. Then, per
task and machine, two tables that fit on a screen: scores (with bootstrap intervals and the
paired retention interval) and size, memory and speed. It renders from records and
:class:`~benchsuite.report.cells.Cell` rows only; no compressor or plugin is imported.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from benchsuite.records import Record
from benchsuite.report import bootstrap
from benchsuite.report.ablation import ablation_section
from benchsuite.report.anchors import method_anchors, task_anchor
from benchsuite.report.cells import Cell, Predictions
from benchsuite.report.curves import curve_section
from benchsuite.report.faster import faster_section
from benchsuite.report.frontier import KEEP, best_of_families, frontier, groups, held_by_noise
from benchsuite.report.layer_start import start_section
from benchsuite.report.movement import movement_section
from benchsuite.report.sparsity import sparsity_section

DEFINITIONS = f"""\
Scores are on a 0-100 scale, for the task's primary metric unless a column names another.
*Retention* is a cell's score over the baseline score of the same model, task, data, seed and machine.
*[low-high]* after a score is its {bootstrap.METHOD}. *Retention verdict*: **loss** when the whole paired
interval is below 100%, **gain** when above, **within noise** otherwise. The *floor* is the best score of a
predictor that ignores its input (the one label, or for NER the one tag, that scores highest on the same evaluation
examples); a cell is **at the floor** when the paired 95% interval of its score minus the floor reaches 0, and such a
cell takes no part in a frontier whatever its retention (on mrpc the floor is 81 F1, above 90% of a baseline's).
*params* counts weights (distinct storages once, shared weights once; quantised weights count one per element
whatever their bits); *size MB* is the file the compressor saves (safetensors for float models), *gzip MB*
that file gzip-compressed, *smaller* the baseline's file size over this one; *peak RSS MB* is the peak resident
memory (MiB) of a fresh process that loads that file and runs the evaluation inputs. *samples/s* is throughput
at batch 32 on real evaluation batches; *speedup b32* is baseline time over this model's time at batch 32 and
*speedup b1* the same at batch 1, each measured interleaved in one process, median [interquartile range];
*latency p50 ms* is at batch 1; *% of peak* is the achieved (FL)OP/s at batch 32 over the best matmul peak
any record of this machine measured for the arithmetic the model runs (fp32, bf16, fp16 or int8; an int8
model's attention stays fp32). *Speed verdict*: faster/slower only when the whole IQR clears 1 +- 0.05, and
*noisy: re-measure* when the timings show the machine was busy. *FLOPs* is the counted operations of the
batch-32 pass over the baseline's. Speed and memory are compared only within one machine (CPU model, vector
extensions, threads). Each record's `method` fields say exactly how its figures were measured."""


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_ci(value: float | None, low: float | None, high: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]" if low is not None else f"{value:.{digits}f}"


def _speed(cell: Cell) -> str:
    if cell.speedup is None:
        return "n/a"
    return f"{cell.speedup:.2f}x [{cell.speedup_q25:.2f}-{cell.speedup_q75:.2f}]"


def _size(cell: Cell) -> str:
    if not cell.size_bytes:
        return "n/a"
    smaller = f", {cell.compression:.2f}x smaller" if cell.compression is not None and cell.compression != 1 else ""
    return f"{cell.size_bytes / 1e6:.1f}{smaller}"


def _count(compressed: int) -> str:
    return f"{compressed} compressed cell{'' if compressed == 1 else 's'}"


def _verdict(cell: Cell) -> str:
    """The retention verdict; a cell no better than the floor says that first."""
    verdict = cell.retention_verdict or "n/a"
    return f"**at the floor**; {verdict}" if cell.at_floor else verdict


def _floor_line(base: Cell) -> str:
    if base.floor_score is None:
        return ""
    share = f" ({100 * base.floor_score / base.score:.1f}% of the baseline's)" if base.score else ""
    return f" A predictor that ignores its input scores {base.floor_score:.2f}{share}."


def _answer_row(cell: Cell) -> dict[str, Any]:
    return {"config": f"`{cell.label}`", "family": cell.family,
            "score": _with_ci(cell.score, cell.score_ci_low, cell.score_ci_high),
            "retention %": _with_ci(cell.retention, cell.retention_ci_low, cell.retention_ci_high),
            "accuracy verdict": _verdict(cell),
            "speedup b32": _speed(cell), "speed verdict": cell.speed_verdict or "n/a", "size MB": _size(cell)}


def _noise_notes(front: list[Cell], members: list[Cell]) -> list[str]:
    """A line for each frontier cell whose place rests on a speed difference inside the noise."""
    lines = []
    for cell in front:
        others = held_by_noise(cell, members)
        if others:
            names = ", ".join(f"`{o.label}` ({_speed(o)})" for o in others)
            lines.append(f"- `{cell.label}` ({_speed(cell)}) is on the frontier only by its speed, and that lead is "
                         f"inside the noise (the interquartile ranges overlap): {names} "
                         + ("keeps at least as much and is no larger." if len(others) == 1
                            else "keep at least as much and are no larger."))
    return [*lines, ""] if lines else []


def _table(rows: list[dict[str, Any]]) -> str:
    return pd.DataFrame(rows).to_markdown(index=False)


def answer_first(cells: list[Cell], plots: dict[tuple, Path], out_dir: Path) -> list[str]:
    lines = ["## Which compressed model to ship", "",
             "For each task and machine: the **frontier**, the cells that no other cell beats on retention, batch-32",
             "speedup and size on disk at once; then **each family's best**, its fastest configuration that keeps",
             f"at least {KEEP:g}% of the baseline (or whose loss is within noise), or its highest retention when none",
             "does. Verdicts and intervals are defined under *Definitions* below.", ""]
    grouped = groups(cells)
    experiments = Counter((task, model, machine) for _, task, model, machine, _ in grouped)
    for (_, task, model, machine, experiment), members in grouped.items():
        base = next((c for c in members if c.is_baseline), None)
        several = experiments[(task, model, machine)] > 1  # then the heading names the experiment, to tell them apart
        lines += [f"### {task}: {machine}" + (f", {experiment}" if several else ""), "",
                  f"Experiment: {experiment}.", ""]
        if base is None:
            lines += ["No baseline on this machine: retention, compression and speedup are not defined.", ""]
            continue
        size = f"{base.size_bytes / 1e6:.1f} MB" if base.size_bytes else "size not measured"
        lines += [f"Baseline ({model}): {base.metric} {_with_ci(base.score, base.score_ci_low, base.score_ci_high)}, "
                  f"{size}, {_num(base.samples_per_s, 1)} samples/s at batch 32; {_count(len(members) - 1)}. "
                  f"Published: {task_anchor(task)}.{_floor_line(base)}", ""]
        front = [c for c in frontier(members) if not c.is_baseline]
        if front:
            lines += ["Frontier:", "", _table([_answer_row(c) for c in front]), ""]
            lines += _noise_notes(front, members)
        best = best_of_families(members)
        if best:
            lines += ["Best of each family:", "", _table([_answer_row(c) for c in best.values()]), ""]
        plot = plots.get((task, model, machine, experiment))
        if plot:
            lines += [f"![{task} on {machine}]({plot.relative_to(out_dir).as_posix()})", ""]
    overviews = [(k, p) for k, p in sorted(plots.items()) if k[0] == "overview"]
    for (_, model, machine), path in overviews:
        lines += [f"All tasks, {model} on {machine}:", "", f"![overview]({path.relative_to(out_dir).as_posix()})", ""]
    return lines


def render(preset: str, records: list[tuple[Record, str]], cells: list[Cell], plots: dict[tuple, Path],
           out_dir: Path, *, optimised: list[str] = (), draw: bool = True,
           predictions: Predictions | None = None) -> str:
    """``optimised``: the tasks of this preset that ``benchsuite optimise`` searched (linked to its report);
    ``draw``: write the learning curves' plots (the other plots come in ``plots``); ``predictions``: the cells'
    statistics, for the paired intervals of the ablation section (without them, no such section)."""
    lines = [f"# benchsuite results: preset `{preset}`", "",
             "Generated by `benchsuite report` from the records under `results/`; do not edit by hand.",
             "Every row is also in `summary.csv`.", ""]
    if optimised:
        lines += [f"`benchsuite optimise` searched pipelines for {', '.join(optimised)}: its choices, frontiers and "
                  f"every candidate it tried are in [optimise.md](optimise.md); the candidates it measured are "
                  f"cells here too.", ""]
    lines += answer_first(cells, plots, out_dir)
    lines += curve_section([r for r, _ in records], out_dir, out_dir / preset if draw else None)
    lines += sparsity_section(records, cells, out_dir, out_dir / preset if draw else None)
    if predictions is not None:
        lines += movement_section(records, cells, predictions)
        lines += ablation_section(records, cells, predictions)
        lines += faster_section(records, cells, predictions)
        lines += start_section(records, cells, predictions)
    lines += ["## Definitions", "", DEFINITIONS, ""]
    anchors = method_anchors({c.family for c in cells})
    if anchors:
        lines += ["Published references for the methods below:", "", *[f"- {a}" for a in anchors], ""]
    by_key = {c.key: c for c in cells}
    ok_by_task: dict[str, list[Record]] = defaultdict(list)
    for record, _ in records:
        if record.status == "ok":
            ok_by_task[record.task.name].append(record)
    machines: dict[str, list[Record]] = defaultdict(list)
    for record in (r for rs in ok_by_task.values() for r in rs):
        machines[record.cell.machine.label()].append(record)
    peaks = {label: best_peaks(rs) for label, rs in machines.items()}
    for task in sorted({r.task.name for r, _ in records}):
        lines += _task_section(task, ok_by_task.get(task, []), by_key, peaks)
    failed = sorted(((r, p) for r, p in records if r.status != "ok"), key=lambda x: x[1])
    if failed:
        lines += ["## Failed cells", "", "| task | model | compressor | error | record |", "|---|---|---|---|---|"]
        for r, path in failed:
            message = (f"{r.error.type}: {r.error.message}" if r.error else "?").replace("|", "\\|")[:160]
            lines.append(f"| {r.task.name} | {r.model.name} | {r.compressor.name} | {message} | `{path}` |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _machine_line(records: list[Record], best: dict[str, float]) -> str:
    """Where a table's figures were measured: CPU, threads, torch, and the matmul peaks its % of peak uses."""
    r = records[0]
    torch_versions = sorted({x.provenance.packages.get("torch") or "?" for x in records})
    peak_text = ""
    if best:
        rates = ", ".join(f"{kind} {_rate(best[kind])}" for kind in PEAK_FIELDS if kind in best)
        peak_text = (f"; % of peak is held against the best matmul peak any record of this machine measured "
                     f"({rates} G(FL)OP/s), not each record's own, which a busy core may have lowered")
    return (f"Measured on {r.cell.machine.label()} ({r.provenance.machine.logical_cpus} logical CPUs, "
            f"torch {', '.join(torch_versions)}){peak_text}.")


# The matmul peak of each compute type, as the records' ``efficiency.matmul_peak`` names it.
PEAK_FIELDS = {"fp32": "fp32_gflops", "bf16": "bf16_gflops", "fp16": "fp16_gflops", "int8": "int8_gops"}


def best_peaks(records: list[Record]) -> dict[str, float]:
    """The highest matmul peak of each compute type in these records (pass one machine's). A peak is a best case:
    one taken while other work shared the cores reads low, so the highest measured is the truest."""
    best: dict[str, float] = {}
    for record in records:
        efficiency = record.measurements.efficiency or {}
        measured = {kind: (efficiency.get("matmul_peak") or {}).get(field) for kind, field in PEAK_FIELDS.items()}
        own = efficiency.get("peak_kind", "fp32")
        if efficiency.get("fraction_of_peak") is not None:  # its own peak was of its kind (schema 1 kept only it)
            measured[own] = measured.get(own) or efficiency.get("peak_gflops")
        for kind, value in measured.items():
            if value:
                best[kind] = max(best.get(kind, 0.0), float(value))
    return best


def fraction_of_peak(efficiency: dict[str, Any], best: dict[str, float]) -> float | None:
    """Achieved (FL)OP/s over the machine's best peak for the arithmetic the model runs; None where either is
    missing, and where it would exceed 1 (a figure that cannot be true is not shown)."""
    achieved, kind = efficiency.get("achieved_gflops"), efficiency.get("peak_kind", "fp32")
    if not achieved or not best.get(kind):
        return None
    fraction = achieved / best[kind]
    return fraction if fraction <= 1 else None


def _rate(gflops: float) -> str:
    """Whole numbers from 10 up; below that two significant digits (a half-precision peak on AVX2 is ~0.6)."""
    return f"{gflops:.0f}" if gflops >= 10 else f"{gflops:.2g}"


def _task_section(task: str, ok: list[Record], by_key: dict[str, Cell],
                  peaks: dict[str, dict[str, float]]) -> list[str]:
    """``peaks``: each machine's best matmul peaks (:func:`best_peaks`), by machine label."""
    if not ok:
        return [f"## {task}", "", "No successful cells.", ""]
    lines = [f"## {task}", "", f"Primary metric: **{ok[0].task.primary_metric}**. Published reference: "
                               f"{task_anchor(task)}.", ""]
    by_machine: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in ok:
        by_machine[(r.cell.machine.label(), by_key[r.key].experiment)].append(r)
    several = {label for label, _ in by_machine if sum(m == label for m, _ in by_machine) > 1}
    for label, experiment in sorted(by_machine, key=lambda k: (k[0], -by_machine[k][0].task.version, k[1])):
        records = sorted(by_machine[(label, experiment)], key=lambda r: (r.model.name, r.compressor.name != "baseline",
                                                                         by_key[r.key].label, r.key))
        title = f"{task}: {label}" + (f", {experiment}" if label in several else "")
        lines += [f"### {title}", "", _machine_line(records, peaks[label]), "", "Scores:", "",
                  _table([_score_row(r, by_key[r.key]) for r in records]), "", "Size, memory and speed:", "",
                  _table([_measure_row(r, by_key[r.key], _baseline_flops(r, records), peaks[label])
                          for r in records]), ""]
    notes = sorted({n for r in ok for n in r.notes})
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    return lines


def _baseline_flops(record: Record, records: list[Record]) -> float | None:
    base = next((r for r in records if r.compressor.name == "baseline" and r.model.name == record.model.name
                 and r.cell.seed == record.cell.seed), None)
    return (base.measurements.efficiency or {}).get("flops_per_throughput_pass") if base else None


def _name(record: Record, cell: Cell) -> str:
    return f"{cell.label} `{record.key[:8]}`"


def _score_row(record: Record, cell: Cell) -> dict[str, Any]:
    training = record.baseline.training
    return {
        "model": cell.model, "cell": _name(record, cell),
        **{k: _num(v) for k, v in sorted(record.scores.items())},
        f"{cell.metric} 95% CI": (f"{cell.score_ci_low:.2f}-{cell.score_ci_high:.2f}"
                                  if cell.score_ci_low is not None else "n/a"),
        "retention %": _with_ci(cell.retention, cell.retention_ci_low, cell.retention_ci_high),
        "verdict": _verdict(cell),
        "train rows x epochs": f"{record.data.train.rows_used:,} x {training['epochs']:g}",
        "eval rows": f"{record.data.eval.rows_used:,}", "seed": cell.seed,
    }


def _measure_row(record: Record, cell: Cell, base_flops: float | None, best: dict[str, float]) -> dict[str, Any]:
    m = record.measurements
    efficiency = m.efficiency or {}
    flops, fraction = efficiency.get("flops_per_throughput_pass"), fraction_of_peak(efficiency, best)
    return {
        "cell": _name(record, cell),
        "params": f"{cell.params / 1e6:.2f}M" if cell.params else "n/a",
        "nonzero": f"{cell.params_nonzero / 1e6:.2f}M" if cell.params_nonzero else "n/a",
        "size MB": f"{cell.size_bytes / 1e6:.1f}" if cell.size_bytes else "n/a",
        "gzip MB": f"{cell.gzip_bytes / 1e6:.1f}" if cell.gzip_bytes else "n/a",
        "smaller": f"{cell.compression:.2f}x" if cell.compression else "n/a",
        "peak RSS MB": _num(cell.peak_rss_mb, 0),
        "samples/s": _num(cell.samples_per_s, 1),
        "speedup b32": _speed(cell),
        "speedup b1": f"{cell.speedup_b1:.2f}x" if cell.speedup_b1 is not None else "n/a",
        "latency p50 ms": _num(cell.latency_p50_ms, 1),
        "% of peak": f"{100 * fraction:.0f} ({efficiency.get('peak_kind', 'fp32')})" if fraction is not None else "n/a",
        "FLOPs": f"{flops / base_flops:.2f}x" if flops and base_flops else "n/a",
        "verdict": cell.speed_verdict or "n/a",
    }
