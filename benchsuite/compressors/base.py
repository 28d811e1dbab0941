"""The compressor contract: a typed config, declared needs, and one ``compress`` verb.

A compressor turns the task's fine-tuned model (the baseline, also the teacher) into a
smaller or faster one. Its config is a frozen dataclass that validates itself,
serialises to JSON with its name and version, and hashes stably; the hash names the
result record. A compressor declares what else it needs (``NEEDS``) and receives
exactly that in its :class:`CompressionContext`; asking for anything undeclared fails.

A complete plugin, registered in its package's ``pyproject.toml`` under
``[project.entry-points."benchsuite.compressors"]`` as ``zero_small = "my_pkg:ZeroSmall"``
(``examples/benchsuite-zero-small`` is this plugin as an installable package, with tests)::

    import math
    from dataclasses import dataclass

    import torch
    from benchsuite.compressors.base import Compressor, CompressorConfig

    @dataclass(frozen=True)
    class ZeroSmallConfig(CompressorConfig):
        threshold: float = 1e-3

        def validate(self) -> None:
            if not (math.isfinite(self.threshold) and self.threshold >= 0):
                raise ValueError(f"threshold must be finite and >= 0, got {self.threshold}")

    class ZeroSmall(Compressor):
        name = "zero_small"
        config_class = ZeroSmallConfig
        NEEDS = frozenset()            # or {"train_data", "teacher", "teacher_outputs", "calibration_data"}

        def compress(self, model, *, context):
            with torch.no_grad():
                for module in model.base_model.modules():
                    if isinstance(module, torch.nn.Linear):
                        module.weight[module.weight.abs() < self.config.threshold] = 0
            return model

Randomness must come from ``context.seed`` (the runner also seeds torch with it before each
cell), so that a compressor is deterministic for a seed. ``save``/``load`` default to
safetensors through ``save_pretrained``; a method with its own format overrides both.

``benchsuite run --compressors zero_small`` then scores it on every task.
"""

from __future__ import annotations

import hashlib
import json
import typing
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from benchsuite.compressors.options import coerce
from benchsuite.models import load_saved

NEED_NAMES = frozenset({"train_data", "teacher", "teacher_outputs", "calibration_data"})


@dataclass(frozen=True)
class CompressorConfig:
    """Base of every compressor config: subclass it as a frozen dataclass with defaults."""

    version: ClassVar[int] = 1  # bump when a field's meaning changes, so old results stop matching

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad field, its value and what is allowed."""

    def to_json(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "version": self.version, "params": asdict(self)}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CompressorConfig:
        """Build from JSON-like values, each parsed to its field's type or refused with an :class:`OptionError`
        naming the option, the value and what is allowed: a bool field takes only true/false, an int field an
        integer (4.0 reads as 4, 4.5 is refused), a float field a finite number (1 reads as 1.0, so that equal
        configs hash equally however they were written), a str field only a string, ``X | None`` null or X,
        ``tuple[X, ...]`` a list of X. Fields of other types take the value as it is."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: coerce(k, v, hints.get(k, Any), cls.__name__) for k, v in params.items()})

    def config_hash(self) -> str:
        """12 hex digits of sha256 over the canonical JSON: stable across runs and machines."""
        payload = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


class CompressionContext:
    """What a compressor may use besides the model; only declared needs are reachable."""

    def __init__(self, *, needs: frozenset[str], task, tokenizer, seed: int, providers: dict[str, Any],
                 train_config=None):
        self._needs = needs
        self._providers = providers
        self.task = task  # the TaskSpec
        self.tokenizer = tokenizer
        self.seed = seed
        self.train_config = train_config  # the baseline's TrainConfig (the preset's epochs applied)

    def _get(self, need: str):
        if need not in self._needs:
            raise PermissionError(f"the compressor did not declare {need!r} in NEEDS; add it to use it")
        value = self._providers[need]
        return value() if callable(value) else value

    @property
    def train_data(self) -> list[dict]:
        """Training features of the task (token ids plus labels), as the baseline was trained on."""
        return self._get("train_data")

    @property
    def teacher(self) -> torch.nn.Module:
        """The fine-tuned, uncompressed model (a separate copy: do not modify it)."""
        return self._get("teacher")

    @property
    def teacher_outputs(self):
        """The teacher's outputs on ``train_data``, row for row (a cached
        :class:`benchsuite.distillation.teacher.TeacherOutputs`)."""
        return self._get("teacher_outputs")

    @property
    def calibration_data(self) -> list[dict]:
        """The task's training features without labels (model inputs only), in order: take the ones
        you need with :meth:`calibration_examples`."""
        return self._get("calibration_data")

    def calibration_examples(self, count: int, *, option: str) -> list[dict]:
        """The first ``count`` calibration inputs, exactly: when the task's training data has fewer, a
        ValueError names ``option`` (the config field that asked) and how many there are, instead of
        silently calibrating on fewer than the config (and its record) says."""
        return take_exactly(self.calibration_data, count, option=option, what="calibration inputs")


def take_exactly(items: list, count: int, *, option: str, what: str) -> list:
    """``items[:count]``, refusing when there are fewer than ``count``."""
    if len(items) < count:
        raise ValueError(f"{option}={count} asks for {count} {what}, but the task's training data gives only "
                         f"{len(items)} under this preset; set {option}={len(items)} or less, or use more "
                         f"training data")
    return items[:count]


class Compressor(ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[CompressorConfig]]
    NEEDS: ClassVar[frozenset[str]] = frozenset()
    # Task kinds it handles; None means every kind.
    supported_kinds: ClassVar[frozenset[str] | None] = None

    def __init__(self, config: CompressorConfig | None = None):
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name} takes a {self.config_class.__name__}, got {type(config).__name__}")
        unknown = set(self.NEEDS) - NEED_NAMES
        if unknown:
            raise TypeError(f"{self.name} declares unknown needs {sorted(unknown)}; known: {sorted(NEED_NAMES)}")
        self.config = config

    @abstractmethod
    def compress(self, model: torch.nn.Module, *, context: CompressionContext) -> torch.nn.Module:
        """Return the compressed model (it may be ``model`` changed in place)."""

    #: The arithmetic of the compressed model's matmuls: "fp32", "int8", "fp16" or "bf16". The record's
    #: efficiency section compares achieved operations per second with the machine's peak for it.
    compute: ClassVar[str] = "fp32"

    #: What ``save`` writes, as the record names it.
    save_format: ClassVar[str] = "safetensors"

    #: The family the report groups it in (its best configuration, its colour in the plots):
    #: "quantisation", "distillation", "pruning", "sharing", "baseline", or a plugin's own.
    family: ClassVar[str] = "other"

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        """Write the compressed model in the method's real format; its size on disk is measured on it."""
        model.save_pretrained(folder, safe_serialization=True)

    @classmethod
    def load(cls, folder: Path) -> torch.nn.Module:
        """Rebuild a saved model (in a fresh process, where its memory is measured)."""
        return load_saved(folder)

    def describe(self) -> dict[str, Any]:
        defaults = self.config_class()
        changed = {f.name: getattr(self.config, f.name) for f in fields(self.config)
                   if getattr(self.config, f.name) != getattr(defaults, f.name)}
        return {"name": self.name, "config": self.config.to_json(), "config_hash": self.config.config_hash(),
                "changed": json.loads(json.dumps(changed))}
