"""Activation statistics measured on calibration batches."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.inference_mode()
def input_absmax(model: nn.Module, names: list[str], batches: Iterable[dict[str, torch.Tensor]]) -> dict:
    """Per-input-channel max |x| of each named Linear over the batches (padding positions excluded)."""
    found: dict[str, torch.Tensor] = {}
    mask: list[torch.Tensor] = []

    def hook(name):
        def record(_module, inputs, _output):
            x = inputs[0].detach().abs()
            if x.dim() == 3 and mask and mask[0].shape == x.shape[:2]:
                x = x[mask[0].bool()]  # real tokens only
            x = x.reshape(-1, x.shape[-1]).amax(dim=0)
            found[name] = torch.maximum(found[name], x) if name in found else x
        return record

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        for batch in batches:
            mask[:] = [batch["attention_mask"]] if "attention_mask" in batch else []
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return found
