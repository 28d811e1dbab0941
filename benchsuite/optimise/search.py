"""``benchsuite optimise``: search pipelines for the fastest (or smallest) model that keeps a bound.

For each task, in turn, with an equal share of the budget left:

1. the fine-tuned baseline (cached) and its cell record, which every retention is taken against;
2. an Optuna study (multi-objective TPE: retention and the objective, with the bound as a constraint)
   proposes candidates from :class:`~benchsuite.optimise.space.SearchSpace` by ask and tell; the
   final-stage compressors alone are tried first (seconds each, where a training stage takes minutes);
3. a candidate that already has a cell record on this machine is read, not recomputed; one whose slice
   check or whose prefix's was stopped before is not tried again; one that failed in an earlier run is
   tried again (the code may have been fixed);
4. otherwise it is compressed as a cell is (prefix cache included). After each pipeline stage but the
   last, and after the last, the model is scored on a seeded slice of the evaluation split: when the
   upper end of its paired 95% bootstrap retention interval is below the bound, it is stopped there
   (later stages only compress further). A candidate that passes is scored on the full evaluation split
   and measured, and written as a cell record like any other;
5. the study file (:mod:`benchsuite.optimise.study`) is rewritten after every candidate.

The budget is wall time: each candidate runs under the deadline and one cut short is recorded as
``over_budget`` (its trained prefixes stay cached, so a later run with a larger budget resumes there).
Preparing a baseline that is not cached (fine-tuning) counts against the budget but is never cut.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchsuite.compressors.registry import build_compressor
from benchsuite.errors import UsageError
from benchsuite.isolation import cell_lock, time_limit
from benchsuite.models import resolve_model
from benchsuite.optimise.space import BASELINE, Candidate, SearchSpace
from benchsuite.optimise.study import (
    CandidateResult,
    Objective,
    RunInfo,
    SliceCheck,
    Study,
    StudyKey,
    chosen,
    decides,
    read_study,
    study_path,
    write_study,
)
from benchsuite.records import ErrorInfo, Record, provenance, read_record, record_path, write_json_atomic
from benchsuite.runner import (
    RunOptions,
    TaskSetup,
    cell_key,
    compress_cell,
    fail,
    fine_tuned_baseline,
    is_done,
    new_record,
    run_cell,
    setup_task,
    this_machine,
)
from benchsuite.tasks import load_task

log = logging.getLogger("benchsuite.optimise")

RESERVE_SECONDS = 5.0  # left at the end of a task's share for writing the study
FINAL_RESERVE_SECONDS = 30.0  # left at the end of the budget for starting up and writing the report (~20 s)
MAX_REPEATS = 40  # proposals in a row of candidates already decided: the sampler has converged
EXPLORE_AFTER = 3  # after this many repeats in a row, an untried candidate (seeded draw) is proposed next


class OutOfBudget(BaseException):  # noqa: N818 (not an Exception: a cell's own error handling must not catch it)
    """The optimiser's budget ran out while a candidate was computed."""


class StopCandidate(Exception):  # noqa: N818
    """A candidate (or its prefix) kept too little on the slice: it is stopped there."""

    def __init__(self, check: SliceCheck):
        super().__init__(check.checked)
        self.check = check


@dataclass(frozen=True)
class OptimiseOptions:
    run: RunOptions  # tasks, preset, folders, model, seed (its compressors are the pool, when given)
    min_retention: float  # a fraction: 0.99
    objective: Objective = "speed"
    budget_seconds: float = 3600.0
    max_stages: int = 3
    slice_examples: int = 256
    pool: tuple[str, ...] | None = None  # compressor names to search (default: all that declare a space)
    max_candidates: int | None = None  # new candidates per task and run (default: until the budget ends)

    def validate(self) -> None:
        if not 0 < self.min_retention <= 1.5:
            raise UsageError(f"--min-retention is a fraction of the baseline's score (0.99 keeps 99%), got "
                             f"{self.min_retention}")
        if self.objective not in ("speed", "size"):
            raise UsageError(f"--objective must be speed or size, got {self.objective!r}")
        if self.budget_seconds <= 0:
            raise UsageError(f"--budget-minutes must be > 0, got {self.budget_seconds / 60:g}")
        if self.slice_examples < 1:
            raise UsageError(f"--slice must be >= 1 examples, got {self.slice_examples}")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise UsageError(f"--max-candidates must be >= 1, got {self.max_candidates}")


@dataclass
class TaskOutcome:
    task: str
    study_file: Path | None  # None: the budget ended before this task's turn
    study: Study | None
    chosen: CandidateResult | None
    tried: int  # new candidates this run
    stopped_because: str


@dataclass
class OptimiseSummary:
    outcomes: list[TaskOutcome] = field(default_factory=list)
    seconds: float = 0.0


def optimise(opts: OptimiseOptions, *, progress=None) -> OptimiseSummary:
    """Search every task of ``opts.run.tasks`` within the budget; returns each task's study and choice."""
    opts.validate()
    _require_optuna()
    began = time.monotonic()
    deadline = began + opts.budget_seconds - min(FINAL_RESERVE_SECONDS, opts.budget_seconds / 10)
    specs = [load_task(name) for name in opts.run.tasks]
    spaces = {spec.kind: SearchSpace(spec.kind, max_stages=opts.max_stages, pool=opts.pool) for spec in specs}
    ref = resolve_model(opts.run.model)
    provenance(opts.run.seed)  # pins the git state read at start into every record of this run
    run_opts = replace(opts.run, force=False, cell_timeout=None)  # the budget is the only time limit here
    summary = OptimiseSummary()
    for index, spec in enumerate(specs):
        share = (deadline - time.monotonic()) / (len(specs) - index)
        if share <= RESERVE_SECONDS:
            log.warning("%s: no budget left for it; rerun with a larger --budget-minutes", spec.name)
            summary.outcomes.append(TaskOutcome(task=spec.name, study_file=None, study=None, chosen=None, tried=0,
                                                stopped_because="no budget left"))
            continue
        task_deadline = time.monotonic() + share
        setup = setup_task(spec, ref, run_opts)
        summary.outcomes.append(_search_task(setup, spaces[spec.kind], opts, run_opts, task_deadline, share,
                                             progress))
    summary.seconds = time.monotonic() - began
    return summary


def _require_optuna() -> None:
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec("optuna") is None:
        raise UsageError('benchsuite optimise needs Optuna (its sampler): pip install -e ".[optimise]"')


# --- one task ---------------------------------------------------------------------------------------------


@dataclass
class _Task:
    setup: TaskSetup
    kind: object
    baseline: dict
    baseline_record: tuple[Record, str]
    run_opts: RunOptions
    opts: OptimiseOptions
    slice: _Slice


def _search_task(setup: TaskSetup, space: SearchSpace, opts: OptimiseOptions, run_opts: RunOptions,
                 deadline: float, share: float, progress) -> TaskOutcome:
    import optuna  # noqa: PLC0415

    spec = setup.spec
    began = time.monotonic()
    kind = setup.kind()
    baseline = fine_tuned_baseline(setup, kind, run_opts)
    baseline_record = _baseline_cell(setup, kind, baseline, run_opts)
    task = _Task(setup, kind, baseline, baseline_record, run_opts, opts,
                 _Slice(setup, kind, baseline, opts.slice_examples, run_opts))
    key = StudyKey(preset=run_opts.preset.name, task=spec.name, model=setup.ref.name,
                   model_weights_sha256=setup.ref.weights_sha256, seed=run_opts.seed,
                   machine=asdict(this_machine()), min_retention=opts.min_retention, objective=opts.objective,
                   slice_examples=opts.slice_examples, max_stages=opts.max_stages)
    path = study_path(run_opts.results_dir, key, setup.ref.slug)
    study_file = read_study(path) if path.is_file() else Study(key=key)
    run_number = len(study_file.runs)
    git = provenance(run_opts.seed).git
    study_file.runs.append(RunInfo(started=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
                                   budget_seconds=round(share, 1), seconds=0.0, stopped_because="running",
                                   commit=git.commit, dirty=git.dirty, left_out=dict(sorted(space.refused.items()))))
    for value, why in sorted(space.refused.items()):
        log.info("%s: not searched on this machine: %s (%s)", spec.name, value, why)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=run_opts.seed, multivariate=True, group=True,
                                             n_startup_trials=8)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    for past in study_file.candidates:
        _replay(study, space, past, opts)
    tried_names = {c.spec.split(":")[0] for c in study_file.candidates
                   if "+" not in c.spec and c.status in ("measured", "stopped")}
    for params in space.seeds():
        if params["last"] not in tried_names:
            study.enqueue_trial(params)

    bar = _progress_bar(progress, spec.name, share)
    tried, repeats, stopped_because = 0, 0, "budget"
    while True:
        left = deadline - time.monotonic()
        if left <= RESERVE_SECONDS:
            stopped_because = "budget"
            break
        if opts.max_candidates is not None and tried >= opts.max_candidates:
            stopped_because = f"{opts.max_candidates} new candidates tried (--max-candidates)"
            break
        if not _untried(space, study_file, run_number):
            stopped_because = f"every candidate of the space decided ({space.size()})"
            break
        if repeats >= MAX_REPEATS:
            stopped_because = f"the sampler proposed only candidates already tried ({MAX_REPEATS} in a row)"
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TPE's notes on conditional spaces, once per call
            trial = study.ask()
        candidate = space.suggest(trial)
        known = study_file.find(candidate.spec, run_number)
        if known is None and candidate.stages:
            prefix = study_file.stopped_prefix(list(candidate.prefixes))
            if prefix is not None:  # free: a prefix of it kept too little already
                known = CandidateResult(number=len(study_file.candidates), run=run_number, spec=candidate.spec,
                                        params=candidate.params, status="stopped", slice=prefix.slice,
                                        reason=f"its prefix {prefix.slice.checked} was stopped on the slice "
                                               f"(candidate {prefix.number})", seconds={"total": 0.0})
                study_file.candidates.append(known)
                write_study(path, study_file)
        if known is not None:
            repeats += 1
            _tell(study, trial, known, opts)
            if repeats >= EXPLORE_AFTER:  # the sampler is circling what it knows: try an untried one next
                untried = _untried(space, study_file, run_number)
                if untried:
                    study.enqueue_trial(random.Random(run_opts.seed + len(study_file.candidates) + repeats)
                                        .choice(untried).params)
            continue
        repeats = 0
        result = _try(task, candidate, number=len(study_file.candidates), run=run_number,
                      seconds_left=left - RESERVE_SECONDS)
        tried += not result.reused_record  # a record read is no new candidate
        study_file.candidates.append(result)
        study_file.runs[-1].seconds = round(time.monotonic() - began, 1)
        write_study(path, study_file)
        _tell(study, trial, result, opts)
        _report_progress(bar, progress, spec.name, result, study_file, opts, deadline)
        if result.status == "over_budget":
            stopped_because = "budget"
            break
    study_file.runs[-1].seconds = round(time.monotonic() - began, 1)
    study_file.runs[-1].stopped_because = stopped_because
    write_study(path, study_file)
    if bar is not None:
        bar.close()
    return TaskOutcome(task=spec.name, study_file=path, study=study_file, chosen=chosen(study_file), tried=tried,
                       stopped_because=stopped_because)


def _untried(space: SearchSpace, study: Study, run: int) -> list[Candidate]:
    """The candidates of the space not decided yet in run ``run``, and not stopped already through a prefix."""
    decided = {c.spec for c in study.candidates if decides(c, run)}
    return [c for c in space.candidates() if c.spec not in decided
            and study.stopped_prefix(list(c.prefixes)) is None]


def _objective_value(result: CandidateResult, objective: str) -> float | None:
    return result.speedup if objective == "speed" else result.compression


def _tell(study, trial, result: CandidateResult, opts: OptimiseOptions) -> None:
    import optuna  # noqa: PLC0415

    bound = 100 * opts.min_retention
    value = _objective_value(result, opts.objective)
    if result.status == "measured" and result.retention is not None and value is not None:
        trial.set_constraint("retention", bound - result.retention)
        study.tell(trial, [result.retention, value])
    elif result.status == "stopped" and result.slice is not None:
        trial.set_constraint("retention", bound - result.slice.retention)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _replay(study, space: SearchSpace, past: CandidateResult, opts: OptimiseOptions) -> None:
    """Give the sampler a candidate of an earlier run (skipped when this run's space does not hold it)."""
    import optuna  # noqa: PLC0415

    distributions = space.distributions(past.params)
    if distributions is None or past.status == "over_budget":
        return
    bound = 100 * opts.min_retention
    value = _objective_value(past, opts.objective)
    states = optuna.trial.TrialState
    if past.status == "measured" and past.retention is not None and value is not None:
        trial = optuna.trial.create_trial(state=states.COMPLETE, values=[past.retention, value], params=past.params,
                                          distributions=distributions,
                                          constraints={"retention": bound - past.retention})
    elif past.status == "stopped" and past.slice is not None:
        trial = optuna.trial.create_trial(state=states.PRUNED, params=past.params, distributions=distributions,
                                          constraints={"retention": bound - past.slice.retention})
    else:
        trial = optuna.trial.create_trial(state=states.FAIL, params=past.params, distributions=distributions)
    study.add_trial(trial)


# --- one candidate ----------------------------------------------------------------------------------------


def _try(task: _Task, candidate: Candidate, *, number: int, run: int, seconds_left: float) -> CandidateResult:
    """Compute one candidate (or read its record) within ``seconds_left``."""
    setup, opts, run_opts = task.setup, task.opts, task.run_opts
    compressor = candidate.build()
    key = cell_key(setup.spec, setup.ref, setup.data, setup.train_cfg, compressor, run_opts)
    path = record_path(run_opts.results_dir, key, setup.ref.slug)
    result = CandidateResult(number=number, run=run, spec=candidate.spec, params=candidate.params,
                             status="measured")
    began = time.monotonic()
    seconds = result.seconds
    if is_done(path):
        result.reused_record = True
        _figures(task, result, read_record(path), path)
        seconds["total"] = round(time.monotonic() - began, 3)
        return result
    refused = compressor.refusal()
    if refused is not None:  # this machine cannot run it: decided before any work
        result.status, result.reason = "failed", f"refused here: {refused}"
        seconds["total"] = round(time.monotonic() - began, 3)
        return result
    bound = 100 * opts.min_retention

    def check(stages, model, kind=None) -> SliceCheck:
        started = time.monotonic()
        label = Candidate(tuple(candidate.stages[: len(stages)]), {}).spec
        found = task.slice.check(model, kind or task.kind, label)
        seconds["slice"] = round(seconds.get("slice", 0.0) + time.monotonic() - started, 3)
        if found.ci_high is not None and found.ci_high < bound:
            raise StopCandidate(found)
        return found

    try:
        with time_limit(seconds_left, error=lambda: OutOfBudget()), cell_lock(path) as held:
            if not held:
                result.status, result.reason = "failed", "another run is computing this cell"
                return result
            started = time.monotonic()
            try:
                compressed = compress_cell(compressor, setup.spec, task.kind, setup.data, task.baseline, run_opts,
                                           on_stage=lambda stages, model: check(stages, model))
            finally:
                seconds["compress"] = round(time.monotonic() - started - seconds.get("slice", 0.0), 3)
            result.slice = check(candidate.stages, compressed.result.model, compressed.kind)
            started = time.monotonic()
            record = run_cell(path, key, compressor, setup, task.kind, task.baseline, run_opts,
                              compressed=compressed)
            seconds["score_and_measure"] = round(time.monotonic() - started, 3)
        if record.status != "ok":
            result.status, result.reason, result.record = "failed", _error_line(record), _relative(task, path)
        else:
            _figures(task, result, record, path)
    except StopCandidate as stop:
        result.status, result.slice = "stopped", stop.check
        result.reason = (f"{stop.check.checked} kept {stop.check.retention:.1f}% on {stop.check.examples} slice "
                         f"examples (95% up to {stop.check.ci_high:.1f}%), below the bound {bound:g}%")
    except OutOfBudget:
        result.status, result.reason = "over_budget", "the budget ran out while it was computed"
    except Exception as exc:  # a compressor that raises fails its candidate; the search goes on
        log.error("%s / %s failed: %s: %s", setup.spec.name, candidate.spec, type(exc).__name__, exc)
        result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
        record = new_record(key, compressor, setup, task.baseline, run_opts)
        fail(record, ErrorInfo(type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc()),
             seed=run_opts.seed)
        write_json_atomic(path, record.to_json())
        result.record = _relative(task, path)
    seconds["total"] = round(time.monotonic() - began, 3)
    return result


def _figures(task: _Task, result: CandidateResult, record: Record, path: Path) -> None:
    """Retention (with its paired interval), speedup and compression, as the report derives them."""
    from benchsuite.report.cells import build_cells  # noqa: PLC0415

    relative = _relative(task, path)
    result.record = relative
    base, base_path = task.baseline_record
    cells = build_cells([(base, base_path), (record, relative)], task.run_opts.results_dir)
    cell = next(c for c in cells if c.record == relative)
    result.retention, result.retention_ci_low, result.retention_ci_high = (cell.retention, cell.retention_ci_low,
                                                                           cell.retention_ci_high)
    result.speedup, result.compression = cell.speedup, cell.compression
    result.meets_bound = cell.retention is not None and cell.retention >= 100 * task.opts.min_retention


def _relative(task: _Task, path: Path) -> str:
    return path.relative_to(task.run_opts.results_dir).as_posix()


def _error_line(record: Record) -> str:
    return f"{record.error.type}: {record.error.message}" if record.error else "failed"


def _baseline_cell(setup: TaskSetup, kind, baseline: dict, run_opts: RunOptions) -> tuple[Record, str]:
    """The baseline's cell record on this machine (computed when missing): the reference of every retention."""
    compressor = build_compressor(BASELINE)
    key = cell_key(setup.spec, setup.ref, setup.data, setup.train_cfg, compressor, run_opts)
    path = record_path(run_opts.results_dir, key, setup.ref.slug)
    if not is_done(path):
        with cell_lock(path) as held:
            if not held:
                raise UsageError(f"another run is computing the baseline cell {path}; wait for it and rerun")
            record = run_cell(path, key, compressor, setup, kind, baseline, run_opts)
            if record.status != "ok":
                raise UsageError(f"the baseline cell of {setup.spec.name} failed ({_error_line(record)}); see {path}")
    return read_record(path), path.relative_to(run_opts.results_dir).as_posix()


# --- the early-stopping slice -----------------------------------------------------------------------------


class _Slice:
    """A seeded sample of the evaluation rows, and the baseline's predictions on it (computed once)."""

    def __init__(self, setup: TaskSetup, kind, baseline: dict, examples: int, run_opts: RunOptions):
        rows = len(setup.data.eval)
        count = min(examples, rows)
        order = np.random.default_rng(run_opts.seed).permutation(rows)[:count]
        self.rows = setup.data.eval.select(sorted(int(i) for i in order))
        self.setup, self.kind, self.baseline, self.run_opts = setup, kind, baseline, run_opts
        self._base = None

    def _score(self, model, kind):
        """The primary score on the slice, and its resampling statistic (None for a metric that has none)."""
        from benchsuite.report import bootstrap  # noqa: PLC0415

        evaluation = kind.evaluate(model, self.rows, batch_size=self.run_opts.eval_batch_size)
        spec = self.setup.spec
        return (evaluation.scores[spec.primary_metric],
                bootstrap.statistic(spec.kind, spec.primary_metric, evaluation.predictions))

    def check(self, model, kind, label: str) -> SliceCheck:
        """``model``'s retention on the slice with its paired interval (no interval: it is never stopped)."""
        from benchsuite.models import load_model  # noqa: PLC0415
        from benchsuite.report import bootstrap  # noqa: PLC0415

        if self._base is None:
            self._base = self._score(load_model(self.kind.auto_class, self.baseline["path"]), self.kind)
        base_score, base_stat = self._base
        score, stat = self._score(model, kind)
        if not base_score or base_score != base_score:  # zero or undefined: no ratio
            return SliceCheck(examples=len(self.rows), checked=label, retention=None, ci_low=None, ci_high=None)
        interval = (bootstrap.retention_interval(stat, base_stat)
                    if stat is not None and base_stat is not None and set(stat.keys) == set(base_stat.keys) else None)
        return SliceCheck(examples=len(self.rows), checked=label, retention=round(100 * score / base_score, 3),
                          ci_low=round(interval.low, 3) if interval else None,
                          ci_high=round(interval.high, 3) if interval else None)


# --- progress ---------------------------------------------------------------------------------------------


def _progress_bar(progress, task: str, share: float):
    if progress is None:
        return None
    return progress(total=max(round(share), 1), desc=f"optimising {task}", unit="s", leave=False,
                    bar_format="{desc}: {bar} {n:.0f}/{total:.0f} s of its budget")


def _report_progress(bar, progress, task: str, result: CandidateResult, study: Study, opts: OptimiseOptions,
                     deadline: float) -> None:
    from benchsuite.optimise.frontier import candidate_frontier  # noqa: PLC0415

    best = chosen(study)
    frontier = candidate_frontier(study.candidates)
    line = f"[{task} #{result.number}] {result.spec}: {describe(result)} ({result.seconds.get('total', 0):.0f} s)"
    line += (f" | frontier {len(frontier)} | best {best.spec} " + _objective_text(best, opts.objective)
             if best else f" | frontier {len(frontier)} | none meets {100 * opts.min_retention:g}% yet")
    line += f" | {max(deadline - time.monotonic(), 0) / 60:.1f} min left"
    if bar is not None:
        bar.write(line)
        bar.update(max(round(result.seconds.get("total", 0)), 0))
    else:
        log.info(line)


def describe(result: CandidateResult) -> str:
    """One line on what became of a candidate."""
    if result.status == "measured":
        ci = (f" [{result.retention_ci_low:.1f}-{result.retention_ci_high:.1f}]"
              if result.retention_ci_low is not None else "")
        speed = f", speedup {result.speedup:.2f}x" if result.speedup is not None else ""
        size = f", {result.compression:.2f}x smaller" if result.compression is not None else ""
        reused = " (record reused)" if result.reused_record else ""
        return f"retention {result.retention:.2f}%{ci}{speed}{size}{reused}"
    return f"{result.status}: {result.reason}"


def _objective_text(result: CandidateResult, objective: str) -> str:
    if objective == "speed":
        return f"(speedup {result.speedup:.2f}x, {result.retention:.2f}%)"
    return f"({result.compression:.2f}x smaller, {result.retention:.2f}%)"
