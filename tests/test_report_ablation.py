"""The report's ablation section: a distilled cell beside the same options on hard labels, paired."""

from __future__ import annotations

import json
import shutil

import pytest

from benchsuite.records import read_record
from benchsuite.report import bootstrap, write_reports
from benchsuite.report.ablation import ablation_pairs
from tests.test_report import MRPC, results  # noqa: F401 (the fixture)

# Committed mrpc cells of the fixture's machine (AVX2, 1 thread): the hard-label ablations of distill at its
# default depth and at 2 layers, and distill at 2 layers with the teacher; the fixture holds distill's default.
HARD, HARD_2, SOFT_2 = "distill-80a1976a03fe", "distill-304128126844", "distill-44906a56327b"


def _add(results_dir, *stems: str) -> None:
    folder = results_dir / "quick" / "mrpc" / "all-MiniLM-L6-v2"
    for stem in stems:
        data = json.loads((MRPC / f"{stem}.json").read_text())
        data["compressor"]["family"] = "distillation"
        (folder / f"{stem}.json").write_text(json.dumps(data))
        shutil.copy(MRPC / f"{stem}.predictions.jsonl", folder)


def section_rows(text: str, heading: str, start: str) -> list[list[str]]:
    """The cells of each table row starting with ``start`` in the report section under ``heading``."""
    section = text[text.index(heading):]
    section = section[:section.index("\n## ", 5)]
    return [[part.strip() for part in line.split("|")[1:-1]] for line in section.splitlines()
            if line.startswith(start)]


def mrpc_f1(stem: str) -> bootstrap.Statistic:
    """The bootstrap statistic of a committed mrpc cell's predictions."""
    lines = (MRPC / f"{stem}.predictions.jsonl").read_text().splitlines()
    return bootstrap.statistic("classification", "f1", [json.loads(line) for line in lines])


def _rows(text: str) -> list[list[str]]:
    return section_rows(text, "## Distillation against its hard-label ablation", "| `")


def test_each_distilled_cell_meets_its_own_ablation_and_nothing_else(results):  # noqa: F811
    _add(results, HARD, HARD_2, SOFT_2)
    folder = results / "quick" / "mrpc" / "all-MiniLM-L6-v2"
    loaded = [(read_record(p), p.name) for p in sorted(folder.glob("*.json"))]
    pairs = [(a[1], b[1]) for a, b in ablation_pairs(loaded)]
    assert pairs == [("distill-1243b599add5.json", f"{HARD}.json"), (f"{SOFT_2}.json", f"{HARD_2}.json")]


def test_the_section_gives_the_paired_difference_of_the_two_scores(results, tmp_path):  # noqa: F811
    _add(results, HARD)
    write_reports(results, tmp_path / "out", plots=False)
    rows = _rows((tmp_path / "out" / "quick.md").read_text())
    assert len(rows) == 1
    soft, hard = read_record(MRPC / "distill-1243b599add5.json"), read_record(MRPC / f"{HARD}.json")

    interval = bootstrap.difference_interval(mrpc_f1("distill-1243b599add5"), mrpc_f1(HARD))
    row = rows[0]
    assert row[0] == "`distill`" and row[3] == "`distill:alpha=0.0`"
    assert float(row[1]) == pytest.approx(soft.primary_score, abs=0.005)
    assert row[6] == (f"{soft.primary_score - hard.primary_score:+.2f} "
                      f"[{interval.low:+.2f} to {interval.high:+.2f}]")
    assert interval.low < 0 < interval.high and row[7] == "no measurable difference"


def test_no_ablation_no_section(results, tmp_path):  # noqa: F811
    write_reports(results, tmp_path / "out", plots=False)
    assert "hard-label ablation" not in (tmp_path / "out" / "quick.md").read_text()
