"""``zero_small``: set to zero every Linear weight of the encoder whose magnitude is under a threshold.

A complete outside benchsuite plugin. The encoder is the model's transformer body
(``model.base_model``: attention, feed-forward and pooler Linear layers); the task head that
reads it out is left whole, and so are biases, embeddings and LayerNorms. The zeros stay
stored as zeros, so the saved safetensors file keeps its size; the record's non-zero
count and gzip size show what was removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from benchsuite.compressors.base import Compressor, CompressorConfig

__all__ = ["ZeroSmall", "ZeroSmallConfig"]


@dataclass(frozen=True)
class ZeroSmallConfig(CompressorConfig):
    threshold: float = 1e-3  # weights with |w| < threshold become 0; 0 changes nothing

    def __post_init__(self) -> None:
        super().__post_init__()  # validates
        # `threshold=1` and `threshold=1.0` (as a command line gives them) are one config, with one hash.
        object.__setattr__(self, "threshold", float(self.threshold))

    def validate(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ValueError(f"zero_small: threshold must be a finite number >= 0, got {t!r}")


class ZeroSmall(Compressor):
    name = "zero_small"
    config_class = ZeroSmallConfig
    NEEDS = frozenset()  # weights only: no training data, teacher or calibration data
    search_space = {"threshold": (1e-3, 1e-2)}  # what 'benchsuite optimise' may try: the default and 10x it

    def compress(self, model: torch.nn.Module, *, context) -> torch.nn.Module:
        encoder = getattr(model, "base_model", model)
        with torch.no_grad():
            for module in encoder.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.masked_fill_(module.weight.abs() < self.config.threshold, 0.0)
        return model
