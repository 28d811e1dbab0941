"""``benchsuite export RECORD --out DIR``: take a cell's compressed model home.

A record holds figures, not weights. Export recomputes the record's model exactly as its run did:
it checks that the task spec, model weights, data selection, seed and compressor config still
give the record's cell key (on the record's machine), takes the fine-tuned baseline from the
cache (training it on a miss) and compresses it through the runner's own step (a pipeline reuses
its cached prefixes, so exporting a pipeline the run just scored trains nothing again). It then
saves the model in its compressor's format, reloads it from the folder the way a user will
(:func:`load_exported`), re-evaluates it and compares its predictions with the record's, and
writes a model card (``README.md``) with the record's scores, size, speed, machine and the
commands that reproduce it. The folder appears only when everything succeeded.

Load an exported model with::

    from benchsuite.export import load_exported
    model, tokenizer = load_exported("DIR")

A model saved in the ``save_pretrained`` format (baseline, distill) also loads with
``AutoModelFor<Task>.from_pretrained("DIR")``.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from benchsuite.compressors.base import Compressor
from benchsuite.compressors.pipeline import Pipeline, stage_from_json, stage_label
from benchsuite.compressors.registry import get_compressor_class
from benchsuite.errors import UsageError
from benchsuite.fileio import write_text_atomic
from benchsuite.records import Record, predictions_path, read_record

EXPORT_FILE = "benchsuite-export.json"
PRESET_NAME = re.compile(r"(?P<base>.+?)(?:-train(?P<train>\d+))?(?:-eval(?P<eval>\d+))?")
log = logging.getLogger("benchsuite.export")


@dataclass(frozen=True)
class ExportSummary:
    folder: Path
    rows: int
    same_predictions: int  # rows whose predicted label (or span, or tags) equals the record's
    max_logit_difference: float | None  # over the rows the record's predictions file holds; None: no file
    scores: dict[str, float | None]  # the reloaded model's scores
    recorded_scores: dict[str, float | None]

    @property
    def reproduces(self) -> bool:
        return self.same_predictions == self.rows and all(
            _close(self.scores.get(k), v) for k, v in self.recorded_scores.items())


def compressor_of(record: Record) -> Compressor:
    """The record's compressor (or pipeline) with its recorded config; refused when this install hashes that
    config differently (the compressor's code changed its meaning since the run)."""
    info = record.compressor
    if info.stages:
        compressor: Compressor = Pipeline([stage_from_json({"name": s.name, "config": s.config}) for s in info.stages])
    else:
        cls = get_compressor_class(info.name)
        compressor = cls(cls.config_class.from_params(info.config["params"]))
    if compressor.config.config_hash() != info.config_hash:
        raise UsageError(f"{info.name}'s config hashes to {compressor.config.config_hash()} in this install, but the "
                         f"record says {info.config_hash}: the compressor changed since the run; re-run the cell")
    return compressor


def preset_of(name: str):
    """The record's preset, with the row limits its name carries (``quick-train500-eval100``)."""
    from benchsuite.presets import get_preset  # noqa: PLC0415

    match = PRESET_NAME.fullmatch(name)
    preset = get_preset(match["base"])
    if match["train"] or match["eval"]:
        preset = preset.limited(max_train=int(match["train"]) if match["train"] else None,
                                max_eval=int(match["eval"]) if match["eval"] else None)
    return preset


def export(record_file: Path, out: Path, *, cache_dir: Path, model: str | None = None, force: bool = False,
           batch_size: int = 64) -> ExportSummary:
    from benchsuite.models import resolve_model  # noqa: PLC0415
    from benchsuite.runner import RunOptions, cell_key, compress_cell, fine_tuned_baseline, setup_task  # noqa: PLC0415
    from benchsuite.tasks import load_task  # noqa: PLC0415

    record_file, out = Path(record_file), Path(out)
    try:
        record = read_record(record_file)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the record {record_file}: {exc}") from None
    if record.status != "ok":
        raise UsageError(f"{record_file} is a failed cell ({record.error.type if record.error else 'no error'}): "
                         "there is no model to export")
    if out.exists() and not force:
        raise UsageError(f"{out} exists; choose another --out or pass --force to replace it")
    compressor = compressor_of(record)
    spec = load_task(record.task.name)
    ref = resolve_model(model) if model else _record_model(record.model.name)
    if ref.weights_sha256 != record.model.weights_sha256:
        raise UsageError(f"the model {ref.name} at {ref.path} has other weights than the record's "
                         f"({ref.weights_sha256[:12]} vs {record.model.weights_sha256[:12]}); pass --model with the "
                         "checkpoint the record was computed from")
    opts = RunOptions(tasks=(spec.name,), compressors=(), preset=preset_of(record.preset), results_dir=out.parent,
                      cache_dir=cache_dir, model=ref.path, seed=record.cell.seed, eval_batch_size=batch_size)
    setup = setup_task(spec, ref, opts)
    key = cell_key(spec, ref, setup.data, setup.train_cfg, compressor, opts, machine=record.cell.machine)
    if key != record.cell:
        differ = [f.name for f in fields(key) if getattr(key, f.name) != getattr(record.cell, f.name)]
        raise UsageError(f"{record_file} cannot be reproduced by this install: its cell key differs in "
                         f"{', '.join(differ)} (task spec, data, seed or compressor changed since the run)")
    kind = setup.kind()
    baseline = fine_tuned_baseline(setup, kind, opts)
    cell = compress_cell(compressor, spec, kind, setup.data, baseline, opts)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        compressor.save(cell.result, tmp)
        if cell.result.tokenizer is None:  # the task's tokenizer, so that the folder is self-contained
            cell.kind.tokenizer.save_pretrained(tmp)
        write_text_atomic(tmp / EXPORT_FILE, json.dumps({
            "loader": f"{type(compressor).__module__}:{type(compressor).__qualname__}.load",
            "record": record_file.name, "key": record.key, "compressor": record.compressor.name,
            "spec": spec_text(compressor), "task": spec.name, "kind": spec.kind, "commit": record.provenance.git.commit,
        }, indent=2) + "\n")
        reloaded, _ = load_exported(tmp)
        evaluation = cell.kind.evaluate(reloaded, setup.data.eval, batch_size=batch_size)
        summary = _compare(record, record_file, evaluation, out)
        write_text_atomic(tmp / "README.md", model_card(record, record_file, summary, compressor))
        for path in tmp.rglob("*"):  # atomic writes create owner-only files; an export is for sharing
            if path.is_file():
                path.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def load_exported(folder: str | Path) -> tuple[Any, Any]:
    """An exported model and its tokenizer: the documented way to load what ``benchsuite export`` wrote."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    folder = Path(folder)
    try:
        meta = json.loads((folder / EXPORT_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{folder} is not a benchsuite export (no readable {EXPORT_FILE}: {exc})") from None
    module, _, attribute = meta["loader"].partition(":")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target(folder), AutoTokenizer.from_pretrained(folder)


def _compare(record: Record, record_file: Path, evaluation, out: Path) -> ExportSummary:
    scores = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in evaluation.scores.items()}
    recorded = predictions_path(record_file)
    rows = [json.loads(json.dumps(row)) for row in evaluation.predictions]
    same, largest = len(rows), None
    if recorded.is_file():
        old = [json.loads(line) for line in recorded.read_text().splitlines() if line.strip()]
        if len(old) != len(rows):
            raise UsageError(f"{recorded} holds {len(old)} predictions, the export evaluated {len(rows)} rows")
        same = sum(_prediction(a) == _prediction(b) for a, b in zip(old, rows, strict=True))
        largest = max((_logit_gap(a, b) for a, b in zip(old, rows, strict=True)), default=0.0)
    else:
        log.warning("%s is missing: predictions are compared by score only", recorded)
    return ExportSummary(folder=out, rows=len(rows), same_predictions=same, max_logit_difference=largest,
                         scores=scores, recorded_scores=dict(record.scores))


def _prediction(row: dict) -> Any:
    return {k: v for k, v in row.items() if k not in ("logits", "start_logits", "end_logits")}


def _logit_gap(a: dict, b: dict) -> float:
    gap = 0.0
    for name in ("logits", "start_logits", "end_logits"):
        if name in a and name in b:
            gap = max(gap, _max_abs(a[name], b[name]))
    return gap


def _max_abs(a, b) -> float:
    if isinstance(a, list):
        return max((_max_abs(x, y) for x, y in zip(a, b, strict=False)), default=0.0)
    return abs(float(a) - float(b))


def _close(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9))


def _record_model(name: str):
    """The record's model: the reference model when it is the one named (its weights hashed once), else the Hub
    id or folder the record names."""
    from benchsuite.models import resolve_model  # noqa: PLC0415

    default = resolve_model(None)
    return default if default.name == name else resolve_model(name)


def spec_text(compressor: Compressor) -> str:
    """The compressor as ``--compressors`` takes it."""
    return compressor.spec if isinstance(compressor, Pipeline) else stage_label(compressor)


def model_card(record: Record, record_file: Path, summary: ExportSummary, compressor: Compressor) -> str:
    m = record.measurements
    speed = m.speed or {}
    throughput = speed.get("speedup_throughput") or {}
    latency = speed.get("speedup_latency") or {}
    footprint, before = m.footprint or {}, m.footprint_before or {}
    disk = m.disk or {}
    memory = m.memory or {}
    spec = spec_text(compressor)
    lines = [
        f"# {record.model.name}, {record.task.name}, compressed with `{spec}`",
        "",
        f"Exported by `benchsuite export` from the record `{record_file.name}` (cell key {record.key}), "
        f"{record.preset} preset, seed {record.cell.seed}, commit {_commit(record)}.",
        "",
        "## Load it",
        "",
        "```python",
        "from benchsuite.export import load_exported",
        'model, tokenizer = load_exported("THIS_FOLDER")',
        "```",
        "",
        f"Saved as: {compressor.save_format}. The folder also holds the task's tokenizer.",
        "",
        "## Scores",
        "",
        f"Evaluated on {record.data.eval.rows_used} rows of {record.task.name} ({record.data.eval.split}).",
        "",
        "| metric | record | this export, reloaded from disk |",
        "|---|---|---|",
        *[f"| {k} | {_num(v)} | {_num(summary.scores.get(k))} |" for k, v in record.scores.items()],
        "",
        f"Predictions equal to the record's: {summary.same_predictions} of {summary.rows} rows"
        + (f"; largest logit difference {summary.max_logit_difference:.2g}."
           if summary.max_logit_difference is not None else " (the record's predictions file was missing)."),
        "",
        "## Size, memory and speed (from the record)",
        "",
        f"- Parameters: {footprint.get('params', '?'):,} (fine-tuned model: {before.get('params', '?'):,}); "
        f"non-zero: {footprint.get('params_nonzero', '?'):,}.",
        f"- On disk: {disk.get('size_bytes', 0) / 1e6:.2f} MB ({disk.get('format', '?')}), "
        f"gzip {disk.get('gzip_bytes', 0) / 1e6:.2f} MB.",
        f"- Peak memory of a fresh process loading it and running the evaluation batches: "
        f"{(memory.get('inference_peak_rss_bytes') or 0) / 1e6:.0f} MB.",
        f"- Speed against the fine-tuned model, interleaved on the same inputs: batch "
        f"{(speed.get('throughput') or {}).get('batch_size', '?')} throughput {_ratio(throughput)}, batch 1 latency "
        f"{_ratio(latency)} (median [IQR] of per-round ratios).",
        f"- Machine: {record.machine_label}. Speed is comparable only with records of this machine.",
        "",
        "## Reproduce",
        "",
        "```",
        f"benchsuite run --preset {_preset_flags(record.preset)} --tasks {record.task.name} --compressors \"{spec}\" "
        f"--seed {record.cell.seed} --threads {record.cell.machine.torch_threads}",
        f"benchsuite export {record_file} --out DIR",
        "```",
        "",
    ]
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _ratio(stats: dict) -> str:
    if not stats:
        return "not measured"
    return f"{stats['median']:.2f}x [{stats['q25']:.2f}-{stats['q75']:.2f}]"


def _commit(record: Record) -> str:
    commit = record.provenance.git.commit
    return f"{commit[:12]}{' (dirty)' if record.provenance.git.dirty else ''}" if commit else "unknown"


def _preset_flags(name: str) -> str:
    """``quick-train500`` -> ``quick --max-train 500``."""
    match = PRESET_NAME.fullmatch(name)
    flags = [match["base"]]
    if match["train"]:
        flags.append(f"--max-train {match['train']}")
    if match["eval"]:
        flags.append(f"--max-eval {match['eval']}")
    return " ".join(flags)
