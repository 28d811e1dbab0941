"""Task specs: the YAML files under ``tasks/`` parsed into typed, validated records.

A spec is data (which dataset, which columns, which metrics); its *kind* (how to
tokenize, predict and post-process) is Python in ``benchsuite/tasks/<kind>.py``.
A spec may ``include:`` a base file next to it (lm-evaluation-harness style); keys
in the including file override the base, nested mappings are merged.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from benchsuite.canonical import canonical_json
from benchsuite.errors import UsageError

KINDS = ("classification", "extractive_qa", "token_classification")
# Metric modules that report several scores; the others report one score named like the module.
SCORE_KEYS = {"squad": ("exact_match", "f1"), "seqeval": ("f1", "precision", "recall", "accuracy")}


@dataclass(frozen=True)
class DatasetSpec:
    """Where a task's data comes from: a Hub dataset (or its local mirror)."""

    repo_id: str
    config: str
    train_split: str
    eval_split: str
    # When the train split is unavailable, train on a held-apart part of the eval
    # split: {"fraction": 0.5, "group_by": "title"}; None forbids the fallback.
    train_fallback: dict[str, Any] | None = None
    # Whole groups of the eval split that join the training rows (beside the train split, or alone where
    # the mirror lists it missing), and a part held out of both as a dev set for the baseline's learning
    # curve: {"fraction": 0.5, "dev_fraction": 0.05, "group_by": "title"}; the rest is evaluated.
    train_from_eval: dict[str, Any] | None = None
    # Options added after records existed: while unset they are left out of the spec's JSON, so of its digest
    # and of the fine-tuned baseline's cache key (:func:`benchsuite.canonical.canonical_json`).
    LATE_OPTIONS: ClassVar[tuple[str, ...]] = ("train_from_eval",)

    def to_json(self) -> dict[str, Any]:
        return canonical_json(self)

    def __post_init__(self) -> None:
        for name in ("train_fallback", "train_from_eval"):
            value = getattr(self, name)
            if value is None:
                continue
            allowed = {"fraction", "group_by"} | ({"dev_fraction"} if name == "train_from_eval" else set())
            if not isinstance(value, dict) or set(value) - allowed:
                raise ValueError(f"dataset.{name} must be a mapping with keys {sorted(allowed)}, got {value!r}")
            parts = [float(value.get(k, 0)) for k in ("fraction", "dev_fraction")]
            if not 0 < parts[0] < 1 or parts[1] < 0 or sum(parts) >= 1:
                raise ValueError(f"dataset.{name}: fraction must be in (0, 1) and, with dev_fraction, leave "
                                 f"rows to evaluate; got {value!r}")
        if self.train_fallback and self.train_from_eval:
            raise ValueError("dataset.train_fallback and dataset.train_from_eval exclude each other: "
                             "train_from_eval already trains on its held-apart part when the train split is missing")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the baseline fine-tuning; every field changes the weights."""

    learning_rate: float = 5e-5
    epochs: float = 3.0
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if not self.epochs > 0:
            raise ValueError(f"train.epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    version: int
    dataset: DatasetSpec
    columns: dict[str, Any]
    metrics: tuple[str, ...]
    primary_metric: str
    max_length: int
    labels: tuple[str, ...] | None = None  # None for regression
    params: dict[str, Any] = field(default_factory=dict)  # kind-specific (doc_stride, n_best, ...)
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""
    # Published figure(s) for a model of the reference shape, shown beside the baseline in reports.
    anchor: str = ""
    # Named sets the task belongs to ("full": the full preset's tasks).
    groups: tuple[str, ...] = ()
    source: str = ""  # the YAML file it came from

    @property
    def is_regression(self) -> bool:
        return self.kind == "classification" and self.labels is None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        data["dataset"] = self.dataset.to_json()
        return data

    def digest(self) -> str:
        """A stable hash of everything in the spec that can change a score (not its anchor or groups)."""
        scored = {k: v for k, v in self.to_json().items() if k not in ("anchor", "groups")}
        payload = json.dumps(scored, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def tasks_dir() -> Path:
    """The folder of task YAML files: ``$BENCHSUITE_TASKS_DIR`` or the checkout's ``tasks/``."""
    env = os.environ.get("BENCHSUITE_TASKS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "tasks"


def task_files(root: Path | None = None) -> dict[str, Path]:
    """Task name -> YAML file. Files whose name starts with ``_`` are bases, not tasks."""
    root = root or tasks_dir()
    if not root.is_dir():
        raise UsageError(
            f"task folder {root} does not exist; run from a benchsuite checkout or set BENCHSUITE_TASKS_DIR"
        )
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.yaml")):
        if path.name.startswith("_"):
            continue
        name = _read_yaml(path).get("name", path.stem)
        if name in found:
            raise UsageError(f"task name {name!r} is defined twice: {found[name]} and {path}")
        found[name] = path
    return found


def load_task(name_or_path: str, root: Path | None = None) -> TaskSpec:
    """Load a task by name (from the task folder) or by the path of a YAML file."""
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise UsageError(f"task file {path} does not exist")
        return parse_task(path)
    files = task_files(root)
    if name_or_path not in files:
        raise UsageError(_unknown("task", name_or_path, sorted(files)))
    return parse_task(files[name_or_path])


def parse_task(path: Path) -> TaskSpec:
    raw = _resolve_includes(path, seen=())
    raw.setdefault("name", path.stem)
    try:
        return _build(raw, path)
    except (TypeError, ValueError, KeyError) as exc:
        raise UsageError(f"{path}: invalid task spec: {exc}") from None


def _build(raw: dict[str, Any], path: Path) -> TaskSpec:
    known = {"name", "kind", "version", "dataset", "columns", "metrics", "primary_metric", "max_length",
             "labels", "params", "train", "description", "anchor", "groups"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; known keys are {sorted(known)}")
    for key in ("kind", "version", "dataset", "columns", "metrics", "primary_metric", "max_length"):
        if key not in raw:
            raise ValueError(f"missing required key {key!r}")
    if raw["kind"] not in KINDS:
        raise ValueError(_unknown("kind", raw["kind"], KINDS))
    # A classification spec without labels would silently become a regression: ask for them.
    if raw["kind"] != "extractive_qa" and "labels" not in raw:
        raise ValueError("missing required key 'labels' (the class names in the dataset's order; "
                         "'labels: null' makes a classification task a regression)")
    if raw["kind"] == "token_classification" and raw["labels"] is None:
        raise ValueError("a token_classification task needs 'labels' (its tag names)")
    from benchsuite.metrics import METRIC_NAMES  # noqa: PLC0415 (keeps spec parsing import-light)

    metrics = tuple(raw["metrics"])
    for metric in metrics:
        if metric not in METRIC_NAMES:
            raise ValueError(_unknown("metric", metric, METRIC_NAMES))
    scores = [key for metric in metrics for key in SCORE_KEYS.get(metric, (metric,))]
    if raw["primary_metric"] not in scores:
        raise ValueError(f"primary_metric {raw['primary_metric']!r} is not a score of metrics {list(metrics)} "
                         f"(their scores: {scores})")
    max_length = int(raw["max_length"])
    if not 8 <= max_length <= 4096:
        raise ValueError(f"max_length must be between 8 and 4096, got {max_length}")
    labels = raw.get("labels")
    return TaskSpec(
        name=str(raw["name"]),
        kind=raw["kind"],
        version=int(raw["version"]),
        dataset=DatasetSpec(**raw["dataset"]),
        columns=dict(raw["columns"]),
        metrics=metrics,
        primary_metric=raw["primary_metric"],
        max_length=max_length,
        labels=tuple(labels) if labels is not None else None,
        params=dict(raw.get("params") or {}),
        train=_train_config(raw.get("train") or {}),
        description=str(raw.get("description", "")).strip(),
        anchor=str(raw.get("anchor", "")).strip(),
        groups=_groups(raw.get("groups")),
        source=str(path),
    )


def _groups(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"groups must be a list of names, got {value!r}")
    return tuple(value)


def _resolve_includes(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:  # resolved: "../glue/a.yaml" and "a.yaml" are one file
        raise UsageError(f"{path}: include cycle through {' -> '.join(map(str, seen))}")
    raw = _read_yaml(path)
    base_name = raw.pop("include", None)
    if base_name is None:
        return raw
    # Beside the including file first, then a built-in base by its name under the task folder
    # (``include: glue/_glue.yaml`` from a task file anywhere).
    candidates = [path.parent / base_name, tasks_dir() / base_name]
    base_path = next((c for c in candidates if c.is_file()), None)
    if base_path is None:
        raise UsageError(f"{path}: include {base_name!r} not found (looked for "
                         f"{' and '.join(str(c) for c in candidates)})")
    base = _resolve_includes(base_path, seen + (path.resolve(),))
    base.pop("name", None)  # a task's name is its own (or its file's stem, as task_files says), never its base's
    return _merge(base, raw)


_TRAIN_TYPES = {"learning_rate": float, "epochs": float, "batch_size": int, "warmup_ratio": float,
                "weight_decay": float, "max_grad_norm": float}


def _train_config(values: dict[str, Any]) -> TrainConfig:
    """``TrainConfig`` from the spec's ``train`` mapping, naming the field of any bad value.

    YAML 1.1 reads ``5e-5`` (no dot) as a string, so numeric strings are converted.
    """
    if not isinstance(values, dict):
        raise ValueError(f"train must be a mapping, got {values!r}")
    unknown = set(values) - set(_TRAIN_TYPES)
    if unknown:
        raise ValueError(f"unknown train keys {sorted(unknown)}; known keys are {sorted(_TRAIN_TYPES)}")
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, str):
            try:
                value = _TRAIN_TYPES[key](value)
            except ValueError:
                raise ValueError(f"train.{key} must be a number, got {value!r}") from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"train.{key} must be a number, got {value!r}")
        clean[key] = value
    return TrainConfig(**clean)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{where}: malformed YAML: {problem}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a task file must be a YAML mapping, got {type(data).__name__}")
    return data


def _unknown(what: str, name: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {what} {name!r}{hint} (known: {', '.join(known)})"
