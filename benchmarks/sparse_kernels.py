"""Is a sparse kernel faster than the dense one for magnitude-pruned encoders on this CPU?

    BENCHSUITE_DATA_DIR=../shared/data/hub python benchmarks/sparse_kernels.py [--out FILE]

The reference model (all-MiniLM-L6-v2 with a random 2-way head) has every encoder Linear pruned by
one global magnitude ranking, as ``magnitude`` prunes it, to 90% and to 97%. At each sparsity the
pruned model with its dense kernels is timed interleaved against the same weights in torch's CSR
format (``torch.sparse.mm``, MKL on x86) by ``benchsuite.measure.speed.compare_speed``, the harness's
own method (batch 1 latency and batch 32 throughput on real SST-2 sentences, median and IQR of
per-round ratios). The logits of both are compared, so a fast but wrong kernel shows. Unstructured
sparsity leaves almost every block of a block-sparse (BSR) layout nonzero, so BSR is not timed.
Writes ``benchmarks/results/sparse_kernels.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

import torch
from quant_backends import version
from reference_inputs import minilm, sst2_features
from torch import nn

from benchsuite.fileio import write_text_atomic
from benchsuite.machine import cpu_model, cpu_vector_flags
from benchsuite.measure.speed import compare_speed

ROOT = Path(__file__).resolve().parents[1]
SPARSITIES = (0.9, 0.97)


class CsrLinear(nn.Module):
    """``nn.Linear`` with its weight in CSR: y = (W_csr @ x^T)^T + b."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.sparse.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


def prune_encoder(model: nn.Module, sparsity: float) -> nn.Module:
    """Zero the smallest encoder Linear weights by one global ranking, as ``magnitude`` does."""
    linears = [m for m in model.base_model.encoder.modules() if isinstance(m, nn.Linear)]
    flat = torch.cat([m.weight.detach().abs().flatten() for m in linears])
    threshold = flat.kthvalue(round(sparsity * flat.numel())).values
    with torch.no_grad():
        for m in linears:
            m.weight[m.weight.abs() <= threshold] = 0
    return model


def to_csr(model: nn.Module) -> nn.Module:
    for parent in list(model.base_model.encoder.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, CsrLinear(child))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sparse_kernels.json")
    args = parser.parse_args()
    inputs, pad_token_id = sst2_features()
    results = []
    for sparsity in SPARSITIES:
        dense = prune_encoder(minilm(), sparsity)
        sparse = to_csr(copy.deepcopy(dense)).eval()
        with torch.inference_mode():
            probe = [{k: torch.tensor([v]) for k, v in f.items()} for f in inputs[:8]]
            diff = max(float((dense(**p).logits - sparse(**p).logits).abs().max()) for p in probe)
        print(f"timing CSR at {sparsity:.0%} (largest logit difference {diff:.2e}) ...", flush=True)
        speed, _ = compare_speed(dense, sparse, inputs, pad_token_id=pad_token_id, seed=0)
        linears = [m.weight for m in dense.base_model.encoder.modules() if isinstance(m, nn.Linear)]
        achieved = sum(int((w == 0).sum()) for w in linears) / sum(w.numel() for w in linears)
        results.append({"sparsity": sparsity, "achieved_sparsity": round(achieved, 6),
                        "kernel": "torch.sparse.mm, CSR weight", "max_abs_logit_diff": diff,
                        "speedup_batch32": speed["speedup_throughput"], "speedup_batch1": speed["speedup_latency"],
                        "speed": speed})
        print(f"  batch 32: {speed['speedup_throughput']}; batch 1: {speed['speedup_latency']}", flush=True)
    record = {
        "what": "speed of CSR sparse kernels relative to dense kernels on the same magnitude-pruned "
                "all-MiniLM-L6-v2 encoder (every encoder Linear, one global ranking), real SST-2 sentences",
        "machine": {"cpu": cpu_model(), "cpu_vector_flags": cpu_vector_flags(), "logical_cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
        "packages": {p: version(p) for p in ("torch", "transformers")},
        "results": results,
    }
    write_text_atomic(args.out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
