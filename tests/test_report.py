"""benchsuite report: summary CSV, plots, the answer-first Markdown, from a small results folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from benchsuite.report import write_reports
from benchsuite.report.cells import COLUMNS, Cell
from benchsuite.report.frontier import best_of_families, frontier

REPO = Path(__file__).resolve().parents[1]
MRPC = REPO / "results" / "quick" / "mrpc" / "all-MiniLM-L6-v2"
# Committed mrpc cells of one machine (AVX2, 1 thread): a baseline and three families.
CELLS = ("baseline-064de2b287aa", "distill-1243b599add5", "heads-7c682ad5643c", "magnitude-543bcf853049")

REQUIRED = ("model, task, preset, machine, train_examples, eval_examples, metric, compressor, config, score, "
            "score_ci_low, score_ci_high, baseline_score, retention, retention_ci_low, retention_ci_high, params, "
            "params_nonzero, size_bytes, gzip_bytes, compression, peak_rss_mb, samples_per_s, speedup, speedup_b1, "
            "latency_p50_ms").split(", ")


@pytest.fixture()
def results(tmp_path) -> Path:
    """Four real records and their predictions; the magnitude cell's speed is removed (never measured)."""
    folder = tmp_path / "results" / "quick" / "mrpc" / "all-MiniLM-L6-v2"
    folder.mkdir(parents=True)
    for stem in CELLS:
        data = json.loads((MRPC / f"{stem}.json").read_text())
        data["compressor"]["family"] = {"baseline": "baseline", "distill": "distillation"}.get(
            data["compressor"]["name"], "pruning")
        if stem.startswith("magnitude"):
            data["measurements"]["speed"] = None
        (folder / f"{stem}.json").write_text(json.dumps(data))
        shutil.copy(MRPC / f"{stem}.predictions.jsonl", folder)
    return tmp_path / "results"


def test_summary_csv_plots_and_markdown(results, tmp_path):
    written = write_reports(results, tmp_path / "out")
    names = [p.relative_to(tmp_path / "out").as_posix() for p in written]
    assert names[:2] == ["quick.md", "summary.csv"]
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == 2 and all(p.parent.name == "quick" for p in pngs)  # the task's figure and the overview
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 500 and image.shape[1] > 900 and image.std() > 0.05  # not blank

    frame = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(frame.columns) == list(COLUMNS) and set(REQUIRED) <= set(frame.columns)
    assert len(frame) == 4
    rows = {r.compressor: r for r in frame.itertuples()}
    base, distill, magnitude = rows["baseline"], rows["distill"], rows["magnitude"]
    assert base.retention == 100 and base.retention_verdict == "reference" and base.compression == 1
    assert base.score_ci_low < base.score < base.score_ci_high
    assert distill.retention == pytest.approx(100 * distill.score / base.score, abs=1e-3)
    assert distill.retention_ci_low < distill.retention < distill.retention_ci_high
    assert distill.retention_ci_high < 100 and distill.retention_verdict == "loss"
    assert distill.compression == pytest.approx(base.size_bytes / distill.size_bytes, abs=1e-4)
    assert distill.speedup > 1.5 and distill.family == "distillation"
    assert pd.isna(magnitude.speedup) and pd.isna(magnitude.samples_per_s)  # not measured: empty, not invented
    assert magnitude.config == "embeddings=true,schedule=gradual"
    assert frame["score"].dtype == float and frame["params"].dtype.kind == "i"

    text = (tmp_path / "out" / "quick.md").read_text()
    assert text.index("## Which compressed model to ship") < text.index("## mrpc")
    assert "Frontier:" in text and "Best of each family:" in text
    assert f"]({pngs[0].relative_to(tmp_path / 'out').as_posix()})" in text
    assert "Scores:" in text and "Size, memory and speed:" in text


def test_reports_are_byte_identical_when_regenerated(results, tmp_path):
    first = write_reports(results, tmp_path / "a")
    second = write_reports(results, tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in second]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_predictions_that_do_not_give_the_recorded_score_get_no_interval(results, tmp_path, caplog):
    predictions = next(results.rglob("distill-*.predictions.jsonl"))
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    rows[0]["prediction"] = 1 - rows[0]["prediction"]
    rows[1]["prediction"] = 1 - rows[1]["prediction"]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_reports(results, tmp_path / "out", plots=False)
    distill = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("compressor").loc["distill"]
    assert pd.isna(distill.score_ci_low) and pd.isna(distill.retention_ci_low) and not pd.isna(distill.score)
    assert "no interval for it" in caplog.text


def _cell(label: str, retention: float, speedup: float, size: int, family: str = "x", verdict: str = "loss") -> Cell:
    values = dict.fromkeys(COLUMNS)
    values.update(model="m", task="t", preset="p", machine="cpu", compressor=label, config="-", family=family,
                  retention=retention, speedup=speedup, size_bytes=size, retention_verdict=verdict, seed=1, key=label)
    return Cell(**values)


def test_the_frontier_keeps_exactly_the_undominated_cells():
    a = _cell("a", 99.0, 3.0, 20)  # fast and small
    b = _cell("b", 100.0, 1.0, 90)  # most accurate
    c = _cell("c", 98.0, 2.0, 30)  # worse than a on all three
    d = _cell("d", 99.0, 3.0, 20)  # ties a everywhere: neither dominates
    e = _cell("e", 90.0, 1.0, 10)  # the smallest
    assert [x.compressor for x in frontier([a, b, c, d, e])] == ["a", "b", "d", "e"]


def test_a_familys_best_is_its_fastest_cell_that_keeps_accuracy():
    slow_exact = _cell("slow", 99.8, 1.1, 50, family="q", verdict="within noise")
    fast_lossy = _cell("fast", 95.0, 4.0, 20, family="q")
    fast_ok = _cell("ok", 99.1, 3.0, 25, family="q")
    only_lossy = _cell("lossy", 93.0, 2.0, 60, family="p")
    best = best_of_families([slow_exact, fast_lossy, fast_ok, only_lossy])
    assert best["q"].compressor == "ok" and best["p"].compressor == "lossy"
