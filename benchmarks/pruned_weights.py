"""Which of the teacher's weights did a pruned cell keep? Magnitude against movement, from their records.

    python benchmarks/pruned_weights.py RECORD.json [RECORD.json ...] [--out FILE] [--cache-dir DIR]

Each record is a cell whose first stage is ``magnitude`` or ``movement``. The script finds that stage's
trained model in the run's prefix cache (the entry the runner stored, keyed by the record's baseline, seed
and stage config) and the fine-tuned teacher it started from (``finetuned/<baseline cache key>``), then
compares them over the encoder's Linear weights: the teacher's mean |W| over the kept and the pruned
weights, and the share of the teacher's largest 10% (by |W|) that the pruned model kept. Magnitude
pruning keeps nearly all of them by construction; random pruning to 90% would keep 10%. It also gives the
share kept in each encoder layer: one global ranking may keep far more in some layers than in others, and
a layer that keeps almost nothing cuts the path its attention and feed-forward blocks give. A record whose
stage is not in the cache is refused, naming the run that recomputes it.
Writes ``benchmarks/results/pruned_weights.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from benchsuite.cache import default_cache_dir
from benchsuite.compressors.pipeline import PrefixCache
from benchsuite.compressors.rebuild import read_state
from benchsuite.compressors.registry import get_compressor_class
from benchsuite.fileio import write_text_atomic
from benchsuite.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
PRUNERS = ("magnitude", "movement")
TOP_SHARE = 0.1


def encoder_linear_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if ".encoder." in k and k.endswith(".weight") and v.dim() == 2}


def first_stage(record: dict) -> dict:
    """The record's first stage (a pipeline's layout lists its stages) as {"name", "config"}."""
    layout = record["compressor"]["layout"] or {}
    if "stages" in layout:
        return layout["stages"][0]
    return {"name": record["compressor"]["name"], "config": record["compressor"]["config"]}


def pruned_state(record: dict, cache_dir: Path) -> dict[str, torch.Tensor]:
    stage = first_stage(record)
    if stage["name"] not in PRUNERS:
        raise SystemExit(f"{record['compressor']['name']}: its first stage is {stage['name']!r}, not one of {PRUNERS}")
    cls = get_compressor_class(stage["name"])
    compressor = cls(cls.config_class.from_params(stage["config"]["params"]))
    cache = PrefixCache(cache_dir, baseline_key=record["baseline"]["cache_key"], seed=record["provenance"]["seed"],
                        providers={stage["name"]: record["compressor"]["provider"]})
    entry = cache.get([compressor])
    if entry is None:
        raise SystemExit(f"{record['compressor']['name']} on {record['task']['name']}: its {stage['name']} model "
                         f"is not in {cache_dir}/prefix; rerun the cell (benchsuite run --force --tasks "
                         f"{record['task']['name']} --compressors ...) to store it")
    return read_state(Path(entry["path"]), "sparse")


def layer_kept_share(pruned: dict[str, torch.Tensor], names: list[str]) -> dict[str, float]:
    """The share of each encoder layer's Linear weights that the pruned model kept, by layer index."""
    kept, size = defaultdict(int), defaultdict(int)
    for name in names:
        layer = re.search(r"\.layer\.(\d+)\.", name)
        index = layer.group(1) if layer else "?"
        kept[index] += int((pruned[name] != 0).sum())
        size[index] += pruned[name].numel()
    return {index: round(kept[index] / size[index], 6) for index in sorted(size, key=lambda i: (len(i), i))}


def compare(record_path: Path, cache_dir: Path) -> dict:
    record = json.loads(record_path.read_text())
    teacher = load_file(str(cache_dir / "finetuned" / record["baseline"]["cache_key"] / "model.safetensors"))
    names = sorted(encoder_linear_weights(teacher))
    pruned = pruned_state(record, cache_dir)
    size = sum(teacher[k].numel() for k in names)
    magnitude = torch.cat([teacher[k].abs().flatten() for k in names])
    kept = torch.cat([(pruned[k] != 0).flatten() for k in names])
    top = torch.zeros(size, dtype=torch.bool)
    top[magnitude.topk(round(TOP_SHARE * size)).indices] = True
    return {
        "record": str(record_path.relative_to(ROOT)) if record_path.is_relative_to(ROOT) else str(record_path),
        "task": record["task"]["name"],
        "compressor": record["compressor"]["name"],
        "config": first_stage(record)["config"]["params"],
        "primary_score": record["primary_score"],
        "encoder_linear_weights": size,
        "kept_share": round(float(kept.float().mean()), 6),
        "teacher_mean_abs_kept": round(float(magnitude[kept].mean()), 6),
        "teacher_mean_abs_pruned": round(float(magnitude[~kept].mean()), 6),
        "teacher_top10_kept_share": round(float((kept & top).sum() / top.sum()), 6),
        "layer_kept_share": layer_kept_share(pruned, names),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $BENCHSUITE_CACHE_DIR, else "
                        "~/.cache/benchsuite")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pruned_weights.json")
    args = parser.parse_args()
    cache_dir = args.cache_dir or default_cache_dir()
    rows = [compare(path.resolve(), cache_dir) for path in args.records]
    for row in rows:
        print(f"{row['task']} {row['compressor']} {row['config']}: score {row['primary_score']:.4f}, kept "
              f"{row['teacher_top10_kept_share']:.1%} of the teacher's largest 10%; kept by layer "
              f"{', '.join(f'{i}: {v:.1%}' for i, v in row['layer_kept_share'].items())}")
    out = {
        "what": "the teacher's weights that magnitude and movement pruning kept, over the encoder's Linears: mean "
                "|W| (teacher) of the kept and pruned weights, and the share of the teacher's largest 10% kept "
                "(random pruning to 90% keeps 10%), and the share kept in each encoder layer",
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count()},
        "results": rows,
    }
    write_text_atomic(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
