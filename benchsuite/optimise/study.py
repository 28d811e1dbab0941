"""The optimiser's own record: one study file per search, beside the task's cell records.

A study is named by what decides its answer: the preset, task, model weights, seed, machine (CPU,
vector extensions, threads), the bound, the objective, the slice used for early stopping and the
largest number of stages. ``benchsuite optimise`` run again with the same settings opens the same
file and continues: every candidate it already tried is known (and fed to the sampler), so none is
computed twice. The file lists every candidate tried, whatever became of it, with the seconds it
took; a candidate that was scored in full also has its cell record (its path is kept here), which
the report reads like any other. Written atomically after every candidate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from benchsuite.fileio import write_text_atomic
from benchsuite.records import STUDY_SUFFIX

STUDY_SCHEMA = 1
SUFFIX = STUDY_SUFFIX  # the report reads these files as studies, never as cell records

# measured: scored on the full evaluation split and measured (a cell record); stopped: its retention on the
# slice was below the bound beyond noise (upper end of the paired 95% interval), or a prefix's was;
# failed: the compressor raised; over_budget: the budget ran out while it was computed
Status = Literal["measured", "stopped", "failed", "over_budget"]
Objective = Literal["speed", "size"]


@dataclass(frozen=True)
class StudyKey:
    preset: str
    task: str
    model: str
    model_weights_sha256: str
    seed: int
    machine: dict[str, Any]  # the cell key's MachineKey: cpu, cpu_vector_flags, torch_threads
    min_retention: float  # a fraction: 0.99 keeps 99% of the baseline's score
    objective: Objective
    slice_examples: int
    max_stages: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SliceCheck:
    """The early-stopping check: paired retention on a seeded slice of the evaluation split."""

    examples: int
    checked: str  # the spec of the model checked (the candidate, or the prefix that was stopped)
    retention: float | None  # percent; None when the baseline scores 0 on the slice
    ci_low: float | None
    ci_high: float | None


@dataclass
class CandidateResult:
    number: int  # in the study, over every run
    run: int  # which run of the study tried it (0, 1, ...)
    spec: str  # as --compressors takes it; "baseline" for no stage
    params: dict[str, Any]  # the Optuna parameters that name it
    status: Status
    reason: str | None = None
    record: str | None = None  # the cell record, relative to the results folder (measured only)
    reused_record: bool = False  # that record existed already: nothing was recomputed
    slice: SliceCheck | None = None
    retention: float | None = None  # percent, full evaluation split
    retention_ci_low: float | None = None  # paired 95% bootstrap against the baseline
    retention_ci_high: float | None = None
    speedup: float | None = None  # batch 32, median
    compression: float | None = None  # baseline file size over this one
    meets_bound: bool | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # compress, slice, score_and_measure, total

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CandidateResult:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("slice") is not None:
            values["slice"] = SliceCheck(**values["slice"])
        return cls(**values)


@dataclass
class RunInfo:
    started: str  # ISO time, UTC
    budget_seconds: float
    seconds: float  # wall time this run used
    stopped_because: str
    commit: str | None
    dirty: bool | None
    left_out: dict[str, str] = field(default_factory=dict)  # declared option values this machine refuses: why


@dataclass
class Study:
    key: StudyKey
    candidates: list[CandidateResult] = field(default_factory=list)
    runs: list[RunInfo] = field(default_factory=list)
    schema_version: int = STUDY_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "kind": "benchsuite optimise study",
                "digest": self.key.digest(), "key": asdict(self.key), "runs": [asdict(r) for r in self.runs],
                "candidates": [asdict(c) for c in self.candidates]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Study:
        if data.get("schema_version") != STUDY_SCHEMA:
            raise ValueError(f"study schema {data.get('schema_version')!r}, this install reads {STUDY_SCHEMA}")
        return cls(key=StudyKey(**data["key"]), candidates=[CandidateResult.from_json(c) for c in data["candidates"]],
                   runs=[RunInfo(**r) for r in data["runs"]])

    def find(self, spec: str, run: int) -> CandidateResult | None:
        """The last result for ``spec`` that decides it in run ``run`` (:func:`decides`)."""
        for candidate in reversed(self.candidates):
            if candidate.spec == spec and decides(candidate, run):
                return candidate
        return None

    def stopped_prefix(self, prefixes: list[str]) -> CandidateResult | None:
        """A candidate stopped on the slice whose checked model is one of these prefixes."""
        for candidate in self.candidates:
            if candidate.status == "stopped" and candidate.slice is not None and candidate.slice.checked in prefixes:
                return candidate
        return None


def chosen(study: Study) -> CandidateResult | None:
    """The measured candidate with the best objective among those that meet the bound on the full evaluation
    split (its point retention), ties to the higher retention; None when none does."""
    meeting = [c for c in study.candidates if c.status == "measured" and c.meets_bound and c.spec != "baseline"]
    value = "speedup" if study.key.objective == "speed" else "compression"
    scored = [c for c in meeting if getattr(c, value) is not None]
    if not scored:
        return None
    return max(scored, key=lambda c: (getattr(c, value), c.retention or 0.0, -c.number))


def decides(candidate: CandidateResult, run: int) -> bool:
    """Is ``candidate`` settled for run ``run``? Measured and stopped ones are; one cut short by the budget is
    not; a failure is settled within its own run, and retried by a later one (the code may have been fixed)."""
    if candidate.status == "failed":
        return candidate.run == run
    return candidate.status != "over_budget"


def study_path(results_dir: Path, key: StudyKey, model_slug: str) -> Path:
    return results_dir / key.preset / key.task / model_slug / f"optimise-{key.objective}-{key.digest()}{SUFFIX}"


def read_study(path: Path) -> Study:
    try:
        return Study.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable study file ({type(exc).__name__}: {exc}); move it away to start "
                         f"the search afresh") from None


def write_study(path: Path, study: Study) -> None:
    write_text_atomic(path, json.dumps(study.to_json(), indent=2, allow_nan=False) + "\n")
