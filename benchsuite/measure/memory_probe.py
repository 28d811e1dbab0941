"""The child process of ``measure_model_memory``: load a model, run it over inputs, announce phases.

    python -m benchsuite.measure.memory_probe --model DIR --inputs FILE [--loader module:function]
           [--batch-size 32] [--threads 1]

Phases (``BENCHSUITE_PHASE`` lines, read by ``memory.sample_peak_rss`` in the parent):
``start`` once torch, transformers, the model's modeling code (not its weights) and the
inputs are in memory (the baseline), ``load`` while the loader builds the model, ``loaded``
once it has (after gc), ``inference`` during one ``engine.forward_all`` pass over every
input, ``done`` after it. The final
``BENCHSUITE_RESULT`` holds the child's own RSS, read after gc at the ``start``, ``loaded``
and ``done`` markers (``rss_bytes``; its file-backed part, ``rss_file_bytes``), its
``ru_maxrss_bytes`` and, on Linux, ``vm_hwm_bytes`` (the peak RSS of this process image
alone: ru_maxrss also counts the memory of the process it was forked from).

``--inputs`` is JSON lines (one feature per line: lists of token ids under ``input_ids``,
``attention_mask``, ``token_type_ids``) or ``.npz`` with each of those keys concatenated
over features plus ``lengths`` (tokens per feature).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import resource
from pathlib import Path

import numpy as np
import torch
import transformers

from benchsuite.engine import INPUT_KEYS, forward_all
from benchsuite.errors import UsageError
from benchsuite.measure.memory import RU_MAXRSS_UNIT, announce_phase, announce_result, rss_bytes
from benchsuite.models import auto_class_for

DEFAULT_LOADER = "benchsuite.models:load_saved"


def import_modeling_code(path: str) -> None:
    """Import the folder's model classes without loading weights (transformers imports them lazily).

    Importing a model's code costs ~130 MB of RSS for BERT, the same for every checkpoint of
    an architecture; done before the baseline, it stays out of the loading cost.
    """
    if not (Path(path) / "config.json").is_file():
        return
    architectures = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    for arch in architectures:
        getattr(transformers, arch, None)
    try:
        auto_class_for(path)
        transformers.AutoConfig.from_pretrained(path)
    except UsageError:
        pass


def read_inputs(path: Path) -> list[dict]:
    if path.suffix == ".npz":
        with np.load(path) as data:
            ends = np.cumsum(data["lengths"])
            keys = [k for k in INPUT_KEYS if k in data]
            columns = {k: np.split(data[k], ends[:-1]) for k in keys}
        return [{k: columns[k][i].tolist() for k in keys} for i in range(len(ends))]
    with path.open() as fh:
        return [{k: v for k, v in json.loads(line).items() if k in INPUT_KEYS} for line in fh if line.strip()]


def resolve_loader(spec: str):
    """``module:function`` or ``module:Class.method`` -> the callable."""
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"--loader {spec!r}: expected module:function")
    target = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def proc_status_bytes(field: str) -> int | None:
    """A ``kB`` line of ``/proc/self/status`` (VmHWM, RssFile, ...) in bytes; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchsuite.measure.memory_probe", description=__doc__)
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--inputs", required=True, type=Path, help="features: .jsonl or .npz")
    parser.add_argument("--loader", default=DEFAULT_LOADER, help="module:function(path) -> nn.Module")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    features = read_inputs(args.inputs)
    loader = resolve_loader(args.loader)
    import_modeling_code(args.model)
    rss: dict[str, int] = {}
    rss_file: dict[str, int | None] = {}

    def phase(name: str) -> None:
        gc.collect()
        rss[name], rss_file[name] = rss_bytes(), proc_status_bytes("RssFile")
        announce_phase(name)

    phase("start")
    announce_phase("load")
    model = loader(args.model)
    phase("loaded")
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None) or 0
    announce_phase("inference")
    _, stats = forward_all(model, features, output_names=(), batch_size=args.batch_size, pad_token_id=pad,
                           per_token=False, desc="memory")
    phase("done")
    announce_result({
        "rss_bytes": rss,
        "rss_file_bytes": rss_file,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RU_MAXRSS_UNIT,
        "vm_hwm_bytes": proc_status_bytes("VmHWM"),
        "examples": stats.examples,
        "batches": stats.batches,
        "padded_tokens": stats.padded_tokens,
        "threads": torch.get_num_threads(),
        "loader": args.loader,
    })


if __name__ == "__main__":
    main()
