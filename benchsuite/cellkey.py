"""One name for a cell: everything that decides its result, hashed into the record's file name.

A cell is (model, task, compressor config) on one machine. Its key holds the model's weights
sha256, the task spec's digest (its ``version`` included), the data actually selected (source
fingerprint, split, the sha256 of the chosen row indices, row counts), the fine-tuning epochs, the
seed, the compressor's name, config hash and the package (and version) that provides it, and, for
the measurements, the machine: CPU model, vector extensions and torch thread count. The record's
file name is ``<compressor>-<key digest>.json`` and resuming a run skips exactly the cells whose
key already has a record, so a change to any part computes a new cell, and a new machine measures
itself instead of inheriting another machine's records.

The key is built from what a record already holds, so a record written before keys existed
(schema 1) gets the same key a rerun on its machine would compute (:func:`key_of_record_json`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

DIGEST_CHARS = 12


@dataclass(frozen=True)
class MachineKey:
    """What decides a cell's speed and memory: the CPU, its vector extensions and the threads used."""

    cpu: str
    cpu_vector_flags: tuple[str, ...]
    torch_threads: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineKey:
        return cls(cpu=str(data["cpu"]), cpu_vector_flags=tuple(data.get("cpu_vector_flags") or ()),
                   torch_threads=int(data["torch_threads"]))

    def label(self) -> str:
        """A short human name: CPU, the widest vector unit, VNNI or not, threads."""
        flags = set(self.cpu_vector_flags)
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        isa += " with VNNI" if flags & {"avx512_vnni", "avx_vnni"} else " without VNNI"
        return f"{self.cpu}, {isa}, {self.torch_threads} thread{'s' if self.torch_threads != 1 else ''}"


@dataclass(frozen=True)
class DataKey:
    """The rows a split contributed: which file (by content), which split and which rows."""

    split: str
    fingerprint: str
    selection_sha256: str
    rows_used: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataKey:
        return cls(split=str(data["split"]), fingerprint=str(data["fingerprint"]),
                   selection_sha256=str(data["selection_sha256"]), rows_used=int(data["rows_used"]))


@dataclass(frozen=True)
class CellKey:
    preset: str
    task: str
    task_spec_digest: str
    task_version: int
    model: str
    model_weights_sha256: str
    train_data: DataKey
    eval_data: DataKey
    epochs: float  # the baseline's fine-tuning epochs under the preset's budget
    seed: int
    compressor: str
    config_hash: str
    provider: str  # "<distribution> <version>" of the package that registers the compressor
    machine: MachineKey

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["machine"]["cpu_vector_flags"] = list(self.machine.cpu_vector_flags)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellKey:
        return cls(**{**data, "train_data": DataKey.from_json(data["train_data"]),
                      "eval_data": DataKey.from_json(data["eval_data"]), "epochs": float(data["epochs"]),
                      "machine": MachineKey.from_json(data["machine"])})

    def digest(self) -> str:
        payload = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:DIGEST_CHARS]

    def file_stem(self) -> str:
        return f"{self.compressor}-{self.digest()}"


def key_of_record_json(data: dict[str, Any], *, provider: str) -> CellKey:
    """The key of a record's JSON (schema 1 or 2): the one its run would have computed."""
    task, model, split, prov = data["task"], data["model"], data["data"], data["provenance"]
    return CellKey(
        preset=data["preset"], task=task["name"], task_spec_digest=task["spec_digest"],
        task_version=int(task["version"]), model=model["name"], model_weights_sha256=model["weights_sha256"],
        train_data=DataKey.from_json(split["train"]), eval_data=DataKey.from_json(split["eval"]),
        epochs=float(data["baseline"]["hyper_parameters"]["epochs"]), seed=int(prov["seed"]),
        compressor=data["compressor"]["name"], config_hash=data["compressor"]["config_hash"], provider=provider,
        machine=MachineKey.from_json(prov["machine"]),
    )
