"""Compressors used by the tests, registered through the real entry-point machinery."""

from dataclasses import dataclass

import torch

from benchsuite.compressors.base import Compressor, CompressorConfig


@dataclass(frozen=True)
class ScaleConfig(CompressorConfig):
    factor: float = 1.0

    def validate(self) -> None:
        if not 0 <= self.factor <= 1:
            raise ValueError(f"factor must be in [0, 1], got {self.factor}")


class Raising(Compressor):
    name = "raising"
    config_class = ScaleConfig

    def compress(self, model, *, context):
        raise RuntimeError("this compressor always fails")


class ZeroHalf(Compressor):
    """Zeroes the smaller half of every Linear weight, and asks for calibration data it checks."""

    name = "zero_half"
    config_class = ScaleConfig
    NEEDS = frozenset({"calibration_data"})

    def compress(self, model, *, context):
        assert len(context.calibration_data) > 0
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    w = module.weight
                    w[w.abs() < w.abs().median()] = 0
        return model


class Greedy(Compressor):
    """Uses the teacher without declaring it: must be refused."""

    name = "greedy"
    config_class = ScaleConfig

    def compress(self, model, *, context):
        context.teacher  # noqa: B018
        return model
