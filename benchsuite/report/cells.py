"""One typed row per cell: a record joined with its baseline, its confidence intervals and verdicts.

This is the one place where a report's figures are derived from records; the summary CSV, the
Markdown and the plots all read these rows. A figure the record does not hold stays ``None``
(an empty CSV field), never a guess. The baseline of a cell is the ``baseline`` record with the
same cell key except the compressor: same model weights, task spec, data selection, seed,
epochs and machine (CPU, vector extensions, threads), so retention, compression and speedup are
only ever taken against a reference measured under the same conditions. A cell's ``experiment``
names what it shares with its baseline apart from the machine; reports never put two experiments on
one frontier or plot. A cell's ``floor_score`` is what a predictor that ignores its input scores on the
same evaluation units (:func:`~benchsuite.report.bootstrap.floor`), and ``floor_verdict`` says whether
the cell's paired interval over it clears zero: a retention figure means little for a model at the floor.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path

from benchsuite.records import Record
from benchsuite.report import bootstrap

log = logging.getLogger("benchsuite.report")

AT_FLOOR = "at the floor"
SCORE_TOLERANCE = 1e-6  # a recomputed score must equal the recorded one, or the predictions are not its own


@dataclass(frozen=True)
class Cell:
    """A summary row. Field order is the CSV's column order."""

    model: str
    task: str
    preset: str
    machine: str
    # The experiment a cell belongs to (task version, data, epochs, seed, and a digest of its baseline key
    # without the machine): cells of different experiments are never compared on one frontier or plot.
    experiment: str
    train_examples: int
    eval_examples: int
    metric: str
    compressor: str
    family: str
    config: str  # the options set away from their defaults ("-" for none)
    score: float | None
    score_ci_low: float | None
    score_ci_high: float | None
    baseline_score: float | None
    retention: float | None  # percent
    retention_ci_low: float | None
    retention_ci_high: float | None
    retention_verdict: str | None  # "loss", "within noise", "gain": the paired interval against 100
    floor_score: float | None  # the best input-ignoring predictor's score on the same evaluation units
    floor_verdict: str | None  # "above the floor", or "at the floor": the paired difference interval reaches 0
    params: int | None
    params_nonzero: int | None
    size_bytes: int | None
    gzip_bytes: int | None
    compression: float | None  # baseline file size over this one
    peak_rss_mb: float | None
    samples_per_s: float | None
    speedup: float | None  # batch 32, median
    speedup_q25: float | None
    speedup_q75: float | None
    speedup_b1: float | None
    latency_p50_ms: float | None
    speed_verdict: str | None
    seed: int
    key: str
    commit: str | None
    record: str  # the record's path under the results folder

    @property
    def label(self) -> str:
        return label(self.compressor, self.config, pipeline=self.family == "pipeline")

    @property
    def is_baseline(self) -> bool:
        return self.compressor == "baseline"

    @property
    def at_floor(self) -> bool:
        return self.floor_verdict == AT_FLOOR


COLUMNS = tuple(f.name for f in fields(Cell))


def label(compressor: str, config: str, *, pipeline: bool) -> str:
    """A cell's name as ``--compressors`` takes it: ``config`` is :func:`options_text`'s."""
    if pipeline:  # its config is the whole chain
        return config
    return compressor if config == "-" else f"{compressor}:{config}"


def record_label(record: Record) -> str:
    return label(record.compressor.name, options_text(record), pipeline=bool(record.compressor.stages))


def options_text(record: Record) -> str:
    """The options set away from their defaults; every option when the record does not say which."""
    if record.compressor.stages:  # a pipeline: the chain as --compressors takes it
        return record.compressor.changed["pipeline"]
    params = record.compressor.config.get("params") or {}
    shown = params if record.compressor.changed is None else record.compressor.changed
    return ",".join(f"{k}={_option(v)}" for k, v in sorted(shown.items())) or "-"


def _option(value) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def baseline_key(record: Record) -> tuple:
    """The cell key without the compressor: what a cell shares with its baseline."""
    cell = record.cell
    return (cell.preset, cell.task, cell.task_spec_digest, cell.model_weights_sha256, cell.train_data,
            cell.eval_data, cell.epochs, cell.seed, cell.machine)


def experiment_key(record: Record) -> tuple:
    """The baseline key without the machine: what a cell shares with the same experiment run elsewhere."""
    return baseline_key(record)[:-1]


def experiment(record: Record) -> str:
    """The cell's experiment in words, with a digest that tells apart two that read alike."""
    cell = record.cell
    digest = hashlib.sha256(repr(experiment_key(record)).encode()).hexdigest()[:6]
    return (f"task v{cell.task_version}, train {record.data.train.rows_used:,} x {cell.epochs:g}, "
            f"eval {record.data.eval.rows_used:,}, seed {cell.seed} [{digest}]")


def percent(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """A percentage for a table, with its interval where both ends are known: ``95.50% [92.60-98.40]``."""
    if value is None:
        return "n/a"
    return f"{value:.2f}% [{low:.2f}-{high:.2f}]" if low is not None and high is not None else f"{value:.2f}%"


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


class Predictions:
    """Per-cell primary-metric statistics from the saved predictions, read once."""

    def __init__(self, results_dir: Path):
        self.results_dir = results_dir
        self._cache: dict[str, bootstrap.Statistic | None] = {}
        self._rows: dict[str, list[dict] | None] = {}
        self._floors: dict[str, bootstrap.Statistic | None] = {}

    def _read(self, record: Record, record_path: str) -> list[dict] | None:
        if record_path not in self._rows:
            path = (self.results_dir / record_path).parent / record.predictions_file
            if path.is_file():
                self._rows[record_path] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            else:
                log.warning("%s: predictions file %s is missing; no interval for it", record_path, path.name)
                self._rows[record_path] = None
        return self._rows[record_path]

    def floor(self, record: Record, record_path: str) -> bootstrap.Statistic | None:
        """The input-ignoring predictor's statistic on this record's evaluation units (from its references)."""
        if record_path not in self._floors:
            rows = self._read(record, record_path) if record.predictions_file else None
            found = bootstrap.floor(record.task.kind, record.task.primary_metric, rows) if rows else None
            self._floors[record_path] = found[1] if found else None
        return self._floors[record_path]

    def statistic(self, record: Record, record_path: str) -> bootstrap.Statistic | None:
        if record_path in self._cache:
            return self._cache[record_path]
        stat = None
        if record.predictions_file and record.primary_score is not None:
            rows = self._read(record, record_path)
            if rows is not None:
                stat = bootstrap.statistic(record.task.kind, record.task.primary_metric, rows)
                if stat is not None and abs(stat.point() - record.primary_score) > SCORE_TOLERANCE * 100:
                    log.warning("%s: its predictions give %s %.4f, the record says %.4f; no interval for it",
                                record_path, record.task.primary_metric, stat.point(), record.primary_score)
                    stat = None
        self._cache[record_path] = stat
        return stat


def build_cells(loaded: list[tuple[Record, str]], results_dir: Path, *,
                predictions: Predictions | None = None) -> list[Cell]:
    """A row per successful cell (failed cells have no figures; the Markdown lists them), sorted. ``predictions``:
    the statistics already read, to share with other sections (read from ``results_dir`` when not given)."""
    ok = [(r, p) for r, p in loaded if r.status == "ok"]
    baselines: dict[tuple, tuple[Record, str]] = {}
    for record, path in sorted(ok, key=lambda x: x[1]):
        if record.compressor.name == "baseline":
            baselines.setdefault(baseline_key(record), (record, path))
    predictions = predictions or Predictions(results_dir)
    cells = [_cell(record, path, baselines.get(baseline_key(record)), predictions) for record, path in ok]
    return sorted(cells, key=lambda c: (c.preset, c.task, c.model, c.machine, c.experiment, not c.is_baseline, c.label,
                                        c.key))


def _cell(record: Record, path: str, base: tuple[Record, str] | None, predictions: Predictions) -> Cell:
    m = record.measurements
    fp, disk, memory, speed = m.footprint or {}, m.disk or {}, m.memory or {}, m.speed
    stat = predictions.statistic(record, path)
    score_ci = bootstrap.score_interval(stat) if stat is not None else None
    base_record = base[0] if base else None
    retention = retention_ci = None
    if base_record is not None and base_record.primary_score and record.primary_score is not None:
        retention = 100 * record.primary_score / base_record.primary_score
        base_stat = predictions.statistic(base_record, base[1])
        if stat is not None and base_stat is not None and set(stat.keys) == set(base_stat.keys):
            retention_ci = (bootstrap.Interval(100.0, 100.0) if base[1] == path
                            else bootstrap.retention_interval(stat, base_stat))
    floor_stat = predictions.floor(*(base or (record, path))) if stat is not None else None
    floor_score = floor_verdict = None
    if floor_stat is not None and set(floor_stat.keys) == set(stat.keys):
        floor_score = floor_stat.point()
        above = bootstrap.difference_interval(stat, floor_stat)
        if above is not None:  # no verdict where the paired interval is undefined
            floor_verdict = "above the floor" if above.low > 0 else AT_FLOOR
    base_size = (base_record.measurements.disk or {}).get("size_bytes") if base_record else None
    throughput = speed["speedup_throughput"] if speed else None
    cell = Cell(
        model=record.model.name.split("/")[-1], task=record.task.name, preset=record.preset,
        machine=record.cell.machine.label(), experiment=experiment(record), train_examples=record.data.train.rows_used,
        eval_examples=record.data.eval.rows_used, metric=record.task.primary_metric,
        compressor=record.compressor.name, family=record.compressor.family or "unrecorded",
        config=options_text(record), score=_round(record.primary_score, 4),
        score_ci_low=_round(score_ci.low if score_ci else None, 4),
        score_ci_high=_round(score_ci.high if score_ci else None, 4),
        baseline_score=_round(base_record.primary_score if base_record else None, 4),
        retention=_round(retention, 3), retention_ci_low=_round(retention_ci.low if retention_ci else None, 3),
        retention_ci_high=_round(retention_ci.high if retention_ci else None, 3),
        retention_verdict=_retention_verdict(retention_ci), floor_score=_round(floor_score, 4),
        floor_verdict=floor_verdict,
        params=fp.get("params"), params_nonzero=fp.get("params_nonzero"), size_bytes=disk.get("size_bytes"),
        gzip_bytes=disk.get("gzip_bytes"),
        compression=_round(base_size / disk["size_bytes"], 4) if base_size and disk.get("size_bytes") else None,
        peak_rss_mb=_round(memory["inference_peak_rss_bytes"] / 2**20, 1) if memory else None,
        samples_per_s=_round(speed["throughput"]["samples_per_s"], 2) if speed else None,
        speedup=throughput["median"] if throughput else None, speedup_q25=throughput["q25"] if throughput else None,
        speedup_q75=throughput["q75"] if throughput else None,
        speedup_b1=speed["speedup_latency"]["median"] if speed else None,
        latency_p50_ms=_round(speed["latency_batch1"]["model"]["p50_ms"], 3) if speed else None,
        speed_verdict=m.speedup_realised, seed=record.cell.seed, key=record.key, commit=record.provenance.git.commit,
        record=path,
    )
    return replace(cell, retention_verdict="reference") if base is not None and base[1] == path else cell


def _retention_verdict(interval: bootstrap.Interval | None) -> str | None:
    if interval is None:
        return None
    if interval.high < 100:
        return "loss"
    if interval.low > 100:
        return "gain"
    return "within noise"
