"""Presets: which tasks a plain ``benchsuite run`` scores, and on how much data.

``quick`` (the default) is sized to finish in about 20 minutes on 2 CPU cores from a
cold cache, with slices large enough for meaningful scores; ``full`` uses all data and
the spec's own epochs; ``smoke`` is a few dozen examples, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchsuite.errors import UsageError


@dataclass(frozen=True)
class Budget:
    max_train: int | None = None  # None: every row
    max_eval: int | None = None
    epochs: float | None = None  # None: the spec's train.epochs


@dataclass(frozen=True)
class Preset:
    name: str
    tasks: tuple[str, ...]
    budgets: dict[str, Budget] = field(default_factory=dict)
    default: Budget = Budget()

    def budget(self, task: str) -> Budget:
        return self.budgets.get(task, self.default)

    def limited(self, *, max_train: int | None, max_eval: int | None) -> Preset:
        """This preset with per-task row limits capped; its name says so, so records never mix."""
        if max_train is None and max_eval is None:
            return self
        for flag, value in (("--max-train", max_train), ("--max-eval", max_eval)):
            if value is not None and value < 1:
                raise UsageError(f"{flag} must be >= 1, got {value}")

        def cap(budget: Budget) -> Budget:
            return Budget(max_train=_min(budget.max_train, max_train), max_eval=_min(budget.max_eval, max_eval),
                          epochs=budget.epochs)

        suffix = "".join(f"-{n}{v}" for n, v in (("train", max_train), ("eval", max_eval)) if v is not None)
        return Preset(self.name + suffix, self.tasks, {t: cap(b) for t, b in self.budgets.items()},
                      cap(self.default))


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


CORE_TASKS = ("sst2", "mrpc", "squad", "conll2003")
ALL_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli_mismatched", "qnli", "rte", "wnli",
             "squad", "conll2003")

PRESETS = {
    # smoke: 256 training rows, the most any built-in compressor asks for by default (calibration, importance)
    "smoke": Preset("smoke", CORE_TASKS, default=Budget(max_train=256, max_eval=32, epochs=1)),
    "quick": Preset(
        "quick",
        CORE_TASKS,
        budgets={
            "sst2": Budget(max_train=10_000, epochs=1),
            "mrpc": Budget(epochs=3),
            "squad": Budget(max_eval=1_000, epochs=1),
            "conll2003": Budget(max_train=6_000, epochs=2),
        },
    ),
    "full": Preset("full", ALL_TASKS),
}
DEFAULT_PRESET = "quick"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
