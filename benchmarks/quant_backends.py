"""Which int8 backend to build on: every candidate timed against fp32 on this machine.

    BENCHSUITE_DATA_DIR=../shared/data/hub python benchmarks/quant_backends.py [--out FILE]

The reference model (all-MiniLM-L6-v2 with a random 2-way head) runs real SST-2
validation sentences; each candidate is timed interleaved with the fp32 model by
``benchsuite.measure.speed.compare_speed`` (the harness's own method: batch 1 latency and
batch 32 throughput, median and IQR of per-round ratios). Candidates: torch.ao dynamic
int8 on each x86 engine, torchao's int8 configs (when torchao is installed) and a bf16
cast. Accuracy is not judged here (the random head makes it meaningless); the harness
records it per task. Writes ``benchmarks/results/quant_backends.json``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from reference_inputs import minilm, sst2_features
from torch import nn

from benchsuite.fileio import write_text_atomic
from benchsuite.machine import cpu_model, cpu_vector_flags
from benchsuite.measure.speed import compare_speed
from benchsuite.quant.torch_ao import quiet, set_engine

ROOT = Path(__file__).resolve().parents[1]


def torch_ao_dynamic(engine: str) -> Callable[[nn.Module], nn.Module]:
    def build(model: nn.Module) -> nn.Module:
        set_engine(engine)
        with quiet():
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8)
    return build


def torchao_config(config_name: str) -> Callable[[nn.Module], nn.Module]:
    def build(model: nn.Module) -> nn.Module:
        import torchao.quantization as tao  # noqa: PLC0415

        tao.quantize_(model, getattr(tao, config_name)())
        return model
    return build


def candidates() -> dict[str, Callable[[nn.Module], nn.Module]]:
    found = {f"torch.ao quantize_dynamic int8, engine {e}": torch_ao_dynamic(e)
             for e in ("x86", "fbgemm", "onednn") if e in torch.backends.quantized.supported_engines}
    try:
        import torchao  # noqa: F401, PLC0415

        found["torchao Int8DynamicActivationInt8WeightConfig"] = torchao_config("Int8DynamicActivationInt8WeightConfig")
        found["torchao Int8WeightOnlyConfig"] = torchao_config("Int8WeightOnlyConfig")
    except ImportError:
        pass
    found["bf16 cast"] = lambda model: model.to(torch.bfloat16)
    return found


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quant_backends.json")
    args = parser.parse_args()
    inputs, pad_token_id = sst2_features()
    fp32 = minilm()
    results = []
    for name, build in candidates().items():
        print(f"timing {name} ...", flush=True)
        try:
            model = build(copy.deepcopy(fp32)).eval()
            speed, _ = compare_speed(fp32, model, inputs, pad_token_id=pad_token_id, seed=0)
            results.append({"candidate": name, "speedup_batch32": speed["speedup_throughput"],
                            "speedup_batch1": speed["speedup_latency"], "speed": speed})
        except Exception as exc:  # a candidate that does not run here is a finding, not a crash
            results.append({"candidate": name, "error": f"{type(exc).__name__}: {exc}"})
        print(f"  {results[-1].get('speedup_batch32', results[-1].get('error'))}", flush=True)
    record = {
        "what": "speed of int8/bf16 backends relative to fp32 on all-MiniLM-L6-v2, real SST-2 sentences",
        "machine": {"cpu": cpu_model(), "cpu_vector_flags": cpu_vector_flags(), "logical_cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
        "packages": {p: version(p) for p in ("torch", "torchao", "transformers")},
        "results": results,
    }
    write_text_atomic(args.out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
