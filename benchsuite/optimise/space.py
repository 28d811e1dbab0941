"""The space ``benchsuite optimise`` searches: pipelines built from the compressors that declare a
``search_space``, in a fixed order, with each stage's options drawn from its declared values.

A candidate is up to ``max_stages - 1`` stages whose model training can continue from (distillation,
then pruning, then sharing, then any other family; within a family by name), then at most one stage
that can only be last (a quantiser, or a compressor that saves in a format of its own). The empty
candidate is the baseline itself. Optuna sees the structure as conditional categorical choices:
``stage1`` (the first trainable stage, or ``none``), ``after:<name>`` (the next one after ``<name>``,
or ``none``), ``last`` (the final stage, or ``none``), and each chosen stage's options as
``<name>.<option>``. A new plugin joins by declaring ``search_space`` on its class. A declared value
this machine refuses whatever the other options are (``Compressor.refusal``: 8-bit activations on a
CPU without VNNI) is left out, and listed in ``refused``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from benchsuite.compressors.base import Compressor
from benchsuite.compressors.pipeline import Pipeline, replayable, stage_label
from benchsuite.compressors.registry import get_compressor_class, registered
from benchsuite.errors import UsageError

NONE = "none"
FIRST = "stage1"
LAST = "last"
BASELINE = "baseline"
FAMILY_ORDER = {"distillation": 0, "pruning": 1, "sharing": 2}


@dataclass(frozen=True)
class Stage:
    name: str
    options: tuple[tuple[str, Any], ...] = ()  # (option, value), sorted
    cls: type[Compressor] | None = field(default=None, compare=False, repr=False)  # None: look the name up

    def build(self) -> Compressor:
        cls = self.cls or get_compressor_class(self.name)
        return cls(cls.config_class.from_params(dict(self.options)))


@dataclass(frozen=True)
class Candidate:
    """One point of the space: its stages and the Optuna parameters that name it."""

    stages: tuple[Stage, ...]
    params: dict[str, Any]

    def build(self) -> Compressor:
        """The compressor (a pipeline when there are several stages; the baseline when there are none)."""
        if not self.stages:
            return get_compressor_class(BASELINE)()
        built = [stage.build() for stage in self.stages]
        return built[0] if len(built) == 1 else Pipeline(built)

    @functools.cached_property
    def spec(self) -> str:
        """As ``--compressors`` takes it (options at their defaults left out): ``distill:layers=2+dynamic_int8``."""
        compressor = self.build()
        return compressor.spec if isinstance(compressor, Pipeline) else stage_label(compressor)

    @functools.cached_property
    def prefixes(self) -> tuple[str, ...]:
        """The specs of its proper prefixes (its first stage, its first two...), shortest first."""
        return tuple(Candidate(self.stages[:count], {}).spec for count in range(1, len(self.stages)))


class SearchSpace:
    """The candidates for one task kind, from ``pool`` (compressor names; default: every registered compressor
    that declares a ``search_space``, is available here and supports the kind)."""

    def __init__(self, kind: str, *, max_stages: int = 3, pool: Iterable[str] | None = None):
        if max_stages < 1:
            raise UsageError(f"--max-stages must be >= 1, got {max_stages}")
        names = list(pool) if pool is not None else list(registered())
        chosen: dict[str, type[Compressor]] = {}
        for name in names:
            cls = get_compressor_class(name)
            if cls.search_space is None:
                if pool is not None:
                    raise UsageError(f"compressor {name!r} declares no search_space, so optimise cannot search it; "
                                     f"leave it out of --compressors, or declare search_space on its class")
                continue
            if cls.unavailable_reason() is not None:
                if pool is not None:
                    raise UsageError(f"compressor {name!r} is not available here: it {cls.unavailable_reason()}")
                continue
            if cls.supported_kinds is not None and kind not in cls.supported_kinds:
                continue
            chosen[name] = cls
        if not chosen:
            raise UsageError(f"no compressor to search for a {kind} task: none of {sorted(names)} declares a "
                             f"search_space and supports it")
        self.kind = kind
        self.max_stages = max_stages
        self._all: list[Candidate] | None = None
        self.classes = chosen
        self.values, self.refused = {}, {}
        for name, cls in chosen.items():
            self.values[name], refused = _runnable_values(cls)
            self.refused.update({f"{name}:{option}={value}": why for (option, value), why in refused.items()})
        order = sorted(chosen, key=lambda n: (FAMILY_ORDER.get(chosen[n].family, len(FAMILY_ORDER)), n))
        self.trainable = [n for n in order if _can_continue(chosen[n])] if max_stages > 1 else []
        self.terminal = [n for n in order if n not in self.trainable]
        # with one stage, a trainable compressor is only ever last
        if max_stages == 1:
            self.terminal = order

    # --- Optuna ---------------------------------------------------------------------------------------------

    def choices(self, param: str) -> list[Any]:
        """The categorical choices of one Optuna parameter of this space (KeyError when it has none)."""
        if param == FIRST:
            return [NONE, *self.trainable]
        if param == LAST:
            return [NONE, *self.terminal]
        if param.startswith("after:"):
            prev = param.split(":", 1)[1]
            return [NONE, *self.trainable[self.trainable.index(prev) + 1:]]
        name, _, option = param.partition(".")
        return list(self.values[name][option])

    def distributions(self, params: dict[str, Any]):
        """Each parameter's distribution, or None when a parameter or value is not in this space (a study
        file written with another pool)."""
        import optuna  # noqa: PLC0415

        out = {}
        for param, value in params.items():
            try:
                choices = self.choices(param)
            except (KeyError, ValueError):
                return None
            if value not in choices:
                return None
            out[param] = optuna.distributions.CategoricalDistribution(choices)
        return out

    def suggest(self, trial) -> Candidate:
        """Draw a candidate through ``trial`` (an Optuna trial; only ``suggest_categorical`` is used)."""
        names: list[str] = []
        if self.trainable:
            name = trial.suggest_categorical(FIRST, self.choices(FIRST))
            while name != NONE:
                names.append(name)
                if len(names) >= self.max_stages - 1 or len(self.choices(f"after:{name}")) == 1:
                    break
                name = trial.suggest_categorical(f"after:{name}", self.choices(f"after:{name}"))
        last = trial.suggest_categorical(LAST, self.choices(LAST)) if self.terminal else NONE
        if last != NONE:
            names.append(last)
        stages = []
        for name in names:
            options = {option: trial.suggest_categorical(f"{name}.{option}", list(values))
                       for option, values in sorted(self.values[name].items())}
            stages.append(Stage(name, tuple(sorted(options.items())), self.classes[name]))
        return Candidate(tuple(stages), dict(trial.params))

    def seeds(self) -> list[dict[str, Any]]:
        """Parameters to try first, cheapest first: each final-stage compressor alone (options left to the
        sampler). They take seconds where a training stage takes minutes, and start the frontier."""
        start = {FIRST: NONE} if self.trainable else {}
        return [{**start, LAST: name} for name in self.terminal if not _can_continue(self.classes[name])] + \
               [{**start, LAST: name} for name in self.terminal if _can_continue(self.classes[name])]

    def candidates(self) -> list[Candidate]:
        """Every candidate of the space (the baseline included), each once, in a fixed order."""
        if self._all is None:
            found: list[Candidate] = []
            pending: list[dict[str, Any]] = [{}]
            while pending:
                fixed = pending.pop()
                trial = _Branching(fixed)
                try:
                    found.append(self.suggest(trial))
                except _Branch as branch:
                    pending += [{**fixed, branch.name: choice} for choice in reversed(branch.choices)]
            self._all = found
        return self._all

    def size(self) -> int:
        """How many distinct candidates the space holds (the baseline included)."""
        return len(self.candidates())


class _Branch(Exception):  # noqa: N818
    def __init__(self, name: str, choices: list[Any]):
        super().__init__(name)
        self.name, self.choices = name, choices


class _Branching:
    """A stand-in for an Optuna trial that returns fixed choices and branches on the first open one."""

    def __init__(self, fixed: dict[str, Any]):
        self.params = dict(fixed)

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        if name not in self.params:
            raise _Branch(name, choices)
        return self.params[name]


def _runnable_values(cls: type[Compressor]) -> tuple[dict[str, tuple], dict[tuple[str, Any], str]]:
    """The declared values of each option, less those this machine refuses whatever the other options are
    (:meth:`Compressor.refusal`: 8-bit activations without VNNI); and those refused, with the reason."""
    space = cls.search_space or {}
    options = sorted(space)
    combos = [dict(zip(options, values, strict=True)) for values in itertools.product(*(space[o] for o in options))]
    reasons = {}
    for combo in combos:
        reason = cls(cls.config_class.from_params(combo)).refusal()
        if reason is not None:
            reasons[tuple(sorted(combo.items()))] = reason
    kept, refused = {}, {}
    for option in options:
        kept[option] = tuple(v for v in space[option]
                             if not all(tuple(sorted(c.items())) in reasons for c in combos if c[option] == v))
        for value in set(space[option]) - set(kept[option]):
            refused[(option, value)] = next(reasons[tuple(sorted(c.items()))] for c in combos if c[option] == value)
        if not kept[option]:
            raise UsageError(f"{cls.name}: every declared value of {option} is refused on this machine "
                             f"({refused[(option, space[option][0])]}); leave {cls.name} out of --compressors")
    return kept, refused


def _can_continue(cls: type[Compressor]) -> bool:
    """Can a stage follow this one in a pipeline (see :mod:`benchsuite.compressors.pipeline`)?"""
    return cls.trainable_output and replayable(cls())
