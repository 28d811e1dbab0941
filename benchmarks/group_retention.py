"""Is a gap between a cell's dev curve and its evaluation what the dev set's few groups predict?

    python benchmarks/group_retention.py BASELINE.json MODEL.json [--draws 10000] [--out FILE]

A task whose dev set is whole groups of the eval split (SQuAD: two articles, grouped by ``title``) scores
its recovery curve on those groups and its final figure on the evaluated rows, which are other groups. Two
records of one experiment (the baseline and a compressed cell, same eval rows) are read with their saved
predictions; each evaluated question is scored with the metric's own per-question F1, and the retention
(model F1 over baseline F1) is given per group. Then as many groups as the dev set holds are drawn at
random from the evaluated ones, ``--draws`` times (seed 0), and the spread of their retention is reported:
a dev retention inside that spread is what choosing so few groups gives, not a sign the two disagree.
Nothing is run: the figures come from the records. Writes ``benchmarks/results/group_retention.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchsuite.fileio import write_text_atomic
from benchsuite.metrics.squad_text import _token_f1
from benchsuite.records import Record, _git, read_record
from benchsuite.report.cells import baseline_key

ROOT = Path(__file__).resolve().parents[1]


def question_f1(path: Path, record: Record) -> pd.Series:
    """Per-question F1 (0-100, best over the gold answers) from the record's predictions file, by id."""
    rows = [json.loads(line) for line in (path.parent / record.predictions_file).read_text().splitlines()]
    return pd.Series({r["id"]: 100 * max(_token_f1(r["prediction"], g) for g in r["gold"]) for r in rows})


def _frame(baseline: pd.Series, model: pd.Series, groups: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"baseline": baseline, "model": model.reindex(baseline.index), "group": groups})


def group_table(baseline: pd.Series, model: pd.Series, groups: pd.Series) -> pd.DataFrame:
    """Questions, baseline F1, model F1 and retention (%) per group, lowest retention first."""
    table = _frame(baseline, model, groups).groupby("group").agg(
        questions=("baseline", "size"), baseline=("baseline", "mean"), model=("model", "mean"))
    table["retention"] = 100 * table["model"] / table["baseline"]
    return table.sort_values("retention")


def drawn_retention(baseline: pd.Series, model: pd.Series, groups: pd.Series, size: int, draws: int,
                    seed: int = 0) -> np.ndarray:
    """Retention over the questions of ``size`` groups drawn without replacement, once per draw."""
    names = np.array(sorted(groups.unique()))
    sums = _frame(baseline, model, groups).groupby("group")[["baseline", "model"]].sum().loc[names].to_numpy()
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.choice(len(names), size, replace=False) for _ in range(draws)])
    chosen = sums[picks].sum(axis=1)
    return 100 * chosen[:, 1] / chosen[:, 0]


def dev_retention(model: Record, baseline: Record) -> float | None:
    """The model's dev F1 at the step its recovery kept (its own, or its training stage's; the last point where
    it names none) over the teacher's dev F1 at the end of the teacher's training; None without a dev curve."""
    metric = model.task.primary_metric
    teacher = (baseline.baseline.training or {}).get("curve") or []
    for _, recovery in model.compressor.stage_recoveries():
        curve = [p for p in (recovery or {}).get("curve") or [] if p.get("dev_scores")]
        if curve and teacher and teacher[-1].get("dev_scores"):
            kept = [p for p in curve if p["step"] == recovery.get("kept_step")] or curve[-1:]
            return 100 * kept[0]["dev_scores"][metric] / teacher[-1]["dev_scores"][metric]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "group_retention.json")
    args = parser.parse_args()
    base, model = read_record(args.baseline), read_record(args.model)
    if baseline_key(base) != baseline_key(model):
        raise SystemExit(f"{args.baseline} and {args.model} are not one experiment on one machine (their cells "
                         "differ beyond the compressor): pair a compressed record with its own baseline")
    if base.task.kind != "extractive_qa" or model.data.dev is None or model.data.dev.held_apart is None:
        raise SystemExit(f"{args.model}: not an extractive QA cell with a dev set of whole groups; this diagnostic "
                         "needs both (a SQuAD cell)")
    held = model.data.dev.held_apart
    eval_split = pd.read_parquet(model.data.eval.source, columns=["id", held.group_by]).set_index("id")
    baseline_f1, model_f1 = question_f1(args.baseline, base), question_f1(args.model, model)
    groups = eval_split[held.group_by].reindex(baseline_f1.index)
    table = group_table(baseline_f1, model_f1, groups)
    drawn = drawn_retention(baseline_f1, model_f1, groups, len(held.groups), args.draws)
    dev = dev_retention(model, base)
    for name, row in table.iterrows():
        print(f"{name:45s} {int(row.questions):4d} questions  baseline {row.baseline:5.1f}  model {row.model:5.1f}  "
              f"{row.retention:6.1f}%")
    overall = 100 * model_f1.mean() / baseline_f1.mean()
    low, mid, high = np.percentile(drawn, [5, 50, 95])
    print(f"evaluated: {overall:.1f}% over {len(table)} {held.group_by} groups; {len(held.groups)} drawn at random, "
          f"{args.draws:,} times: median {mid:.1f}%, 90% of draws in {low:.1f}-{high:.1f}%"
          + (f"; the dev curve's last point, {dev:.1f}%, is reached or passed by {np.mean(drawn >= dev):.1%} of draws"
             if dev is not None else ""))
    git = _git()
    result = {"what": "retention per evaluated group, and over random draws of as many groups as the dev set holds",
              "git": {"commit": git.commit, "dirty": git.dirty},
              "baseline": str(args.baseline), "model": str(args.model), "group_by": held.group_by,
              "dev_groups": list(held.groups), "evaluated_retention": round(overall, 2),
              "dev_retention": None if dev is None else round(dev, 2),
              "draws": args.draws, "groups_per_draw": len(held.groups),
              "drawn_retention_percentiles": {str(q): round(float(np.percentile(drawn, q)), 2)
                                              for q in (5, 25, 50, 75, 95)},
              "share_of_draws_at_or_above_dev": None if dev is None else round(float(np.mean(drawn >= dev)), 4),
              "groups": [{"group": name, "questions": int(row.questions), "baseline_f1": round(row.baseline, 2),
                          "model_f1": round(row.model, 2), "retention": round(row.retention, 2)}
                         for name, row in table.iterrows()]}
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
