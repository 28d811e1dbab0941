"""Presets: which tasks and compressors a plain ``benchsuite run`` scores, and on how much data.

``quick`` (the default) has slices large enough for meaningful scores; from a cold cache
on 2 CPU cores it took about 25 minutes on an AVX-512 VNNI machine and 50 on an AVX2 one
(fine-tuning is three quarters of it) before SQuAD's baseline grew to 2 epochs on 9,825
questions, whose fine-tuning alone takes 70 to 80 minutes on the AVX2 machine (see the
README). ``full`` uses all data and the spec's own epochs, on
every task file of group ``full``. Both score the baseline and the best int8 configuration
for the CPU unless told otherwise: ``dynamic_int8:reduce_range=false`` on a CPU with VNNI, ``dynamic_int8`` without.
``smoke`` is a few hundred examples and the baseline only, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
    compressors: tuple[str, ...] = ("baseline",)  # what ``--compressors`` defaults to

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
        return replace(self, name=self.name + suffix, budgets={t: cap(b) for t, b in self.budgets.items()},
                       default=cap(self.default))


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


CORE_TASKS = ("sst2", "mrpc", "squad", "conll2003")
# A plain run scores the baseline and the best int8 configuration measured for this CPU
# (reports/quick.md, batch 32, 2 threads): with VNNI, torch.ao dynamic int8 with 8-bit activations
# (2.5-3.6x, 98.8-99.9% retention; the 7-bit default kept 95.6-100.1%); without VNNI, the 7-bit default
# (8 bits would saturate there; 1.4-1.5x, 98.2-100.2% on the GLUE and NER tasks, 95.5% on SQuAD against its
# 2-epoch teacher). "showcase" stands for it in a preset.
SHOWCASE = "showcase"


def showcase(flags: list[str] | None = None) -> tuple[str, ...]:
    """The baseline and the best int8 configuration for a CPU with these vector flags (this one's by default)."""
    from benchsuite.machine import cpu_vector_flags  # noqa: PLC0415

    vnni = {"avx512_vnni", "avx_vnni"} & set(cpu_vector_flags() if flags is None else flags)
    return ("baseline", "dynamic_int8:reduce_range=false" if vnni else "dynamic_int8")


def group_tasks(group: str) -> tuple[str, ...]:
    """The task files whose ``groups:`` list ``group``, by name (the task files are the data)."""
    from benchsuite.tasks import load_task, task_files  # noqa: PLC0415 (spec parsing only when asked)

    names = tuple(name for name in sorted(task_files()) if group in load_task(name).groups)
    if not names:
        raise UsageError(f"no task file lists group {group!r} under 'groups:'; add it to the tasks it should run")
    return names

PRESETS = {
    # smoke: 256 training rows, the most any built-in compressor asks for by default (calibration, importance)
    "smoke": Preset("smoke", CORE_TASKS, default=Budget(max_train=256, max_eval=32, epochs=1)),
    "quick": Preset(
        "quick",
        CORE_TASKS,
        budgets={
            "sst2": Budget(max_train=10_000, epochs=1),
            "mrpc": Budget(epochs=3),
            "squad": Budget(max_eval=1_000),  # the spec's epochs: the full preset reuses this baseline
            "conll2003": Budget(max_train=6_000, epochs=2),
        },
        compressors=(SHOWCASE,),
    ),
    "full": Preset("full", (), compressors=(SHOWCASE,)),  # its tasks: the task files of group "full" (get_preset)
}
DEFAULT_PRESET = "quick"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if not preset.tasks:  # a preset defined by a task group
        preset = replace(preset, tasks=group_tasks(name))
    if SHOWCASE in preset.compressors:
        at = preset.compressors.index(SHOWCASE)
        preset = replace(preset, compressors=preset.compressors[:at] + showcase() + preset.compressors[at + 1:])
    return preset
