"""The result record: one JSON file per (model, task, compressor config) cell.

Layout: ``<results>/<preset>/<task>/<model slug>/<compressor>-<config hash>.json`` with
the per-example predictions beside it (``.predictions.jsonl``). Files are written to a
temporary name and renamed, so a crash never leaves half a record. Scores are on a
0-100 scale.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from benchsuite.fileio import write_text_atomic
from benchsuite.machine import cpu_model, cpu_vector_flags

SCHEMA_VERSION = 1
PACKAGES = ("benchsuite", "torch", "transformers", "datasets", "evaluate", "tokenizers", "numpy", "pandas")


@dataclass
class Record:
    schema_version: int
    status: str  # "ok" or "failed"
    preset: str
    task: dict[str, Any]  # name, kind, version, spec digest, primary metric
    model: dict[str, Any]  # name, path origin, weights sha256
    compressor: dict[str, Any]  # name, config JSON, config hash
    data: dict[str, Any]  # train and eval SplitInfo
    baseline: dict[str, Any]  # fine-tuning: cache key, hyper-parameters, steps, seconds, reused or not
    scores: dict[str, float] = field(default_factory=dict)
    primary_score: float | None = None
    measurements: dict[str, Any] = field(default_factory=dict)
    predictions_file: str | None = None
    notes: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def record_path(results_dir: Path, preset: str, task: str, model_slug: str, compressor: str, config_hash: str) -> Path:
    return results_dir / preset / task / model_slug / f"{compressor}-{config_hash}.json"


def predictions_path(record_file: Path) -> Path:
    return record_file.with_suffix(".predictions.jsonl")


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_record(path: Path) -> dict[str, Any]:
    """Parse a record, raising ValueError naming the file when it is not one of ours."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); a truncated or foreign file") from None
    if not isinstance(data, dict) or "schema_version" not in data or "compressor" not in data:
        raise ValueError(f"{path}: not a benchsuite record (no schema_version)")
    if data["schema_version"] > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {data['schema_version']} is newer than this benchsuite "
                         f"({SCHEMA_VERSION}); upgrade benchsuite")
    return data


def provenance(seed: int) -> dict[str, Any]:
    return {
        "time_utc": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "git": _git(),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cpu_vector_flags": cpu_vector_flags(),
            "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "seed": seed,
    }


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.cache
def _git() -> dict[str, Any]:
    """The checkout's commit, read once per process: the code that runs is the code present at start."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "benchsuite", "tasks"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}
