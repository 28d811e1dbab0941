"""What a recovery training step costs on this CPU, with and without the two options that make it faster.

    BENCHSUITE_DATA_DIR=../shared/data/hub python benchmarks/recovery_step.py [--task squad] [--rounds 3] [--steps 3]

A 3-layer student of the reference model (all-MiniLM-L6-v2's layers 0, 2 and 4, as ``distill`` keeps them,
with the task's head, randomly initialised) trains on the task's real training features, in batches of 32
grouped by length (SQuAD: windows of up to 256 tokens; CoNLL-2003 and the GLUE tasks: sentences of a few dozen),
through the project's own loop, ``benchsuite.train.fine_tune``, on its hard labels: the student's forward
and backward, gradient clipping and AdamW, the model's dropouts on. Four recipes: the default (fp32, BERT's
0.1 attention dropout), ``train_precision=bf16``, ``attention_dropout=0`` and both. Each round runs every
recipe once, from the same weights, in an order that rotates from round to round; the median seconds a
step over the rounds is reported with its range, and each recipe's ratio to the default. The teacher's
forward pass, which distillation adds, is left out. Writes ``benchmarks/results/recovery_step.json`` for
SQuAD and ``recovery_step-<task>.json`` for any other task.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
from pathlib import Path

import torch
from quant_backends import version

from benchsuite.data import load_task_data
from benchsuite.distillation.recovery import TRAIN_PRECISIONS, set_attention_dropout
from benchsuite.fileio import write_text_atomic
from benchsuite.machine import cpu_model, cpu_vector_flags
from benchsuite.models import default_model, load_model, load_tokenizer, resolve_model
from benchsuite.records import _git
from benchsuite.tasks import load_task, task_kind
from benchsuite.train import fine_tune

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"default": ("fp32", None), "bf16": ("bf16", None), "attention_dropout=0": ("fp32", 0.0),
           "bf16, attention_dropout=0": ("bf16", 0.0)}


def student(kind) -> torch.nn.Module:
    torch.manual_seed(0)
    model = load_model(kind.auto_class, default_model(), **kind.model_kwargs())
    model.bert.encoder.layer = torch.nn.ModuleList(model.bert.encoder.layer[i] for i in (0, 2, 4))
    model.config.num_hidden_layers = 3
    return model


def task_features(task: str, n: int) -> tuple[list[dict], int, object, object]:
    """``n`` training features of ``task`` (a row gives one or more), the pad id, the task's TrainConfig and kind."""
    spec = load_task(task)
    tokenizer = load_tokenizer(resolve_model(None), max_length=spec.max_length)
    kind = task_kind(spec, tokenizer)
    data = load_task_data(spec, max_train=n, max_eval=1, seed=0)
    return kind.train_features(data.train)[:n], tokenizer.pad_token_id, spec.train, kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="squad", help="a task name, as 'benchsuite run --tasks' takes it")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="training steps a recipe runs in each round")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/recovery_step[-TASK].json")
    args = parser.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / (
        "recovery_step.json" if args.task == "squad" else f"recovery_step-{args.task}.json")
    git = _git()
    features, pad_token_id, train, kind = task_features(args.task, 32 * args.steps)
    cfg = type(train)(learning_rate=train.learning_rate, epochs=1.0, batch_size=32, warmup_ratio=0.0)
    base = student(kind)
    widths = sorted({len(f["input_ids"]) for f in features})
    print(f"{len(features)} {args.task} training features of {widths[0]}-{widths[-1]} tokens; {args.rounds} rounds of "
          f"{args.steps} steps a recipe", flush=True)
    for precision, _ in RECIPES.values():  # one untimed pass each: first-use kernel compilation stays out
        fine_tune(copy.deepcopy(base), features[:32], cfg=cfg, seed=0, pad_token_id=pad_token_id,
                  autocast=TRAIN_PRECISIONS[precision], desc="warm-up")
    seconds: dict[str, list[float]] = {name: [] for name in RECIPES}
    names = list(RECIPES)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            precision, dropout = RECIPES[name]
            model = copy.deepcopy(base)
            set_attention_dropout(model, dropout)
            stats = fine_tune(model, features, cfg=cfg, seed=0, pad_token_id=pad_token_id,
                              autocast=TRAIN_PRECISIONS[precision], desc=name)
            seconds[name].append(stats.seconds / stats.steps)
        print(f"round {r + 1}: " + ", ".join(f"{n} {seconds[n][-1]:.2f} s" for n in names), flush=True)
    default = statistics.median(seconds["default"])
    results = {name: {"seconds_per_step_median": round(statistics.median(s), 3),
                      "seconds_per_step_range": [round(min(s), 3), round(max(s), 3)],
                      "speedup_vs_default": round(default / statistics.median(s), 2), "seconds_per_step": s}
               for name, s in seconds.items()}
    for name, row in results.items():
        print(f"{name}: {row['seconds_per_step_median']} s a step {row['seconds_per_step_range']}, "
              f"{row['speedup_vs_default']}x the default", flush=True)
    record = {
        "what": f"seconds a recovery training step takes (3-layer all-MiniLM-L6-v2 student, {args.task}'s head, "
                f"batches of 32 real {args.task} training features of {widths[0]}-{widths[-1]} tokens, hard-label "
                "loss, benchsuite.train.fine_tune), by recipe",
        "task": args.task,
        "machine": {"cpu": cpu_model(), "cpu_vector_flags": cpu_vector_flags(), "logical_cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
        "packages": {p: version(p) for p in ("torch", "transformers")},
        "git": {"commit": git.commit, "dirty": git.dirty},
        "rounds": args.rounds, "steps_per_round": args.steps, "token_widths": [widths[0], widths[-1]],
        "results": results,
    }
    write_text_atomic(out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
