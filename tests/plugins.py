"""Compressors used by the tests, registered through the real entry-point machinery."""

import time
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


@dataclass(frozen=True)
class SleepyConfig(CompressorConfig):
    seconds: float = 1.5
    tag: int = 0  # distinct tags make distinct cells

    def validate(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {self.seconds}")


class Sleepy(Compressor):
    """Takes its time and changes nothing: for runs that must be interrupted mid-way."""

    name = "sleepy"
    config_class = SleepyConfig

    def compress(self, model, *, context):
        time.sleep(self.config.seconds)
        return model


# name -> entry-point value, registered by the ``plugins`` fixture and by ``tests.plugin_cli``
PLUGINS = {"raising": "tests.plugins:Raising", "zero_half": "tests.plugins:ZeroHalf",
           "greedy": "tests.plugins:Greedy", "sleepy": "tests.plugins:Sleepy"}


def register(registry_module) -> None:
    """Add PLUGINS to the entry points the registry reads (a monkeypatch for this process)."""
    from importlib.metadata import EntryPoint  # noqa: PLC0415

    real = registry_module.entry_points

    def patched(*, group):
        return list(real(group=group)) + [EntryPoint(n, v, group) for n, v in PLUGINS.items()]

    registry_module.entry_points = patched
