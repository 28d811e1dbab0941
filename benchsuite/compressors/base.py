"""The compressor contract: a typed config, declared needs, and one ``compress`` verb.

A compressor turns the task's fine-tuned model (the baseline, also the teacher) into a
smaller or faster one. Its config is a frozen dataclass that validates itself,
serialises to JSON with its name and version, and hashes stably; the hash names the
result record. A compressor declares what else it needs (``NEEDS``, names from the
table :data:`NEEDS_TABLE`) and receives exactly that in its :class:`CompressionContext`;
asking for anything undeclared fails.

What a compressor is given and gives back:

* ``model`` is the task's fine-tuned model, a ``transformers`` ``PreTrainedModel`` with its
  task head (``BertForSequenceClassification``, ``...ForQuestionAnswering`` or
  ``...ForTokenClassification`` for the reference model), fp32, in eval mode, on the CPU. It is
  the compressor's own copy: change it in place or build another. Its transformer body is
  ``model.base_model``, its word embeddings ``model.get_input_embeddings()``. In a pipeline
  (``distill:layers=3+dynamic_int8``) a later stage gets the previous stage's model instead.
* ``supported_kinds``: ``None`` (every kind) or a set of the task kinds ``"classification"``
  (GLUE, regression included), ``"extractive_qa"`` (SQuAD) and ``"token_classification"``
  (CoNLL-2003).
* ``context.train_data``: the preset's budget of training *features*, each a dict of lists
  (``input_ids``, ``attention_mask``, ``token_type_ids`` when the model has them, and the
  labels: ``labels`` for classification and tagging, ``start_positions``/``end_positions`` for
  QA), as the baseline was trained on. ``context.task_rows()`` gives the same training rows as
  raw text (a ``datasets.Dataset`` with the task's own columns), for a method that needs the
  words themselves, such as one that changes the vocabulary.
* ``compress`` returns a :class:`CompressionResult`: the model, its ``layout`` (JSON-able
  structural choices made from data, which ``save`` writes and ``load`` needs), ``recovery``
  (what recovery training did, as facts: steps, seconds, final loss) and, for a method that
  changes the vocabulary, the ``tokenizer`` that goes with the model. A returned tokenizer is
  saved with the model (so it counts in the size on disk) and tokenises the evaluation and
  measurement inputs. Compressors record facts; only the report writes prose. Keep no state on
  the compressor instance: one instance serves every task of a run.

A complete plugin, registered in its package's ``pyproject.toml`` under
``[project.entry-points."benchsuite.compressors"]`` as ``zero_small = "my_pkg:ZeroSmall"``
(``examples/benchsuite-zero-small`` is this plugin as an installable package, with tests)::

    import math
    from dataclasses import dataclass

    import torch
    from benchsuite.compressors.base import CompressionResult, Compressor, CompressorConfig

    @dataclass(frozen=True)
    class ZeroSmallConfig(CompressorConfig):
        threshold: float = 1e-3

        def validate(self) -> None:
            if not (math.isfinite(self.threshold) and self.threshold >= 0):
                raise ValueError(f"threshold must be finite and >= 0, got {self.threshold}")

    class ZeroSmall(Compressor):
        name = "zero_small"
        config_class = ZeroSmallConfig
        NEEDS = frozenset()            # or any of NEEDS_TABLE: {"train_data", "teacher", ...}
        search_space = {"threshold": (1e-3, 1e-2)}  # what 'benchsuite optimise' may try

        def compress(self, model, *, context):
            zeroed = 0
            with torch.no_grad():
                for module in model.base_model.modules():
                    if isinstance(module, torch.nn.Linear):
                        small = module.weight.abs() < self.config.threshold
                        zeroed += int(small.sum())
                        module.weight[small] = 0
            return CompressionResult(model, layout={"zeroed": zeroed})

Randomness must come from ``context.seed`` (the runner also seeds torch with it before each
cell), so that a compressor is deterministic for a seed. ``save``/``load`` default to
safetensors through ``save_pretrained`` (plus the tokenizer, when one was returned); a
method with its own format overrides both. A compressor whose model is not an fp32
PyTorch model that training can continue from (int8 kernels, ONNX, fp16) sets
``trainable_output = False``, and a pipeline refuses any stage after it. A compressor that
needs an optional package names it in ``requires`` (import names) and ``install_hint``; it
is then listed as unavailable, refused by ``run`` and skipped by the conformance tests, with
that hint, where the package is missing. ``search_space`` names a few values of each option
that ``benchsuite optimise`` may try (options not named keep their defaults; ``{}``: the
defaults only; ``None``, the default: not searched); the optimiser searches pipelines of the
compressors that declare one.

``benchsuite run --compressors zero_small`` then scores it on every task.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from benchsuite.canonical import canonical_json
from benchsuite.compressors.options import coerce
from benchsuite.models import load_saved

#: Every need a compressor may declare, with what it provides: the one table that the runner (which
#: provides them), the context (which guards them) and the conformance tests (which check them) read.
NEEDS_TABLE: dict[str, str] = {
    "train_data": "the preset's training features of the task (token ids, attention mask, labels), as the "
                  "baseline was trained on",
    "task_rows": "the same training rows as raw text: the task's own columns, before tokenisation",
    "teacher": "the fine-tuned, uncompressed model (a separate copy: do not modify it)",
    "teacher_outputs": "the teacher's outputs (logits) on train_data, row for row, cached",
    "calibration_data": "the training features without labels (model inputs only), in order",
    "pretrained": "the model the baseline was fine-tuned from, its task head freshly initialised as the baseline's "
                  "was (same seed): a separate copy",
    "transfer_data": "other tasks' training rows read as this task's inputs, without labels (a transfer set), "
                     "after train_data, with the teacher's outputs on all of them, cached: transfer_data(names)",
}
NEED_NAMES = frozenset(NEEDS_TABLE)


@dataclass
class CompressionResult:
    """What ``compress`` hands back: the model and the facts the record keeps about it."""

    model: torch.nn.Module
    layout: dict[str, Any] | None = None  # structural choices made from data; saved with the model, read by load
    recovery: dict[str, Any] | None = None  # what recovery training did (steps, seconds, loss...)
    tokenizer: Any = None  # a changed tokenizer that goes with the model; None: the task's own


def as_result(returned: Any, compressor: Compressor) -> CompressionResult:
    """``compress``'s return value as a :class:`CompressionResult` (a bare model is one with no facts)."""
    if isinstance(returned, CompressionResult):
        return returned
    if isinstance(returned, torch.nn.Module):
        return CompressionResult(returned)
    raise TypeError(f"{compressor.name}.compress returned {type(returned).__name__}; it must return a "
                    "CompressionResult (or the model alone)")


@dataclass(frozen=True)
class CompressorConfig:
    """Base of every compressor config: subclass it as a frozen dataclass with defaults."""

    version: ClassVar[int] = 1  # bump when a field's meaning changes, so old results stop matching
    # Options added after records of the config existed: left out of the JSON (so of the hash) while at their
    # default (:func:`benchsuite.canonical.canonical_json`).
    LATE_OPTIONS: ClassVar[tuple[str, ...]] = ()
    # Options whose default changed after records of the config existed, each with the default it had. A record's
    # ``changed`` (so its label) lists such an option whenever it differs from either default, so a label written
    # before the change and one written after never name two configs alike.
    FORMER_DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad field, its value and what is allowed."""

    def to_json(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "version": self.version, "params": canonical_json(self)}

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
                 train_config=None, prefix_cache=None, on_stage=None, learning_curve=None):
        self._needs = needs
        self._providers = providers
        self.task = task  # the TaskSpec
        self.tokenizer = tokenizer
        self.seed = seed
        self.train_config = train_config  # the baseline's TrainConfig (the preset's epochs applied)
        self.prefix_cache = prefix_cache  # a pipeline's cache of trained prefixes (the runner's), or None
        # called by a pipeline after each stage but the last, as on_stage(stages_done, model); it may raise to stop
        # the cell there (the optimiser checks a prefix on an evaluation slice), or None
        self.on_stage = on_stage
        # learning_curve(model, n_features, train_config) -> (checkpoint_steps, checkpoint) for
        # benchsuite.train.fine_tune: where and how recovery training scores the task's dev rows (the same
        # half-epoch curve as the baseline's); None where the task holds no dev rows out
        self.learning_curve = learning_curve

    def restricted(self, needs: frozenset[str]) -> CompressionContext:
        """The same context, with only ``needs`` reachable (a pipeline stage sees what it declared)."""
        return CompressionContext(needs=frozenset(needs) & self._needs, task=self.task, tokenizer=self.tokenizer,
                                  seed=self.seed, providers=self._providers, train_config=self.train_config,
                                  prefix_cache=self.prefix_cache, on_stage=self.on_stage,
                                  learning_curve=self.learning_curve)

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
    def task_rows(self):
        """The training rows of ``train_data`` as raw text: a ``datasets.Dataset`` with the task's columns."""
        return self._get("task_rows")

    @property
    def pretrained(self) -> torch.nn.Module:
        """The model the baseline was fine-tuned from, with a fresh task head (a separate copy)."""
        return self._get("pretrained")

    @property
    def transfer_data(self) -> Callable[[tuple[str, ...]], Any]:
        """A function of task names: the training features followed by those tasks' training rows as unlabelled
        inputs, with the teacher's outputs on all of them (a :class:`benchsuite.distillation.transfer.TransferData`)."""
        return self._get("transfer_data")

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
    #: Import names of optional packages it needs, and how to install them: missing, it is unavailable.
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    #: False when its model is not an fp32 PyTorch model that training can continue from (int8 kernels, ONNX,
    #: a half-precision cast): a pipeline refuses any stage after it.
    trainable_output: ClassVar[bool] = True
    #: The stages it is meant to follow, as a pipeline spec, when it needs a prepared model rather than the
    #: fine-tuned one (``csr`` runs the zeros that pruning left: ``"magnitude:epochs=0"``); the conformance tests
    #: run it after them. None: it takes the fine-tuned model as it is.
    follows: ClassVar[str | None] = None
    config_class: ClassVar[type[CompressorConfig]]
    NEEDS: ClassVar[frozenset[str]] = frozenset()
    # Task kinds it handles; None means every kind.
    supported_kinds: ClassVar[frozenset[str] | None] = None
    #: What ``benchsuite optimise`` may try: a few values of each option that matters, e.g.
    #: ``{"layers": (2, 3, 4)}``; options not named keep their defaults; ``{}``: the defaults only; None (the
    #: default): not searched. Every value must be valid for its config field (the conformance tests build each).
    search_space: ClassVar[dict[str, tuple] | None] = None

    def __init__(self, config: CompressorConfig | None = None):
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name} takes a {self.config_class.__name__}, got {type(config).__name__}")
        unknown = set(self.NEEDS) - NEED_NAMES
        if unknown:
            raise TypeError(f"{self.name} declares unknown needs {sorted(unknown)}; known: {sorted(NEED_NAMES)}")
        self.config = config

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why it cannot run here (a missing optional package, with the fix), or None."""
        missing = [name for name in cls.requires if importlib.util.find_spec(name) is None]
        if not missing:
            return None
        return f"needs {', '.join(missing)}" + (f": {cls.install_hint}" if cls.install_hint else "")

    def refusal(self) -> str | None:
        """Why this configuration cannot run on this machine (8-bit activations on a CPU without VNNI), or None:
        ``benchsuite optimise`` asks before any work; ``compress`` raises with the same words."""
        return None

    @abstractmethod
    def compress(self, model: torch.nn.Module, *, context: CompressionContext) -> CompressionResult:
        """Return the compressed model (it may be ``model`` changed in place) with its layout and recovery."""

    #: The arithmetic of the compressed model's matmuls: "fp32", "int8", "fp16" or "bf16". The record's
    #: efficiency section compares achieved operations per second with the machine's peak for it.
    compute: ClassVar[str] = "fp32"

    #: What ``save`` writes, as the record names it.
    save_format: ClassVar[str] = "safetensors"

    #: The family the report groups it in (its best configuration, its colour in the plots):
    #: "quantisation", "distillation", "pruning", "sharing", "baseline", or a plugin's own.
    family: ClassVar[str] = "other"

    def save(self, result: CompressionResult, folder: Path) -> None:
        """Write the compressed model (and its tokenizer, if it returned one) in the method's real format; its
        size on disk is measured on the folder."""
        result.model.save_pretrained(folder, safe_serialization=True)
        save_tokenizer(result, folder)

    @classmethod
    def load(cls, folder: Path) -> torch.nn.Module:
        """Rebuild a saved model (in a fresh process, where its memory is measured)."""
        return load_saved(folder)

    def describe(self) -> dict[str, Any]:
        defaults, former = self.config_class(), self.config_class.FORMER_DEFAULTS
        changed = {f.name: getattr(self.config, f.name) for f in fields(self.config)
                   if getattr(self.config, f.name) != getattr(defaults, f.name)
                   or (f.name in former and getattr(self.config, f.name) != former[f.name])}
        return {"name": self.name, "config": self.config.to_json(), "config_hash": self.config.config_hash(),
                "changed": json.loads(json.dumps(changed))}


def save_tokenizer(result: CompressionResult, folder: Path) -> None:
    """A returned tokenizer goes beside the model, so it is counted in the size and loads with it."""
    if result.tokenizer is not None:
        result.tokenizer.save_pretrained(folder)
