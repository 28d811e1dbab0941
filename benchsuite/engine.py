"""The evaluation engine: length-sorted batches, dynamic padding, ``torch.inference_mode``.

Features are dicts of token-id lists (one per model input) and, for training, labels.
Sorting by length before batching keeps padding small; outputs are returned in the
features' original order, cut to each feature's true length for per-token outputs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
IGNORED_LABEL = -100  # the label torch's cross-entropy (so a model's own loss) skips: padding, unlabelled rows
# Per-token labels are padded with the loss's ignore index.
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "labels": IGNORED_LABEL, "input_ids": None}


@dataclass(frozen=True)
class ForwardStats:
    """What a pass over the features cost: for the record's measurement section."""

    examples: int
    batches: int
    batch_size: int
    real_tokens: int
    padded_tokens: int  # tokens processed, padding included
    seconds: float

    @property
    def padding_fraction(self) -> float:
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length, longest first (peak memory shows early)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(features: Sequence[dict], pad_token_id: int, *, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Pad the features of one batch to its longest member, rounded up to ``multiple`` tokens, and stack them
    into tensors."""
    width = -(-max(len(f["input_ids"]) for f in features) // multiple) * multiple
    batch: dict[str, torch.Tensor] = {}
    for key, first in features[0].items():
        if key.startswith("_"):  # bookkeeping (offsets, example ids) stays out of the model
            continue
        if isinstance(first, list):
            pad = pad_token_id if key == "input_ids" else PAD_VALUES.get(key, 0)
            array = np.full((len(features), width), pad, dtype=np.int64)
            for row, feature in enumerate(features):
                array[row, : len(feature[key])] = feature[key]
            batch[key] = torch.from_numpy(array)
        else:
            batch[key] = torch.tensor([f[key] for f in features])
    return batch


@torch.inference_mode()
def forward_all(
    model: torch.nn.Module,
    features: Sequence[dict],
    *,
    output_names: Sequence[str],
    batch_size: int,
    pad_token_id: int,
    per_token: bool,
    desc: str = "evaluating",
) -> tuple[dict[str, list[np.ndarray]], ForwardStats]:
    """Run ``model`` over every feature; ``outputs[name][i]`` belongs to ``features[i]``.

    With ``per_token`` the i-th output is cut to the i-th feature's length (QA start/end
    logits, tagging logits); otherwise it is the feature's single row (sequence logits).
    """
    model.eval()
    lengths = [len(f["input_ids"]) for f in features]
    outputs: dict[str, list[np.ndarray]] = {name: [None] * len(features) for name in output_names}  # type: ignore[list-item]
    padded = 0
    start = time.perf_counter()
    batches = length_sorted_batches(lengths, batch_size)
    for index in tqdm(batches, desc=desc, unit="batch", leave=False, mininterval=1.0):
        batch = collate([model_inputs(features[i]) for i in index], pad_token_id)
        padded += batch["input_ids"].numel()
        result = model(**batch)
        for name in output_names:
            values = getattr(result, name).float().numpy()
            for row, i in enumerate(index):
                outputs[name][i] = values[row, : lengths[i]] if per_token else values[row]
    stats = ForwardStats(
        examples=len(features),
        batches=len(batches),
        batch_size=batch_size,
        real_tokens=int(sum(lengths)),
        padded_tokens=int(padded),
        seconds=time.perf_counter() - start,
    )
    return outputs, stats


def model_inputs(feature: dict) -> dict:
    """The feature's model inputs (token ids, masks), without labels or bookkeeping."""
    return {k: v for k, v in feature.items() if k in INPUT_KEYS}
