"""The result record: one JSON file per cell, a tree of small typed sections.

Layout: ``<results>/<preset>/<task>/<model slug>/<compressor>-<cell key digest>.json`` with the
per-example predictions beside it (``.predictions.jsonl``); the cell key
(:mod:`benchsuite.cellkey`) names everything that decided the result. Files are written to a
temporary name and renamed, so a crash never leaves half a record. Scores are on a 0-100 scale.

Schema 2 (this one) adds the cell key, the compressor's provider package and compute type, and
typed sections. Schema-1 files are upgraded when read (:func:`upgrade`), the way pytest-benchmark
reads its older files; ``benchsuite upgrade`` rewrites them in place under their new names.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchsuite.cellkey import CellKey, key_of_record_json
from benchsuite.fileio import write_text_atomic
from benchsuite.machine import cpu_model, cpu_vector_flags

SCHEMA_VERSION = 2
PACKAGES = ("benchsuite", "torch", "transformers", "datasets", "evaluate", "tokenizers", "numpy", "pandas",
            "onnxruntime")


def _build(cls, data: dict[str, Any]):
    """``cls(**data)``, naming the section and the keys when they do not fit."""
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ValueError(f"{cls.__name__}: {exc}") from None


@dataclass(frozen=True)
class HeldApart:
    """Whole groups (e.g. SQuAD articles) of a split that were taken out of it for another use."""

    split: str
    group_by: str | None
    groups: list[str]  # sorted; empty when rows were held apart one by one (group_by None)
    rows: int
    seed: int


@dataclass(frozen=True)
class SplitInfo:
    """How one split was obtained and which rows of it were used."""

    repo_id: str
    config: str
    split: str
    source: str  # the parquet file, or "hub"
    fingerprint: str  # sha256 of the parquet file, or the datasets fingerprint
    rows_available: int
    rows_used: int
    selection: str  # how rows_used were chosen
    selection_sha256: str  # hash of the chosen row indices
    note: str = ""  # e.g. "mirror holds 4,370 of 87,599 rows" or the fallback used
    # Training rows taken from the eval split (whole groups of it), or a dev set's groups.
    held_apart: HeldApart | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SplitInfo:
        held = data.get("held_apart")
        return _build(cls, {**data, "held_apart": _build(HeldApart, held) if held else None})


@dataclass(frozen=True)
class TaskInfo:
    name: str
    kind: str
    version: int
    spec_digest: str
    primary_metric: str
    source: str  # the YAML file's name


@dataclass(frozen=True)
class ModelInfo:
    name: str
    origin: str
    weights_sha256: str


@dataclass(frozen=True)
class StageInfo:
    """One stage of a pipeline cell: what it is. Its layout and recovery are the pipeline's, stage by stage."""

    name: str
    config: dict[str, Any]  # {"type", "version", "params"}
    config_hash: str
    changed: dict[str, Any]
    provider: str
    family: str
    compute: str


@dataclass(frozen=True)
class CompressorInfo:
    name: str
    config: dict[str, Any]  # {"type", "version", "params"}
    config_hash: str
    changed: dict[str, Any] | None  # the options that differ from the defaults (None: not known)
    provider: str  # the package (and version) that registers it
    compute: str  # arithmetic of its matmuls: fp32, int8, fp16, bf16
    save_format: str
    recovery: dict[str, Any] | None = None  # what recovery training did
    layout: dict[str, Any] | None = None  # structural choices made from data
    family: str | None = None  # the compressor class's family (quantisation, pruning...); None: not recorded
    # A pipeline's stages, in order (its layout and recovery hold theirs under "stages"); None: one compressor.
    stages: list[StageInfo] | None = None

    def stage_recoveries(self) -> list[tuple[str, dict[str, Any] | None]]:
        """(name, recovery) of each stage in order; one compressor is its own single stage."""
        if self.stages is None:
            return [(self.name, self.recovery)]
        return [(stage.get("name", ""), stage.get("recovery")) for stage in (self.recovery or {}).get("stages") or []]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompressorInfo:
        data = dict(data)
        if data.get("stages") is not None:
            data["stages"] = [_build(StageInfo, stage) for stage in data["stages"]]
        return _build(cls, data)


@dataclass(frozen=True)
class DataInfo:
    train: SplitInfo
    eval: SplitInfo
    dev: SplitInfo | None = None  # rows held out of both, scored during the baseline's training

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataInfo:
        unknown = set(data) - {"train", "eval", "dev"}
        if unknown:
            raise ValueError(f"DataInfo: unknown keys {sorted(unknown)}")
        return cls(train=SplitInfo.from_json(data["train"]), eval=SplitInfo.from_json(data["eval"]),
                   dev=SplitInfo.from_json(data["dev"]) if data.get("dev") else None)


@dataclass(frozen=True)
class BaselineInfo:
    cache_key: str
    reused_from_cache: bool
    hyper_parameters: dict[str, Any]
    training: dict[str, Any]


@dataclass(frozen=True)
class Measurements:
    """Each section's dict carries its own ``method`` string (see :mod:`benchsuite.measure`)."""

    footprint: dict[str, Any] | None = None
    footprint_before: dict[str, Any] | None = None
    disk: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    speed: dict[str, Any] | None = None
    efficiency: dict[str, Any] | None = None
    speedup_realised: str | None = None
    compress_seconds: float | None = None
    evaluation: dict[str, Any] | None = None


@dataclass(frozen=True)
class GitInfo:
    commit: str | None
    dirty: bool | None


@dataclass(frozen=True)
class MachineInfo:
    platform: str
    cpu: str
    cpu_vector_flags: list[str]
    logical_cpus: int | None
    torch_threads: int


@dataclass(frozen=True)
class ExecutorInfo:
    """Which executor ran the cell and, on Ray, where: cells sharing a node share its cores and memory
    bandwidth, so the reader of a speed figure needs both counts."""

    name: str  # "serial" (in-process) or "ray"
    node: str | None = None  # the Ray node's IP address
    node_cpus: int | None = None  # CPUs the node offers to Ray
    cell_cpus: int | None = None  # CPUs the cell reserved there (its torch threads)


@dataclass(frozen=True)
class Provenance:
    time_utc: str
    packages: dict[str, str | None]
    python: str
    git: GitInfo
    machine: MachineInfo
    seed: int
    executor: ExecutorInfo | None = None  # None in records written before executors were recorded

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Provenance:
        executor = data.get("executor")
        return _build(cls, {**data, "git": _build(GitInfo, data["git"]),
                            "machine": _build(MachineInfo, data["machine"]),
                            "executor": _build(ExecutorInfo, executor) if executor else None})


@dataclass(frozen=True)
class ErrorInfo:
    type: str
    message: str
    traceback: str


@dataclass
class Record:
    schema_version: int
    status: str  # "ok" or "failed"
    preset: str
    key: str  # the cell key's digest, also in the file name
    cell: CellKey
    task: TaskInfo
    model: ModelInfo
    compressor: CompressorInfo
    data: DataInfo
    baseline: BaselineInfo
    provenance: Provenance
    scores: dict[str, float | None] = field(default_factory=dict)
    primary_score: float | None = None
    measurements: Measurements = field(default_factory=Measurements)
    predictions_file: str | None = None
    notes: list[str] = field(default_factory=list)
    error: ErrorInfo | None = None
    upgraded_from: int | None = None  # the schema a file was written in, when it was upgraded

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cell"] = self.cell.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """A schema-2 record's JSON (run :func:`upgrade` first on older ones)."""
        data = dict(data)
        try:
            data["cell"] = CellKey.from_json(data["cell"])
            data["task"] = _build(TaskInfo, data["task"])
            data["model"] = _build(ModelInfo, data["model"])
            data["compressor"] = CompressorInfo.from_json(data["compressor"])
            data["data"] = DataInfo.from_json(data["data"])
            data["baseline"] = _build(BaselineInfo, data["baseline"])
            data["provenance"] = Provenance.from_json(data["provenance"])
            data["measurements"] = _build(Measurements, data.get("measurements") or {})
            data["error"] = _build(ErrorInfo, data["error"]) if data.get("error") else None
            return _build(cls, data)
        except KeyError as exc:
            raise ValueError(f"missing section or key {exc}") from None

    @property
    def machine_label(self) -> str:
        return self.cell.machine.label()


#: The optimiser's study files (:mod:`benchsuite.optimise.study`) live beside the records; they are not records.
STUDY_SUFFIX = ".study.json"


def record_files(results_dir: Path) -> list[Path]:
    """Every cell record file under ``results_dir`` (``*.json`` but study files), sorted."""
    return [p for p in sorted(results_dir.rglob("*.json")) if not p.name.endswith(STUDY_SUFFIX)]


def record_path(results_dir: Path, key: CellKey, model_slug: str) -> Path:
    return results_dir / key.preset / key.task / model_slug / f"{key.file_stem()}.json"


def predictions_path(record_file: Path) -> Path:
    return record_file.with_suffix(".predictions.jsonl")


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_record(path: Path) -> Record:
    """Parse a record of any known schema into schema 2, raising ValueError naming the file when it is
    not one of ours."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); a truncated or foreign file") from None
    if not isinstance(data, dict) or "schema_version" not in data or "compressor" not in data:
        raise ValueError(f"{path}: not a benchsuite record (no schema_version)")
    if data["schema_version"] > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {data['schema_version']} is newer than this benchsuite "
                         f"({SCHEMA_VERSION}); upgrade benchsuite")
    try:
        return Record.from_json(upgrade(data))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable schema-{data['schema_version']} record ({exc})") from None


# --- schema 1 -> 2 ------------------------------------------------------------------------------

# Schema 1 did not record a compressor's arithmetic; these are the built-ins of that time that were
# not fp32 (only built-in compressors wrote schema-1 records).
_SCHEMA1_COMPUTE = {"fp16": "fp16", "bf16": "bf16", "dynamic_int8": "int8", "static_int8": "int8",
                    "ort_int8": "int8"}
_SCHEMA1_SAVE_FORMAT = {"dynamic_int8": "torch", "static_int8": "torch", "ort_int8": "onnx"}


def upgrade(data: dict[str, Any], *, defaults: Callable[[str], dict[str, Any] | None] | None = None,
            family_of: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """A record's JSON in the current schema. Nothing measured changes; what schema 1 got wrong is
    corrected and said in the notes:

    * efficiency held against the wrong peak (an fp16 or bf16 model against the fp32 peak), or above
      1.0 (a peak measured on a busy machine), is withdrawn: ``fraction_of_peak`` null, with a note;
    * the speed verdict is derived again with the noise rule (:func:`benchsuite.measure.speed.verdict`);
    * records written before ``changed`` was kept get it from ``defaults(name)`` (the installed config's
      JSON, given by ``benchsuite upgrade``, which may read the registry) when its type and version match
      the record's; otherwise it stays null and the report lists every option;
    * a record without the compressor's ``family`` gets it from ``family_of(name)`` (the installed class's),
      schema 2 included; without it the family stays null.
    """
    if data["schema_version"] == SCHEMA_VERSION:
        return _with_family(data, family_of)
    from benchsuite.measure.speed import shrank, verdict  # noqa: PLC0415 (torch only when upgrading)

    data = json.loads(json.dumps(data))  # a deep copy
    compressor = data["compressor"]
    packages = data["provenance"].get("packages") or {}
    if compressor.get("changed") is None:
        current = defaults(compressor["name"]) if defaults else None
        config = compressor["config"]
        same = current and (current["type"], current["version"]) == (config.get("type"), config.get("version"))
        compressor["changed"] = ({k: v for k, v in config["params"].items() if current["params"].get(k, v) != v
                                  or k not in current["params"]} if same else None)
    compressor["provider"] = f"benchsuite {packages.get('benchsuite') or 'unknown'}"
    compressor["compute"] = _SCHEMA1_COMPUTE.get(compressor["name"], "fp32")
    compressor["save_format"] = _SCHEMA1_SAVE_FORMAT.get(compressor["name"], "safetensors")
    compressor.setdefault("recovery", None)
    compressor.setdefault("layout", None)
    notes = data.setdefault("notes", [])
    measurements = data.setdefault("measurements", {})
    efficiency = measurements.get("efficiency")
    if efficiency:
        kind = "int8" if efficiency.get("peak_kind") == "int8" else compressor["compute"]
        wrong_peak = efficiency.get("peak_kind", "fp32") != kind
        fraction = efficiency.get("fraction_of_peak")
        if wrong_peak or (fraction is not None and fraction > 1):
            why = (f"it was held against the {efficiency.get('peak_kind', 'fp32')} peak, and no {kind} peak was "
                   f"measured for it" if wrong_peak else
                   f"it read {fraction:.2f}, above 1: the cached peak was measured while the machine was busy")
            efficiency.update(fraction_of_peak=None, peak_kind=kind,
                              note=f"fraction of peak withdrawn on upgrade from schema 1: {why}")
            notes.append(f"efficiency: {efficiency['note']}")
    speed = measurements.get("speed")
    if speed and measurements.get("speedup_realised"):
        fp, before, disk = measurements["footprint"], measurements["footprint_before"], measurements.get("disk")
        measurements["speedup_realised"] = verdict(
            speed, reference=compressor["name"] == "baseline",
            shrank=shrank(params=fp["params"], params_nonzero=fp["params_nonzero"],
                          disk_bytes=(disk or {}).get("size_bytes"), before_params=before["params"],
                          before_params_nonzero=before["params_nonzero"]))
    if data["task"]["kind"] == "token_classification" and data["status"] == "ok":
        from benchsuite.metrics.seqeval import ENTITY_MODE_NOTE  # noqa: PLC0415 (the same metric code ran then)

        if ENTITY_MODE_NOTE not in notes:
            notes.append(ENTITY_MODE_NOTE)
    for section in ("train", "eval"):
        data["data"][section].setdefault("note", "")
    data.pop("_path", None)
    key = key_of_record_json(data, provider=compressor["provider"])
    data.update(schema_version=SCHEMA_VERSION, key=key.digest(), cell=key.to_json(), upgraded_from=1)
    if data.get("predictions_file"):
        data["predictions_file"] = f"{key.file_stem()}.predictions.jsonl"
    return _with_family(data, family_of)


def _with_family(data: dict[str, Any], family_of: Callable[[str], str | None] | None) -> dict[str, Any]:
    compressor = data["compressor"]
    if compressor.get("family") is None and family_of is not None:
        family = family_of(compressor["name"])
        if family is not None:
            data = {**data, "compressor": {**compressor, "family": family}}
    return data


def upgrade_files(results_dir: Path, *, defaults: Callable[[str], dict[str, Any] | None] | None = None,
                  family_of: Callable[[str], str | None] | None = None) -> list[tuple[Path, Path]]:
    """Rewrite every older record under ``results_dir`` in the current schema under its cell key's name
    (predictions renamed with it), and fill in the compressor family of records that lack it; returns
    (old, new) paths. Each file is written atomically before its old name is removed, so an
    interruption loses nothing."""
    moved = []
    for path in record_files(results_dir):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (not isinstance(data, dict) or "compressor" not in data
                or not isinstance(data.get("schema_version"), int) or data["schema_version"] > SCHEMA_VERSION):
            continue
        upgraded = upgrade(data, defaults=defaults, family_of=family_of)
        if upgraded is data:  # current schema, nothing to fill in
            continue
        try:
            record = Record.from_json(upgraded)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: cannot upgrade ({exc})") from None
        target = path.parent / f"{record.cell.file_stem()}.json"
        old_predictions = predictions_path(path)
        if old_predictions.is_file():
            os.replace(old_predictions, predictions_path(target))
        write_json_atomic(target, record.to_json())
        if target != path:
            path.unlink()
        moved.append((path, target))
    return moved


# --- provenance ---------------------------------------------------------------------------------


SERIAL = ExecutorInfo(name="serial")  # the in-process executor


def provenance(seed: int, executor: ExecutorInfo = SERIAL) -> Provenance:
    import torch  # noqa: PLC0415

    return Provenance(
        time_utc=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        packages={name: _version(name) for name in PACKAGES},
        python=platform.python_version(),
        git=_git(),
        machine=MachineInfo(platform=platform.platform(), cpu=cpu_model(), cpu_vector_flags=cpu_vector_flags(),
                            logical_cpus=os.cpu_count(), torch_threads=torch.get_num_threads()),
        seed=seed,
        executor=executor,
    )


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.cache
def _git() -> GitInfo:
    """The checkout's commit, read once per process: the code that runs is the code present at start."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "benchsuite", "tasks", "pyproject.toml"],
                               cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return GitInfo(commit=None, dirty=None)
    return GitInfo(commit=commit, dirty=bool(dirty))
