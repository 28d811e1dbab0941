"""The report's faster-recovery section: a cell recovered in bf16 beside the same options recovered by default."""

from __future__ import annotations

import json
import shutil

import pytest

from benchsuite.records import read_record
from benchsuite.report import bootstrap, write_reports
from benchsuite.report.faster import faster_pairs, recovery_times
from tests.test_report import MRPC, results  # noqa: F401 (the fixture)
from tests.test_report_ablation import HARD, _add, mrpc_f1, section_rows

SOFT = "distill-1243b599add5"  # the fixture's distill cell, recovered in fp32
BF16 = "distill-b16b16b16b16"  # a copy of it marked as recovered in bf16, answering as the hard-label cell did


def _add_bf16(results_dir, stem: str = BF16, options: dict | None = None, time_utc: str | None = None) -> None:
    """The fp32 cell's record as one recovered faster (``options``, bf16 by default): a test of the pairing and
    the arithmetic, not a measurement."""
    options = options or {"train_precision": "bf16"}
    folder = results_dir / "quick" / "mrpc" / "all-MiniLM-L6-v2"
    data = json.loads((folder / f"{SOFT}.json").read_text())
    data["compressor"]["config"]["params"].update(options)
    data["compressor"]["changed"] = options
    data["compressor"]["recovery"]["seconds"] = data["compressor"]["recovery"]["seconds"] / 2
    data["provenance"]["time_utc"] = time_utc or data["provenance"]["time_utc"]
    data["key"], data["predictions_file"] = stem.split("-")[1], f"{stem}.predictions.jsonl"
    data["primary_score"] = read_record(MRPC / f"{HARD}.json").primary_score
    data["scores"] = read_record(MRPC / f"{HARD}.json").scores
    (folder / f"{stem}.json").write_text(json.dumps(data))
    shutil.copy(MRPC / f"{HARD}.predictions.jsonl", folder / f"{stem}.predictions.jsonl")


def test_a_faster_cell_meets_its_default_twin_and_nothing_else(results):  # noqa: F811
    _add(results, HARD)  # same compressor, other options: not a twin
    _add_bf16(results)
    _add_bf16(results, "distill-ad0ad0ad0ad0", {"attention_dropout": 0.0})
    _add_bf16(results, "distill-b0b0b0b0b0b0", {"train_precision": "bf16", "attention_dropout": 0.0})
    folder = results / "quick" / "mrpc" / "all-MiniLM-L6-v2"
    loaded = [(read_record(p), p.name) for p in sorted(folder.glob("*.json"))]
    assert [(a[1], b[1]) for a, b in faster_pairs(loaded)] == [
        ("distill-ad0ad0ad0ad0.json", f"{SOFT}.json"), ("distill-b0b0b0b0b0b0.json", f"{SOFT}.json"),
        (f"{BF16}.json", f"{SOFT}.json")]


def test_the_section_gives_the_paired_difference_and_the_recovery_seconds(results, tmp_path):  # noqa: F811
    _add_bf16(results)
    write_reports(results, tmp_path / "out", plots=False)
    text = (tmp_path / "out" / "quick.md").read_text()
    rows = section_rows(text, "## Faster recovery against the default recipe", "| mrpc")
    assert len(rows) == 1
    row = rows[0]

    fp32 = read_record(MRPC / f"{SOFT}.json")
    bf16 = read_record(MRPC / f"{HARD}.json")  # what the copy answered
    interval = bootstrap.difference_interval(mrpc_f1(HARD), mrpc_f1(SOFT))
    assert row[1] == "`distill:train_precision=bf16`" and row[3] == "`distill`"
    assert float(row[2]) == pytest.approx(bf16.primary_score, abs=0.005)
    assert row[5] == (f"{bf16.primary_score - fp32.primary_score:+.2f} "
                      f"[{interval.low:+.2f} to {interval.high:+.2f}]")
    assert row[6] == "no measurable difference"
    seconds = fp32.compressor.recovery["seconds"]
    assert row[7] == f"{seconds:,.0f} / {seconds / 2:,.0f} (2.00x)"


def test_recoveries_recorded_in_different_sittings_are_not_timed_against_each_other(results):  # noqa: F811
    _add_bf16(results)
    _add_bf16(results, "distill-b1b1b1b1b1b1", {"train_precision": "bf16", "attention_dropout": 0.0},
              time_utc="2030-01-01T00:00:00+00:00")
    folder = results / "quick" / "mrpc" / "all-MiniLM-L6-v2"
    default = read_record(folder / f"{SOFT}.json")
    seconds = default.compressor.recovery["seconds"]
    times = f"{seconds:,.0f} / {seconds / 2:,.0f}"
    assert recovery_times(read_record(folder / f"{BF16}.json"), default) == f"{times} (2.00x)"  # one sitting
    later = recovery_times(read_record(folder / "distill-b1b1b1b1b1b1.json"), default)
    assert later.startswith(f"{times} (recorded ") and later.endswith(" h apart: not compared)")
    assert "x)" not in later


def test_no_faster_cell_no_section(results, tmp_path):  # noqa: F811
    write_reports(results, tmp_path / "out", plots=False)
    assert "Faster recovery" not in (tmp_path / "out" / "quick.md").read_text()
