"""Learning curves: the dev scores a baseline's training, and a compressor's recovery, recorded every half epoch.

A task whose spec holds a dev part out of training and evaluation (``train_from_eval.dev_fraction``)
scores it during the baseline's fine-tuning (:func:`benchsuite.runner.fine_tuned_baseline`); the
record keeps the rows under ``baseline.training.curve``. Each fine-tuning appears once (records of
other machines that reused the cached model carry the same curve), as a table and a PNG of the
primary metric against the training windows seen. A compressor's recovery training scores the same dev
rows (``compressor.recovery.curve``, or each pipeline stage's under ``compressor.recovery.stages``): its rows
follow, each against the end of its teacher's curve, with a plot per teacher. Rendered from records only.
"""

from __future__ import annotations

from pathlib import Path

from benchsuite.records import Record
from benchsuite.report.cells import record_label
from benchsuite.report.plots import pyplot, save_figure, slug


def trained_with_curves(records: list[Record]) -> list[Record]:
    """One baseline record per fine-tuning that recorded a curve (the first by path order), by task."""
    seen: dict[str, Record] = {}
    for record in records:
        if (record.status == "ok" and record.compressor.name == "baseline" and record.baseline.training.get("curve")
                and record.baseline.cache_key not in seen):
            seen[record.baseline.cache_key] = record
    return sorted(seen.values(), key=lambda r: (r.task.name, -r.task.version, r.baseline.cache_key))


def curve_section(records: list[Record], out_dir: Path, figures_dir: Path | None) -> list[str]:
    """The Markdown section (empty when no baseline recorded a curve); with ``figures_dir``, a plot per curve."""
    trained = trained_with_curves(records)
    if not trained:
        return []
    lines = ["## Baseline learning curves", "",
             "Dev scores during the baseline's fine-tuning, every half epoch and at the end. The dev rows are held",
             "out of training and evaluation (whole groups, listed below), so choosing epochs by them does not touch",
             "the evaluated rows. The learning rate decays linearly over the whole run, so a mid-run point is that",
             "run's checkpoint, not a shorter run's result.", ""]
    for record in trained:
        lines += _one(record, out_dir, figures_dir)
    return lines + _recovery_section(records, trained, out_dir, figures_dir)


def recovery_curves(record: Record) -> list[tuple[str, dict]]:
    """(label, recovery) for each recovery of ``record`` that scored the dev rows: the compressor's own, or each
    pipeline stage's (``soft_movement+embedding_int8`` trains in its first stage), labelled with its stage."""
    label, staged = record_label(record), record.compressor.stages is not None
    return [(f"{label}, stage {name}" if staged else label, recovery)
            for name, recovery in record.compressor.stage_recoveries() if (recovery or {}).get("curve")]


def recovered_with_curves(records: list[Record]) -> dict[str, list[tuple[str, dict]]]:
    """By teacher (the baseline's cache key): the :func:`recovery_curves` of one record per compressor, config and
    seed that recorded any (the first by path order), in order of the records' labels, each recovery once."""
    found: dict[tuple, tuple[Record, list[tuple[str, dict, bool]]]] = {}
    for record in records:
        curves = recovery_curves(record) if record.status == "ok" and record.compressor.name != "baseline" else []
        if curves:
            found.setdefault((record.baseline.cache_key, record.compressor.name, record.compressor.config_hash,
                              record.cell.seed),  # one config class may serve two names (fp16, bf16)
                             (record, [(label, recovery, reused) for (label, recovery), reused
                                       in zip(curves, _reused(record), strict=True)]))
    def order(item: tuple[tuple, tuple[Record, list]]) -> tuple:
        (teacher, *_, seed), (record, _) = item
        return teacher, record_label(record), seed

    by_teacher: dict[str, list[tuple[str, dict, bool]]] = {}
    for (teacher, *_), (_, curves) in sorted(found.items(), key=order):
        by_teacher.setdefault(teacher, []).extend(curves)
    return {teacher: _once(curves) for teacher, curves in by_teacher.items()}


def _reused(record: Record) -> list[bool]:
    """For each of :func:`recovery_curves`'s entries: whether the record took that stage from the stage cache
    (another pipeline trained it) rather than training it itself."""
    if record.compressor.stages is None:
        return [False]  # one compressor: at most one curve, trained by its own run
    stages = (record.compressor.recovery or {}).get("stages") or []
    return [bool(stage.get("reused_from_cache")) for stage in stages if (stage.get("recovery") or {}).get("curve")]


def _once(curves: list[tuple[str, dict, bool]]) -> list[tuple[str, dict]]:
    """Each recovery once: pipelines that reused a cached stage (``a+b`` and ``a+c`` share ``a``'s training)
    carry the same recovery. It is labelled with the pipeline that trained it (where the records say which;
    else the first) and says how many others reused it."""
    kept: list[tuple[str, dict, bool, int]] = []
    for label, recovery, reused in curves:
        same = next((i for i, (_, seen, _, _) in enumerate(kept) if seen == recovery), None)
        if same is None:
            kept.append((label, recovery, reused, 0))
        else:
            kept_label, seen, kept_reused, others = kept[same]
            if kept_reused and not reused:  # this record trained the stage: it names the curve
                kept_label, kept_reused = label, False
            kept[same] = (kept_label, seen, kept_reused, others + 1)
    return [(label if not others else f"{label} (also in {others} other pipeline{'s' * (others > 1)})", recovery)
            for label, recovery, _, others in kept]


def _recovery_section(records: list[Record], trained: list[Record], out_dir: Path,
                      figures_dir: Path | None) -> list[str]:
    teachers = {r.baseline.cache_key: r for r in trained}
    recovered = {k: v for k, v in recovered_with_curves(records).items() if k in teachers}
    if not recovered:
        return []
    lines = ["## Recovery learning curves", "",
             "Dev scores during a compressor's recovery training (distillation, pruning, sharing), on the same",
             "held-out dev rows as its teacher's curve above, every half epoch of the recovery and at its end. The",
             "last column is the dev score over the teacher's at the end of the teacher's training: where a curve",
             "still rises at its end, more recovery would help; where it is flat, the method or the data stops it.",
             "\"(kept)\" marks the checkpoint a `keep_best` recovery ended with (best dev score): the one scored.", ""]
    for key, students in recovered.items():
        teacher = teachers[key]
        metric = teacher.task.primary_metric
        final = teacher.baseline.training["curve"][-1]["dev_scores"][metric]
        lines += [f"### {teacher.task.name}, teacher `{key}` (dev {metric} {final:.2f} at the end of its training)",
                  "", f"| cell | epochs | windows seen | train loss (last 50 steps) | dev {metric} "
                      "| of the teacher's |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, recovery in students:
            for row in recovery["curve"]:
                score, mark = row["dev_scores"][metric], " (kept)" if row["step"] == recovery.get("kept_step") else ""
                lines.append(f"| `{name}` | {row['epochs']:g}{mark} | {row['seen']:,} | {row['train_loss']:.3f} | "
                             f"{score:.2f} | {100 * score / final:.1f}% |")
        lines.append("")
        if figures_dir is not None:
            path = figures_dir / f"{slug(teacher.task.name)}-recovery-curves-{key[:8]}.png"
            _plot_recovery(teacher, students, path)
            lines += [f"![{teacher.task.name} recovery curves]({path.relative_to(out_dir).as_posix()})", ""]
    return lines


def _one(record: Record, out_dir: Path, figures_dir: Path | None) -> list[str]:
    training, metric = record.baseline.training, record.task.primary_metric
    train, dev = record.data.train, record.data.dev
    hp = record.baseline.hyper_parameters
    curve = training["curve"]
    held = train.held_apart
    pool = (f"; the pool's {held.rows:,} rows of {held.split} are {len(held.groups)} whole {held.group_by} groups"
            if held is not None and held.groups else "")
    source = (f"{train.rows_used:,} of {train.rows_available:,} rows of {train.split}{pool} "
              f"({training['train_features']:,} training windows)")
    dev_text = "no dev rows recorded"
    if dev is not None:
        groups = ", ".join(dev.held_apart.groups) if dev.held_apart and dev.held_apart.groups else "rows"
        dev_text = f"{dev.rows_used:,} rows of {dev.split} ({groups})"
    lines = [f"### {record.task.name} (task v{record.task.version}), baseline `{record.baseline.cache_key}`", "",
             f"Trained on {source}; lr {hp['learning_rate']:g}, batch {hp['batch_size']}, {hp['epochs']:g} epochs, "
             f"seed {record.cell.seed}; {training['seconds'] / 60:.0f} min of training (dev scoring excluded). "
             f"Dev: {dev_text}. Evaluated on {record.data.eval.rows_used:,} other rows: {metric} "
             f"{record.primary_score:.2f}.", "",
             "| epochs | windows seen | train loss (last 50 steps) | " +
             " | ".join(f"dev {k}" for k in sorted(curve[0]["dev_scores"])) + " |",
             "|---:|---:|---:|" + "---:|" * len(curve[0]["dev_scores"])]
    for row in curve:
        lines.append(f"| {row['epochs']:g} | {row['seen']:,} | {row['train_loss']:.3f} | " +
                     " | ".join(f"{row['dev_scores'][k]:.2f}" for k in sorted(row["dev_scores"])) + " |")
    if figures_dir is None:
        return [*lines, ""]
    path = figures_dir / f"{slug(record.task.name)}-learning-curve-{record.baseline.cache_key[:8]}.png"
    _plot(record, path)
    return [*lines, "", f"![{record.task.name} learning curve]({path.relative_to(out_dir).as_posix()})", ""]


def _plot(record: Record, path: Path) -> Path:
    plt = pyplot()
    curve, metric = record.baseline.training["curve"], record.task.primary_metric
    fig, ax = plt.subplots(figsize=(7, 4))
    seen = [row["seen"] for row in curve]
    for name in sorted(curve[0]["dev_scores"]):
        ax.plot(seen, [row["dev_scores"][name] for row in curve], marker="o", label=f"dev {name}")
    for row in curve:
        ax.annotate(f"{row['epochs']:g} ep", (row["seen"], row["dev_scores"][metric]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    ax.axhline(record.primary_score, color="#000000", linewidth=0.8, linestyle="--",
               label=f"final {metric} on the evaluated rows")
    ax.set_xlabel("training windows seen")
    ax.set_ylabel("score (0-100)")
    ax.set_title(f"{record.task.name} baseline learning curve ({record.model.name.split('/')[-1]}, "
                 f"{record.data.train.rows_used:,} training rows)")
    return _finish(plt, fig, ax, path, legend_size=7)


def _plot_recovery(teacher: Record, students: list[tuple[str, dict]], path: Path) -> Path:
    plt = pyplot()
    metric = teacher.task.primary_metric
    fig, ax = plt.subplots(figsize=(8, 4.5))
    curve = teacher.baseline.training["curve"]
    ax.plot([row["epochs"] for row in curve], [row["dev_scores"][metric] for row in curve], marker="o",
            color="#000000", linewidth=1.6, label="teacher (baseline fine-tuning)")
    for name, recovery in students:
        rows = recovery["curve"]
        ax.plot([row["epochs"] for row in rows], [row["dev_scores"][metric] for row in rows], marker=".",
                linewidth=1.0, label=name[:70])
    ax.set_xlabel("epochs of training")
    ax.set_ylabel(f"dev {metric} (0-100)")
    ax.set_title(f"{teacher.task.name}: recovery against its teacher ({teacher.model.name.split('/')[-1]})")
    return _finish(plt, fig, ax, path, legend_size=6)


def _finish(plt, fig, ax, path: Path, *, legend_size: int) -> Path:
    """Grid, legend, save and close: the end every curve plot shares."""
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(loc="lower right", fontsize=legend_size)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
