"""How soft a teacher's targets are at each distillation temperature: what ``temperature`` gives a student.

    python benchmarks/teacher_softness.py [ENTRY ...] [--temperatures 1 2 3 4]

Reads the teacher outputs that distillation caches (``<cache dir>/teacher_outputs/<key>/``, one entry per teacher
and training selection; by default every entry there) and, for each output and temperature T, the distributions
the soft loss matches (``benchsuite.distillation.loss.soft_loss``): over a window's positions for a span's start
or end (SQuAD), over the classes of each token (NER) or of each row (GLUE). For each it reports the mean
probability of the top choice, the mean mass of the top five, and the mean entropy against its largest possible
value (log of the positions or classes): near that largest value the targets are close to uniform, and the
student learns mostly the tail. Each entry is named by the dataset its teacher was fine-tuned on (a transfer
set's entry holds the task's rows and the transfer rows). Regression heads (one output) are skipped. Nothing is
trained or run: the figures come from the stored outputs. Writes ``benchmarks/results/teacher_softness.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchsuite.cache import default_cache_dir
from benchsuite.distillation.teacher import KIND, read_entry
from benchsuite.fileio import write_text_atomic
from benchsuite.records import _git

ROOT = Path(__file__).resolve().parents[1]


def softness(rows: list[np.ndarray], temperature: float) -> dict:
    """Mean top-1 probability, top-5 mass and entropy (nats) of softmax(row / T) over each row's last axis."""
    top1, top5, entropy, ceiling = [], [], [], []
    for row in rows:
        logits = torch.from_numpy(np.asarray(row, dtype=np.float32)).reshape(-1, row.shape[-1]) / temperature
        p = torch.softmax(logits, dim=-1)
        ranked = p.sort(dim=-1, descending=True).values
        top1.append(ranked[:, 0])
        top5.append(ranked[:, :5].sum(-1))
        entropy.append(-(p * torch.log_softmax(logits, dim=-1)).sum(-1))
        ceiling.append(torch.full((len(p),), float(np.log(row.shape[-1]))))
    top1, top5, entropy, ceiling = (torch.cat(x) for x in (top1, top5, entropy, ceiling))
    return {"distributions": len(top1), "mean_top1": round(float(top1.mean()), 4),
            "mean_top5_mass": round(float(top5.mean()), 4), "mean_entropy": round(float(entropy.mean()), 3),
            "mean_max_entropy": round(float(ceiling.mean()), 3)}


def _dataset(cache_dir: Path, teacher: str) -> str:
    """The dataset the teacher was fine-tuned on (``repo_id/config``), from its cache entry; "?" without one."""
    entry = cache_dir / "finetuned" / teacher / "entry.json"
    if not entry.is_file():
        return "?"
    dataset = json.loads(entry.read_text())["inputs"]["dataset"]
    return f"{dataset['repo_id']}/{dataset['config']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", nargs="*", type=Path, help=f"cache entries (default: every one in <cache>/{KIND})")
    parser.add_argument("--temperatures", nargs="+", type=float, default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "teacher_softness.json")
    args = parser.parse_args()
    folders = args.entries or sorted(p for p in (default_cache_dir() / KIND).glob("*") if (p / "entry.json").is_file())
    if not folders:
        raise SystemExit(f"no teacher outputs cached under {default_cache_dir() / KIND}: run a distillation first, "
                         "or name an entry folder")
    entries = []
    for folder in folders:
        meta = {**json.loads((folder / "entry.json").read_text()), "path": str(folder)}
        outputs = read_entry(meta)
        teacher = meta["inputs"]["teacher"]
        found = {"entry": folder.name, "teacher": teacher, "dataset": _dataset(folder.parent.parent, teacher),
                 "features": len(outputs), "outputs": {}}
        for name in outputs.names:
            rows = outputs.values[name]
            if rows[0].shape[-1] == 1:
                continue  # a regression head: matched by mean squared error, not a distribution
            found["outputs"][name] = {f"T={t:g}": softness(rows, t) for t in args.temperatures}
            for t, row in found["outputs"][name].items():
                print(f"{found['dataset']}, {folder.name} (teacher {teacher}) {name} {t}: "
                      f"top-1 {row['mean_top1']:.3f}, top-5 {row['mean_top5_mass']:.3f}, "
                      f"entropy {row['mean_entropy']:.2f} of at most {row['mean_max_entropy']:.2f} nats "
                      f"({row['distributions']:,} distributions)", flush=True)
        entries.append(found)
    git = _git()
    record = {"what": "how peaked the cached teacher outputs are under softmax(logits / T), per distribution the "
                      "distillation loss matches (means over distributions)",
              "git": {"commit": git.commit, "dirty": git.dirty}, "temperatures": args.temperatures,
              "entries": entries}
    write_text_atomic(args.out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
