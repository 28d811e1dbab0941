"""The teacher's outputs on the training features, computed once per task and cached.

Students and recovering models read the teacher's logits from here instead of running the
teacher at every step. The cache key is the baseline's own cache key (which fixes the
teacher's weights) plus the sha256 of the training features, so a different slice, a new
tokenizer or a retrained baseline never reuses stale outputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from benchsuite import cache
from benchsuite.engine import INPUT_KEYS, forward_all

PAYLOAD = "outputs.safetensors"
KIND = "teacher_outputs"  # the cache folder
CODE_VERSION = 1  # bump when what is stored changes


@dataclass(frozen=True)
class TeacherOutputs:
    """``values[name][i]`` is the teacher's output ``name`` for training feature ``i``."""

    names: tuple[str, ...]
    per_token: bool
    values: dict[str, list[np.ndarray]]

    def __len__(self) -> int:
        return len(self.values[self.names[0]])

    def followed_by(self, other: TeacherOutputs) -> TeacherOutputs:
        """These outputs, then ``other``'s, row for row (the features of the two, concatenated in that order)."""
        if (other.names, other.per_token) != (self.names, self.per_token):
            raise ValueError(f"teacher outputs {self.names} and {other.names} do not concatenate")
        return TeacherOutputs(self.names, self.per_token, {n: self.values[n] + other.values[n] for n in self.names})

    def batch(self, name: str, index: Sequence[int], width: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The outputs of features ``index`` stacked (per-token ones padded to ``width``), and the mask of
        real positions for per-token outputs (None otherwise)."""
        rows = [self.values[name][i] for i in index]
        if not self.per_token:
            return torch.from_numpy(np.stack(rows)), None
        padded = np.zeros((len(rows), width, *rows[0].shape[1:]), dtype=np.float32)
        mask = np.zeros((len(rows), width), dtype=bool)
        for r, row in enumerate(rows):
            padded[r, : len(row)] = row
            mask[r, : len(row)] = True
        return torch.from_numpy(padded), torch.from_numpy(mask)


def features_sha256(features: Sequence[dict]) -> str:
    digest = hashlib.sha256()
    for feature in features:
        digest.update(json.dumps({k: feature[k] for k in INPUT_KEYS if k in feature}, sort_keys=True).encode())
    return digest.hexdigest()


def teacher_outputs(load_teacher: Callable[[], torch.nn.Module], features: Sequence[dict], *, names: Sequence[str],
                    per_token: bool, pad_token_id: int, cache_dir: Path, teacher_key: str,
                    batch_size: int = 64) -> TeacherOutputs:
    """The teacher's ``names`` outputs on ``features``, from the cache or computed (and cached) now;
    ``load_teacher`` is called only on a cache miss."""
    entry = teacher_outputs_entry(load_teacher, features, names=names, per_token=per_token,
                                  pad_token_id=pad_token_id, cache_dir=cache_dir, teacher_key=teacher_key,
                                  batch_size=batch_size)
    outputs = read_entry(entry)
    if len(outputs) != len(features):
        raise RuntimeError(f"cached teacher outputs hold {len(outputs)} rows for {len(features)} features")
    return outputs


def read_entry(entry: dict) -> TeacherOutputs:
    """The outputs a cache entry holds, from its metadata (``entry.json`` plus its ``path``, as
    :func:`benchsuite.cache.cached_entry` returns it: ``inputs`` says which names, and whether per token)."""
    inputs = entry["inputs"]
    stored = load_file(str(Path(entry["path"]) / PAYLOAD))
    values = {}
    for name in inputs["names"]:
        flat, shapes = stored[name], stored[f"{name}.shapes"]
        sizes = np.prod(shapes, axis=1) if shapes.shape[1] else np.ones(len(shapes), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        values[name] = [flat[offsets[i] : offsets[i + 1]].reshape(tuple(shapes[i])) for i in range(len(shapes))]
    return TeacherOutputs(tuple(inputs["names"]), inputs["per_token"], values)


def teacher_outputs_entry(load_teacher: Callable[[], torch.nn.Module], features: Sequence[dict], *,
                          names: Sequence[str], per_token: bool, pad_token_id: int, cache_dir: Path, teacher_key: str,
                          batch_size: int = 64) -> dict:
    """The cache entry (:mod:`benchsuite.cache`) holding the teacher's outputs on ``features``, built on a miss."""
    inputs = {"code_version": CODE_VERSION, "teacher": teacher_key, "features_sha256": features_sha256(features),
              "names": list(names), "per_token": per_token}
    key = cache.key_of(inputs)
    entry = cache.cached_entry(cache_dir, KIND, key, payload=PAYLOAD)
    if entry is not None:
        return entry

    def build(folder: Path) -> dict:
        outputs, stats = forward_all(load_teacher(), features, output_names=list(names), batch_size=batch_size,
                                     pad_token_id=pad_token_id, per_token=per_token,
                                     desc="teacher outputs on the training data")
        flat = {name: np.concatenate([np.asarray(v, dtype=np.float32).reshape(-1) for v in outputs[name]])
                for name in names}
        shapes = {name: np.asarray([np.shape(v) for v in outputs[name]], dtype=np.int64).reshape(len(features), -1)
                  for name in names}
        save_file({**flat, **{f"{n}.shapes": s for n, s in shapes.items()}}, str(folder / PAYLOAD))
        return {"features": len(features), "seconds": round(stats.seconds, 3)}

    return cache.build_entry(cache_dir, KIND, key, inputs, build, payload=PAYLOAD)
