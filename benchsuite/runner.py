"""A run: for each task, fine-tune (or reuse) the baseline, then score every compressor on it.

One cell = (model, task, compressor config) on this machine, named by its cell key
(:mod:`benchsuite.cellkey`: weights, spec, data selection, seed, epochs, compressor and its
package, machine). Each cell's record is written atomically when the cell ends; a cell whose
key already has a record is skipped (``force`` redoes it), so an interrupted run resumes where
it stopped, and any change to what decides a result computes a new cell. A
compressor that raises (or runs out of memory, or past ``cell_timeout``) yields a failed
record with its traceback, and the run goes on. A cell is computed under a lock
(``benchsuite.isolation``): a second run on the same results directory skips the cells the
first is computing and resumes the rest.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from benchsuite import cache
from benchsuite.cellkey import CellKey, DataKey, MachineKey
from benchsuite.compressors.base import NEEDS_TABLE, CompressionContext, CompressionResult, Compressor, as_result
from benchsuite.compressors.pipeline import Pipeline, PrefixCache
from benchsuite.compressors.registry import build_compressor, registered
from benchsuite.data import TaskData, load_task_data
from benchsuite.distillation.teacher import TeacherOutputs, teacher_outputs
from benchsuite.distillation.transfer import TransferData, transfer_set
from benchsuite.engine import model_inputs
from benchsuite.isolation import cell_lock, time_limit
from benchsuite.machine import cpu_model, cpu_vector_flags
from benchsuite.measure.cell import measure_cell
from benchsuite.measure.footprint import Footprint, footprint
from benchsuite.models import ModelRef, load_model, load_tokenizer, resolve_model
from benchsuite.presets import Budget, Preset
from benchsuite.records import (
    SCHEMA_VERSION,
    SERIAL,
    BaselineInfo,
    CompressorInfo,
    DataInfo,
    ErrorInfo,
    ExecutorInfo,
    Measurements,
    ModelInfo,
    Record,
    StageInfo,
    TaskInfo,
    predictions_path,
    provenance,
    read_record,
    record_path,
    write_json_atomic,
    write_predictions,
)
from benchsuite.tasks import TaskKind, TaskSpec, load_task, task_kind
from benchsuite.tasks.spec import TrainConfig
from benchsuite.train import fine_tune, step_counts

log = logging.getLogger("benchsuite")

TRAIN_CODE_VERSION = 1  # bump when the training loop changes what weights it produces


@dataclass(frozen=True)
class RunOptions:
    tasks: tuple[str, ...]
    compressors: tuple[str, ...]
    preset: Preset
    results_dir: Path
    cache_dir: Path
    model: str | None = None
    seed: int = 42
    force: bool = False
    eval_batch_size: int = 64
    cell_timeout: float | None = None  # seconds per cell (compress, evaluate, measure); None: no limit


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)  # cells another run was computing: left to it


def run(opts: RunOptions) -> RunSummary:
    """Validate everything the run needs up front, then score cell after cell in this process."""
    specs = [load_task(name) for name in opts.tasks]
    compressors = [build_compressor(name) for name in opts.compressors]
    ref = resolve_model(opts.model)
    provenance(opts.seed)  # pins the git state read at start into every record of this run
    summary = RunSummary()
    for spec in specs:
        _run_task(setup_task(spec, ref, opts), compressors, opts, summary)
    return summary


@dataclass(frozen=True)
class TaskSetup:
    """What every cell of a task shares: the spec, the model, the rows selected and the fine-tuning settings."""

    spec: TaskSpec
    ref: ModelRef
    data: TaskData
    train_cfg: TrainConfig

    def kind(self) -> TaskKind:
        return task_kind(self.spec, load_tokenizer(self.ref, max_length=self.spec.max_length))


def setup_task(spec: TaskSpec, ref: ModelRef, opts: RunOptions) -> TaskSetup:
    budget = opts.preset.budget(spec.name)
    data = load_task_data(spec, max_train=budget.max_train, max_eval=budget.max_eval, seed=opts.seed)
    return TaskSetup(spec=spec, ref=ref, data=data, train_cfg=_train_config(spec, budget))


def _run_task(setup: TaskSetup, compressors: list[Compressor], opts: RunOptions, summary: RunSummary) -> None:
    spec, ref = setup.spec, setup.ref
    keys = {c: cell_key(spec, ref, setup.data, setup.train_cfg, c, opts) for c in compressors}
    cells = {c: record_path(opts.results_dir, key, ref.slug) for c, key in keys.items()}
    todo = [c for c, path in cells.items() if opts.force or not is_done(path)]
    summary.skipped += [cells[c] for c in compressors if c not in todo]
    if not todo:
        log.info("%s: every cell already has a record on this machine; --force redoes them", spec.name)
        return
    kind = setup.kind()
    baseline = fine_tuned_baseline(setup, kind, opts)
    for compressor in todo:
        path = cells[compressor]
        with cell_lock(path) as held:
            if not held:
                log.warning("%s / %s: another run is computing this cell (%s.lock holds its pid); skipping it",
                            spec.name, compressor.name, path.name)
                summary.busy.append(path)
            elif not opts.force and is_done(path):  # another run finished it while this one worked
                summary.skipped.append(path)
            else:
                record = run_cell(path, keys[compressor], compressor, setup, kind, baseline, opts)
                (summary.written if record.status == "ok" else summary.failed).append(path)


def this_machine(threads: int | None = None) -> MachineKey:
    """This machine as a cell key names it, with ``threads`` torch threads (default: the current count)."""
    return MachineKey(cpu=cpu_model(), cpu_vector_flags=tuple(cpu_vector_flags()),
                      torch_threads=threads or torch.get_num_threads())


def cell_key(spec: TaskSpec, ref: ModelRef, data: TaskData, train_cfg: TrainConfig, compressor: Compressor,
             opts: RunOptions, *, machine: MachineKey | None = None) -> CellKey:
    """Everything that decides this cell's result, on ``machine`` (default: this one; see
    :mod:`benchsuite.cellkey`)."""
    return CellKey(
        preset=opts.preset.name, task=spec.name, task_spec_digest=spec.digest(), task_version=spec.version,
        model=ref.name, model_weights_sha256=ref.weights_sha256,
        train_data=DataKey(split=data.train_info.split, fingerprint=data.train_info.fingerprint,
                           selection_sha256=data.train_info.selection_sha256, rows_used=data.train_info.rows_used),
        eval_data=DataKey(split=data.eval_info.split, fingerprint=data.eval_info.fingerprint,
                          selection_sha256=data.eval_info.selection_sha256, rows_used=data.eval_info.rows_used),
        epochs=float(train_cfg.epochs), seed=opts.seed, compressor=compressor.name,
        config_hash=compressor.config.config_hash(), provider=provider(compressor),
        machine=machine or this_machine(),
    )


def provider(compressor: Compressor) -> str:
    """The package (and version) that registers this compressor, as the registry names it; for a pipeline,
    those of its stages (each once, in order)."""
    if isinstance(compressor, Pipeline):
        return "; ".join(dict.fromkeys(provider(stage) for stage in compressor.stages))
    entry = registered().get(compressor.name)
    return entry.origin if entry is not None else f"{type(compressor).__module__} (not registered)"


def new_record(key: CellKey, compressor: Compressor, setup: TaskSetup, baseline: dict, opts: RunOptions,
               executor: ExecutorInfo = SERIAL) -> Record:
    """The record of a cell before it is scored: what it is, what it was built from, where it ran."""
    spec, ref, data = setup.spec, setup.ref, setup.data
    described = compressor.describe()
    info = CompressorInfo(name=described["name"], config=described["config"], config_hash=described["config_hash"],
                          changed=described["changed"], provider=key.provider, compute=compressor.compute,
                          save_format=compressor.save_format, family=compressor.family,
                          stages=[StageInfo(**info, provider=provider(stage)) for stage, info in
                                  zip(compressor.stages, compressor.stage_infos(), strict=True)]
                          if isinstance(compressor, Pipeline) else None)
    return Record(
        schema_version=SCHEMA_VERSION, status="ok", preset=opts.preset.name, key=key.digest(), cell=key,
        task=TaskInfo(name=spec.name, kind=spec.kind, version=spec.version, spec_digest=spec.digest(),
                      primary_metric=spec.primary_metric, source=Path(spec.source).name),
        model=ModelInfo(name=ref.name, origin=ref.origin, weights_sha256=ref.weights_sha256),
        compressor=info,
        data=DataInfo(train=data.train_info, eval=data.eval_info, dev=data.dev_info),
        baseline=BaselineInfo(**{k: v for k, v in baseline.items() if k != "path"}),
        provenance=provenance(opts.seed, executor),
        notes=[n for n in (data.train_info.note, data.eval_info.note) if n],
    )


def fail(record: Record, error: ErrorInfo, executor: ExecutorInfo = SERIAL, *, seed: int) -> Record:
    """``record`` as a failed cell: its error instead of scores and measurements."""
    record.status = "failed"
    record.error = error
    record.provenance = provenance(seed, executor)
    return record


def run_cell(path: Path, key: CellKey, compressor: Compressor, setup: TaskSetup, kind: TaskKind, baseline: dict,
             opts: RunOptions, executor: ExecutorInfo = SERIAL, *, compressed: CompressedCell | None = None) -> Record:
    """Score one cell and write its record, ok or failed (error, traceback), atomically; return it.
    ``compressed``: the cell's model, already compressed by :func:`compress_cell` (the optimiser checks it on a
    slice first); None: compress it here."""
    record = new_record(key, compressor, setup, baseline, opts, executor)
    notes = list(record.notes)
    try:
        with time_limit(opts.cell_timeout):
            _score_cell(record, compressor, setup.spec, kind, setup.data, baseline, opts, path, executor,
                        compressed)
        record.notes = notes + record.notes
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # isolate the cell (a raising compressor, MemoryError, the time limit): go on
        log.error("%s / %s failed: %s: %s", setup.spec.name, compressor.name, type(exc).__name__, exc)
        record.notes = notes
        fail(record, ErrorInfo(type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc()),
             executor, seed=opts.seed)
    write_json_atomic(path, record.to_json())
    return record


def _score_cell(record: Record, compressor: Compressor, spec: TaskSpec, kind: TaskKind, data: TaskData,
                baseline: dict, opts: RunOptions, path: Path, executor: ExecutorInfo,
                compressed_cell: CompressedCell | None = None) -> None:
    record.notes = []  # this cell's own notes; run_cell puts the data's before them
    teacher_path = baseline["path"]
    if compressed_cell is None:
        compressed_cell = compress_cell(compressor, spec, kind, data, baseline, opts)
    result, kind, before = compressed_cell.result, compressed_cell.kind, compressed_cell.before
    compress_seconds = compressed_cell.seconds
    compressed = result.model
    # what recovery fine-tuning (or distillation) did; structural choices made from data (which layers were split)
    record.compressor = replace(record.compressor, recovery=result.recovery or None, layout=result.layout or None)
    if result.tokenizer is not None:
        record.notes.append("evaluated and measured on the compressor's own tokenizer (saved with the model); the "
                            "baseline's speed is timed on the same token ids")
    evaluation = kind.evaluate(compressed, data.eval, batch_size=opts.eval_batch_size)
    predictions = predictions_path(path)
    write_predictions(predictions, evaluation.predictions)
    # JSON has no NaN: an undefined score (a correlation of constant predictions) is null, and said so.
    record.scores = {k: (None if math.isnan(v) else v) for k, v in evaluation.scores.items()}
    record.primary_score = record.scores[spec.primary_metric]
    undefined = sorted(k for k, v in record.scores.items() if v is None)
    record.measurements = Measurements(**{
        **measure_cell(compressor=compressor, result=result, before=before,
                       load_baseline=lambda: load_model(kind.auto_class, teacher_path),
                       inputs=evaluation.inputs, pad_token_id=kind.tokenizer.pad_token_id,
                       seed=opts.seed, cache_dir=opts.cache_dir, batch_size=opts.eval_batch_size),
        "compress_seconds": round(compress_seconds, 3),
        "evaluation": {**asdict(evaluation.forward), "padding_fraction": round(evaluation.forward.padding_fraction, 4),
                       "seconds": round(evaluation.forward.seconds, 3),
                       "method": "one pass, batches sorted by length, dynamic padding, torch.inference_mode; "
                                 "wall time of the forward loop only (not a latency benchmark)"},
    })
    record.predictions_file = predictions.name
    record.notes = record.notes + list(evaluation.notes)
    if undefined:
        record.notes.append(f"{', '.join(undefined)} undefined (constant predictions or references): null")
    record.provenance = provenance(opts.seed, executor)


@dataclass(frozen=True)
class CompressedCell:
    result: CompressionResult
    seconds: float  # wall time of compress (less any on_stage hook, the optimiser's slice checks, and dev scoring)
    before: Footprint  # the fine-tuned model's footprint
    kind: TaskKind  # the task kind that reads the compressed model's inputs (its own tokenizer, if it returned one)


def compress_cell(compressor: Compressor, spec: TaskSpec, kind: TaskKind, data: TaskData, baseline: dict,
                  opts: RunOptions, *, on_stage=None) -> CompressedCell:
    """Compress the task's fine-tuned model as a cell does: seeded, with the declared needs provided lazily,
    and for a pipeline with its prefix cache. ``benchsuite export`` rebuilds a record's model through this.
    ``on_stage``: called by a pipeline after each stage but the last (see :class:`CompressionContext`)."""
    if compressor.supported_kinds is not None and spec.kind not in compressor.supported_kinds:
        raise ValueError(f"{compressor.name} does not support {spec.kind} tasks "
                         f"(it supports {sorted(compressor.supported_kinds)})")
    teacher_path = baseline["path"]
    torch.manual_seed(opts.seed)
    model = load_model(kind.auto_class, teacher_path)
    before = footprint(model)
    train_features = None

    def train_data() -> list[dict]:
        nonlocal train_features
        if train_features is None:
            train_features = kind.train_features(data.train)
        return train_features

    def calibration() -> list[dict]:  # every training feature, unlabelled: a compressor takes what it asks for
        return [model_inputs(f) for f in train_data()]

    def outputs() -> TeacherOutputs:
        return teacher_outputs(lambda: load_model(kind.auto_class, teacher_path), train_data(),
                               **teacher_settings(kind, baseline, opts))

    def pretrained() -> torch.nn.Module:
        torch.manual_seed(opts.seed)  # the new head's initialisation, as the baseline's
        return load_model(kind.auto_class, resolve_model(opts.model).path, **kind.model_kwargs())

    def transfer(names: tuple[str, ...]) -> TransferData:
        extra = transfer_set(kind, names, data.eval, max_rows=opts.preset.budget(spec.name).max_train, seed=opts.seed)
        if not extra.features:  # every transfer row was in the evaluation rows
            return TransferData(train_data(), outputs(), extra.facts)
        on_extra = teacher_outputs(lambda: load_model(kind.auto_class, teacher_path), extra.features,
                                   **teacher_settings(kind, baseline, opts))  # the task's own are cached already
        return TransferData(train_data() + extra.features, outputs().followed_by(on_extra), extra.facts)

    providers = {"train_data": train_data, "task_rows": lambda: data.train,
                 "teacher": lambda: load_model(kind.auto_class, teacher_path),
                 "teacher_outputs": outputs, "calibration_data": calibration, "pretrained": pretrained,
                 "transfer_data": lambda: transfer}
    assert set(providers) == set(NEEDS_TABLE), "the runner provides every need of the table, and only those"
    prefixes = (PrefixCache(opts.cache_dir, baseline_key=baseline["cache_key"], seed=opts.seed,
                            providers={stage.name: provider(stage) for stage in compressor.stages})
                if isinstance(compressor, Pipeline) else None)
    hooked = 0.0  # seconds spent in on_stage (the optimiser's slice checks) and scoring dev rows: not compression

    def timed_hook(stages, staged_model) -> None:
        nonlocal hooked
        began = time.perf_counter()
        try:
            on_stage(stages, staged_model)
        finally:
            hooked += time.perf_counter() - began

    def recovery_curve(student: torch.nn.Module, n_features: int, cfg: TrainConfig):
        steps, score = _learning_curve(kind, student, data, cfg, n_features, opts)

        def timed_score(step: int, seen: int) -> dict:  # dev scoring is not compression: its time is left out
            nonlocal hooked
            began = time.perf_counter()
            try:
                return score(step, seen)
            finally:
                hooked += time.perf_counter() - began

        return steps, timed_score

    context = CompressionContext(needs=compressor.NEEDS, task=spec, tokenizer=kind.tokenizer, seed=opts.seed,
                                 providers=providers, train_config=TrainConfig(**baseline["hyper_parameters"]),
                                 prefix_cache=prefixes, on_stage=timed_hook if on_stage is not None else None,
                                 learning_curve=recovery_curve if data.dev is not None else None)
    start = time.perf_counter()
    result = as_result(compressor.compress(model, context=context), compressor)
    seconds = time.perf_counter() - start - hooked
    if result.tokenizer is not None:  # the compressor changed the vocabulary: its tokenizer reads the inputs
        kind = task_kind(spec, result.tokenizer)
    return CompressedCell(result=result, seconds=seconds, before=before, kind=kind)


def teacher_settings(kind: TaskKind, baseline: dict, opts: RunOptions) -> dict:
    """How a task's teacher outputs are computed and cached (the keyword arguments of
    :func:`~benchsuite.distillation.teacher.teacher_outputs`), in one place for every executor."""
    return {"names": kind.outputs, "per_token": kind.per_token, "pad_token_id": kind.tokenizer.pad_token_id,
            "cache_dir": opts.cache_dir, "teacher_key": baseline["cache_key"], "batch_size": opts.eval_batch_size}


def _train_config(spec: TaskSpec, budget: Budget) -> TrainConfig:
    """The spec's fine-tuning hyper-parameters with the preset's epochs applied."""
    return replace(spec.train, epochs=budget.epochs) if budget.epochs is not None else spec.train


def fine_tuned_baseline(setup: TaskSetup, kind: TaskKind, opts: RunOptions) -> dict:
    """The task's fine-tuned model from the cache, training it first on a miss."""
    spec, ref, data, train_cfg = setup.spec, setup.ref, setup.data, setup.train_cfg
    spec_json = spec.to_json()
    inputs = {
        "train_code_version": TRAIN_CODE_VERSION,
        "model_weights_sha256": ref.weights_sha256,
        # Everything of the spec that shapes training; the name, eval split and metrics do not.
        "spec": {k: spec_json[k] for k in ("kind", "version", "columns", "labels", "max_length", "params")},
        "dataset": {k: v for k, v in spec_json["dataset"].items() if k != "eval_split"},
        "train_data": {"fingerprint": data.train_info.fingerprint, "split": data.train_info.split,
                       "selection_sha256": data.train_info.selection_sha256},
        "hyper_parameters": asdict(train_cfg),
        "seed": opts.seed,
    }
    key = cache.key_of(inputs)
    entry = cache.cached_entry(opts.cache_dir, "finetuned", key)
    reused = entry is not None
    if entry is None:
        def build(folder: Path) -> dict:
            torch.manual_seed(opts.seed)  # the new head's initialisation
            model = load_model(kind.auto_class, ref.path, **kind.model_kwargs())
            features = kind.train_features(data.train)
            steps, score_dev = _learning_curve(kind, model, data, train_cfg, len(features), opts)
            stats = fine_tune(model, features, cfg=train_cfg, seed=opts.seed,
                              pad_token_id=kind.tokenizer.pad_token_id, desc=f"fine-tuning {spec.name}",
                              checkpoint_steps=steps, checkpoint=score_dev)
            model.save_pretrained(folder, safe_serialization=True)
            kind.tokenizer.save_pretrained(folder)
            return {**stats.to_json(), "train_features": len(features)}

        entry = cache.build_entry(opts.cache_dir, "finetuned", key, inputs, build)
    return {"cache_key": key, "reused_from_cache": reused, "hyper_parameters": asdict(train_cfg),
            "training": entry["stats"], "path": entry["path"]}


CURVE_EVERY = 0.5  # epochs between the learning curve's dev scores


def _learning_curve(kind: TaskKind, model: torch.nn.Module, data: TaskData, cfg: TrainConfig, n_features: int,
                    opts: RunOptions):
    """Where a training of ``model`` (the baseline's, or a compressor's recovery) is scored on the dev rows (every
    half epoch and at the end), and the scoring; no steps where the task has no dev rows (spec
    ``train_from_eval.dev_fraction``)."""
    if data.dev is None:
        return (), None
    per_epoch, total = step_counts(n_features, cfg)
    steps = sorted({min(total, max(1, round(per_epoch * CURVE_EVERY * i)))
                    for i in range(1, math.ceil(cfg.epochs / CURVE_EVERY) + 1)} | {total})

    def score(step: int, seen: int) -> dict:
        evaluation = kind.evaluate(model, data.dev, batch_size=opts.eval_batch_size)
        return {"epochs": round(step / per_epoch, 3), "dev_scores": evaluation.scores}

    return steps, score


def is_done(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        return read_record(path).status == "ok"
    except ValueError:
        return False
