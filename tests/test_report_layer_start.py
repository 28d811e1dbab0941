"""The report's section on where a shared layer starts: a cell started from its group's first layer beside the
same options started from the average."""

from __future__ import annotations

import json
import shutil

import pytest

from benchsuite.records import read_record
from benchsuite.report import bootstrap, write_reports
from benchsuite.report.layer_start import start_pairs
from tests.test_report import MRPC, results  # noqa: F401 (the fixture)
from tests.test_report_ablation import HARD, mrpc_f1, section_rows

SOFT = "distill-1243b599add5"  # the fixture's distill cell: its record and predictions stand in for a sharing cell
FOLDER = ("quick", "mrpc", "all-MiniLM-L6-v2")


def _add_shared(results_dir, stem: str, params: dict, answers: str = SOFT, cpu: str | None = None) -> None:
    """The fixture's distill record recast as a cross_layer cell with ``params`` that answered as ``answers``
    did: a test of the pairing and the arithmetic, not a measurement."""
    folder = results_dir.joinpath(*FOLDER)
    data = json.loads((folder / f"{SOFT}.json").read_text())
    data["compressor"].update(name="cross_layer", family="sharing", changed=params)
    data["compressor"]["config"]["params"] = {**data["compressor"]["config"]["params"], "groups": 3, **params}
    data["key"], data["predictions_file"] = stem.split("-")[1], f"{stem}.predictions.jsonl"
    if cpu is not None:
        data["cell"]["machine"]["cpu"] = cpu
    answered = read_record(MRPC / f"{answers}.json")
    data["primary_score"], data["scores"] = answered.primary_score, answered.scores
    (folder / f"{stem}.json").write_text(json.dumps(data))
    shutil.copy(MRPC / f"{answers}.predictions.jsonl", folder / f"{stem}.predictions.jsonl")


def _loaded(results_dir):
    folder = results_dir.joinpath(*FOLDER)
    return [(read_record(p), p.name) for p in sorted(folder.glob("*.json"))]


def test_a_picked_start_meets_its_average_twin_and_nothing_else(results):  # noqa: F811
    _add_shared(results, "cross_layer-aaaaaaaaaaaa", {"init": "average"})
    _add_shared(results, "cross_layer-ffffffffffff", {"init": "first"})
    _add_shared(results, "cross_layer-111111111111", {"init": "last"})
    _add_shared(results, "cross_layer-eeeeeeeeeeee", {"init": "first", "hidden_weight": 1.0})  # no twin
    assert [(a[1], b[1]) for a, b in start_pairs(_loaded(results))] == [
        ("cross_layer-111111111111.json", "cross_layer-aaaaaaaaaaaa.json"),
        ("cross_layer-ffffffffffff.json", "cross_layer-aaaaaaaaaaaa.json")]


def test_the_section_gives_the_paired_difference(results, tmp_path):  # noqa: F811
    _add_shared(results, "cross_layer-aaaaaaaaaaaa", {"init": "average"}, answers=HARD)
    _add_shared(results, "cross_layer-ffffffffffff", {"init": "first"})
    write_reports(results, tmp_path / "out", plots=False)
    text = (tmp_path / "out" / "quick.md").read_text()
    rows = section_rows(text, "## Where a shared layer starts", "| mrpc")
    assert len(rows) == 1
    row = rows[0]

    first, average = read_record(MRPC / f"{SOFT}.json"), read_record(MRPC / f"{HARD}.json")
    interval = bootstrap.difference_interval(mrpc_f1(SOFT), mrpc_f1(HARD))
    assert row[1] == "`cross_layer:init=first`" and row[2] == "first" and row[5] == "`cross_layer:init=average`"
    assert float(row[3]) == pytest.approx(first.primary_score, abs=0.005)
    assert float(row[6]) == pytest.approx(average.primary_score, abs=0.005)
    assert row[8] == (f"{first.primary_score - average.primary_score:+.2f} "
                      f"[{interval.low:+.2f} to {interval.high:+.2f}]")


def test_no_pair_no_section(results, tmp_path):  # noqa: F811
    _add_shared(results, "cross_layer-ffffffffffff", {"init": "first"})
    write_reports(results, tmp_path / "out", plots=False)
    assert "Where a shared layer starts" not in (tmp_path / "out" / "quick.md").read_text()


def test_the_average_twin_may_come_from_another_machine_the_same_machine_first(results):  # noqa: F811
    _add_shared(results, "cross_layer-bbbbbbbbbbbb", {"init": "average"}, cpu="Other CPU")
    _add_shared(results, "cross_layer-ffffffffffff", {"init": "first"})
    assert [(a[1], b[1]) for a, b in start_pairs(_loaded(results))] == [
        ("cross_layer-ffffffffffff.json", "cross_layer-bbbbbbbbbbbb.json")]
    _add_shared(results, "cross_layer-cccccccccccc", {"init": "average"})  # on the variant's own machine
    assert [(a[1], b[1]) for a, b in start_pairs(_loaded(results))] == [
        ("cross_layer-ffffffffffff.json", "cross_layer-cccccccccccc.json")]
