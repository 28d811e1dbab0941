"""Compressors used by the tests, registered through the real entry-point machinery."""

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchsuite.compressors.base import CompressionResult, Compressor, CompressorConfig


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


def _zero_half(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                w[w.abs() < w.abs().median()] = 0
    return model


class ZeroHalf(Compressor):
    """Zeroes the smaller half of every Linear weight, and asks for calibration data it checks."""

    name = "zero_half"
    config_class = ScaleConfig
    NEEDS = frozenset({"calibration_data"})

    def compress(self, model, *, context):
        assert len(context.calibration_data) > 0
        return _zero_half(model)


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
    search_space = {"seconds": (0.0,), "tag": (1, 2, 3)}  # a plugin's own space (tests/test_optimise.py)

    def compress(self, model, *, context):
        time.sleep(self.config.seconds)
        return model


class Slow(Sleepy):
    """Ten minutes of nothing: a candidate only a budget can stop."""

    name = "slow"
    search_space = {"seconds": (600.0,)}


# Deliberately broken compressors: each breaks one conformance check (tests/conformance_checks.py) and no
# other, and tests/test_conformance_teeth.py shows that check failing on it. They are registered only by the
# ``plugins`` fixture, for one test, so the conformance parametrization (read at collection) never lists them.


class StaleSave(Compressor):
    """Breaks the reload check (exact, fp32): prunes the model it returns, but saves the model it was given."""

    name = "stale_save"
    config_class = ScaleConfig

    def compress(self, model, *, context):
        self._original = copy.deepcopy(model)
        return _zero_half(model)

    def save(self, result, folder: Path) -> None:
        self._original.save_pretrained(folder, safe_serialization=True)


class HalfSavesFloat(Compressor):
    """Breaks the reload check within the quantised tolerance: runs in fp16, but saves the fp32 model it came
    from, so the reloaded model lacks exactly the fp16 rounding (the smallest wrong model measured: 9e-4 of
    the output scale on the tiny model's QA head, 5e-3 on its classifier)."""

    name = "half_saves_float"
    config_class = ScaleConfig
    compute = "fp16"

    def compress(self, model, *, context):
        self._source = copy.deepcopy(model)
        return model.half()

    def save(self, result, folder: Path) -> None:
        self._source.save_pretrained(folder, safe_serialization=True)


class DoubleSave(Compressor):
    """Breaks the not-larger-on-disk check: saves its (unchanged) model twice, safetensors plus a stray
    ``pytorch_model.bin``, so its saved weight files are twice the baseline's; loading reads the safetensors."""

    name = "double_save"
    config_class = ScaleConfig

    def compress(self, model, *, context):
        return model

    def save(self, result, folder: Path) -> None:
        super().save(result, folder)
        torch.save(result.model.state_dict(), Path(folder) / "pytorch_model.bin")


class Unseeded(Compressor):
    """Breaks the determinism check: jitters the Linear biases from a generator seeded by the OS, not by
    ``context.seed`` (numpy's, which the runner's ``torch.manual_seed`` does not reach)."""

    name = "unseeded"
    config_class = ScaleConfig

    def compress(self, model, *, context):
        rng = np.random.default_rng()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear) and module.bias is not None:
                    module.bias += torch.from_numpy(rng.normal(0, 1e-2, module.bias.shape).astype(np.float32))
        return model


class Stateful(Compressor):
    """Breaks the stateless check: keeps its layout on the instance (shared by every task of a run) instead of
    returning it in the CompressionResult."""

    name = "stateful"
    config_class = ScaleConfig

    def compress(self, model, *, context):
        self.layout = {"layers": model.config.num_hidden_layers}
        return model


class OwnTokenizer(Compressor):
    """Returns a tokenizer with its (unchanged) model, as a vocabulary-trimming method would."""

    name = "own_tokenizer"
    config_class = ScaleConfig

    def compress(self, model, *, context):
        return CompressionResult(model, tokenizer=copy.deepcopy(context.tokenizer))


@dataclass(frozen=True)
class CountConfig(CompressorConfig):
    count: int = 1


class CountsCalibration(Compressor):
    """Asks for ``count`` calibration inputs and records how many it was given (the runner must not cut them)."""

    name = "counts_calibration"
    config_class = CountConfig
    NEEDS = frozenset({"calibration_data"})

    def compress(self, model, *, context):
        given = context.calibration_examples(self.config.count, option="count")
        return CompressionResult(model, layout={"calibration_inputs": len(given)})


# name -> entry-point value, registered by the ``plugins`` fixture and by ``tests.plugin_cli``
PLUGINS = {"raising": "tests.plugins:Raising", "zero_half": "tests.plugins:ZeroHalf",
           "greedy": "tests.plugins:Greedy", "sleepy": "tests.plugins:Sleepy", "slow": "tests.plugins:Slow",
           "stale_save": "tests.plugins:StaleSave", "half_saves_float": "tests.plugins:HalfSavesFloat",
           "double_save": "tests.plugins:DoubleSave", "unseeded": "tests.plugins:Unseeded",
           "stateful": "tests.plugins:Stateful", "own_tokenizer": "tests.plugins:OwnTokenizer",
           "counts_calibration": "tests.plugins:CountsCalibration"}


def register(registry_module) -> None:
    """Add PLUGINS to the entry points the registry reads (a monkeypatch for this process)."""
    from importlib.metadata import EntryPoint  # noqa: PLC0415

    real = registry_module.entry_points

    def patched(*, group):
        return list(real(group=group)) + [EntryPoint(n, v, group) for n, v in PLUGINS.items()]

    registry_module.entry_points = patched
