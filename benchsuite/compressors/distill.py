"""``distill``: a shallower student initialised from the teacher's layers and trained to mimic it.

The student keeps ``layers`` of the teacher's encoder layers (every other one by default,
DistilBERT's initialisation: layers 0, 2, 4 of 6), its embeddings and task head, and is then
trained on the task's training data with the distillation loss of
:mod:`benchsuite.distillation.recovery` (soft targets from the teacher's cached outputs, plus
the hard labels; optionally hidden-state and attention matching, student layer j matched to
teacher layer ``round((j + 1) * teacher / student)``). ``alpha=0`` is the ablation: the same
student on hard labels alone. Narrower students (a smaller hidden size) are not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from benchsuite.compressors.base import CompressionResult, Compressor
from benchsuite.compressors.layers import encoder_layers, set_layers
from benchsuite.compressors.retrain import ReshapeAndRecover
from benchsuite.distillation.recovery import RecoveryConfig


@dataclass(frozen=True)
class DistillConfig(RecoveryConfig):
    layers: int | None = None  # None: every other layer (half the teacher's depth, rounded up)
    keep: tuple[int, ...] = ()  # teacher layers that initialise the student; (): evenly spaced from layer 0

    def validate(self) -> None:
        super().validate()
        if self.layers is not None and self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.keep and ((self.layers is not None and len(self.keep) != self.layers)
                          or len(set(self.keep)) != len(self.keep) or min(self.keep) < 0):
            raise ValueError(f"keep must list distinct teacher layers (0-based), one per student layer, "
                             f"got {list(self.keep)}")


class Distill(ReshapeAndRecover):
    family = "distillation"
    name = "distill"
    config_class = DistillConfig
    search_space = {"layers": (2, 3, 4)}  # the student's depth: the size/accuracy trade
    # The student is a plain checkpoint of the shallower config: saved and loaded with save_pretrained.
    save_format = "safetensors"

    def save(self, result: CompressionResult, folder: Path) -> None:
        Compressor.save(self, result, folder)

    @classmethod
    def load(cls, folder: Path) -> torch.nn.Module:
        return Compressor.load.__func__(cls, folder)

    def reshape(self, model: torch.nn.Module, *, context) -> dict:
        layers = encoder_layers(model)
        depth = len(layers)
        count = self.config.layers or len(self.config.keep) or (depth + 1) // 2
        if count > depth:
            raise ValueError(f"the teacher has {depth} layers; a student cannot keep {count}: choose layers <= {depth}")
        keep = list(self.config.keep) or [i * depth // count for i in range(count)]
        if max(keep) >= depth:
            raise ValueError(f"the teacher has layers 0..{depth - 1}; cannot keep {keep}")
        set_layers(model, [layers[i] for i in keep])
        return {"kept_layers": keep, "teacher_layers": depth}

    def recovery_description(self, layout: dict) -> str:
        return f"distilling a {len(layout['kept_layers'])}-layer student"

    def restructure(self, model: torch.nn.Module, layout: dict) -> torch.nn.Module:
        """Keep the layout's layers of a skeleton of the teacher's depth; a skeleton built from the student's
        own config already has its depth and is left as it is."""
        layers, keep = encoder_layers(model), layout["kept_layers"]
        if len(layers) == layout["teacher_layers"]:
            set_layers(model, [layers[i] for i in keep])
        elif len(layers) != len(keep):
            raise ValueError(f"a {len(layers)}-layer skeleton is neither the {layout['teacher_layers']}-layer teacher "
                             f"nor the {len(keep)}-layer student of this layout")
        return model
