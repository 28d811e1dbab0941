"""How far apart the layers that cross-layer sharing merges are: what a shared layer's start has to bridge.

    python benchmarks/layer_distance.py [MODEL] [--groups 3]

For each group of consecutive encoder layers that ``cross_layer:groups=G`` shares (``layer_groups``) and each of
its Linears, the distance of each member's weight from the group's average and from the group's first member,
relative to the member's own norm (0: equal; the average is a member's weight only if all are equal), and how
much of the member-minus-average difference a rank-r part holds (the fraction of its squared singular values in
the top r): a difference of low rank could be carried by a small per-depth correction, a full-rank one cannot.
MODEL is a checkpoint folder (a fine-tuned teacher in ``<cache dir>/finetuned/<key>``, say) or, by default, the
reference model. Nothing is trained. Writes ``benchmarks/results/layer_distance.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModel

from benchsuite.compressors.layers import encoder_layers
from benchsuite.compressors.share.cross_layer import layer_groups
from benchsuite.fileio import write_text_atomic
from benchsuite.models import resolve_model
from benchsuite.records import _git

ROOT = Path(__file__).resolve().parents[1]
RANKS = (8, 16, 32, 64)


def linears(layer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The layer's Linear weights by their name inside it."""
    return {name: module.weight.detach().float() for name, module in layer.named_modules()
            if isinstance(module, torch.nn.Linear)}


def distances(members: list[dict[str, torch.Tensor]]) -> dict[str, dict]:
    """Per Linear: each member's relative distance from the group's average and from its first member, and the
    rank-r energy fractions of its difference from the average."""
    found = {}
    for name in members[0]:
        weights = [m[name] for m in members]
        mean = torch.stack(weights).mean(0)
        rows = []
        for weight in weights:
            difference = weight - mean
            energy = torch.linalg.svdvals(difference).square()
            total = energy.sum()
            cumulative = energy.cumsum(0) / total if total > 0 else torch.ones_like(energy)
            rows.append({"from_average": round(float(difference.norm() / weight.norm()), 4),
                         "from_first": round(float((weight - weights[0]).norm() / weight.norm()), 4),
                         **{f"rank{r}_energy": round(float(cumulative[min(r, len(cumulative)) - 1]), 4)
                            for r in RANKS}})
        found[name] = rows
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None, help="checkpoint folder (default: the reference model)")
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "layer_distance.json")
    args = parser.parse_args()
    ref = resolve_model(args.model)
    layers = encoder_layers(AutoModel.from_pretrained(ref.path))
    groups = []
    for group in layer_groups(len(layers), args.groups):
        if len(group) < 2:
            continue
        found = distances([linears(layers[i]) for i in group])
        groups.append({"layers": group, "linears": found})
        for name, rows in found.items():
            for i, row in zip(group, rows, strict=True):
                print(f"layers {group} {name:24s} layer {i}: {row['from_average']:.2f} of its norm from the "
                      f"average, {row['from_first']:.2f} from layer {group[0]}; rank 16 holds "
                      f"{row['rank16_energy']:.2f} of the difference", flush=True)
    per_linear = [rows for g in groups for rows in g["linears"].values()]  # each Linear's rows, first member first
    values = [row["from_average"] for rows in per_linear for row in rows]
    rank16 = [row["rank16_energy"] for rows in per_linear for row in rows]
    from_first = [row["from_first"] for rows in per_linear for row in rows[1:]]
    git = _git()
    record = {"what": "relative distance of each shared group member's Linear weights from the group's average "
                      "and first member, and the rank-r energy of the difference from the average",
              "model": ref.name, "model_weights_sha256": ref.weights_sha256, "groups": args.groups,
              "git": {"commit": git.commit, "dirty": git.dirty},
              "summary": {"from_average_min": min(values), "from_average_max": max(values),
                          "rank16_energy_min": min(rank16), "rank16_energy_max": max(rank16),
                          "others_from_first_min": min(from_first), "others_from_first_max": max(from_first)},
              "by_group": groups}
    write_text_atomic(args.out, json.dumps(record, indent=2) + "\n")
    print(f"from the average: {min(values):.2f}-{max(values):.2f} of a weight's norm; rank 16 holds "
          f"{min(rank16):.2f}-{max(rank16):.2f} of the difference; the other members from the first: "
          f"{min(from_first):.2f}-{max(from_first):.2f}\nwrote {args.out}")


if __name__ == "__main__":
    main()
