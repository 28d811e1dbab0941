"""benchsuite report: summary CSV, plots, the answer-first Markdown, from a small results folder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from benchsuite.cellkey import CellKey
from benchsuite.records import read_record
from benchsuite.report import write_reports
from benchsuite.report.cells import COLUMNS, Cell, record_label
from benchsuite.report.curves import recovered_with_curves, recovery_curves
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


def _second_experiment(results: Path) -> Path:
    """The baseline and distill cells again as another experiment on the same machine (task version 2, other
    training rows), the baseline with a learning curve; returns the folder."""
    folder = results / "quick" / "mrpc" / "all-MiniLM-L6-v2"
    curve = [{"step": s, "seen": 32 * s, "train_loss": 1.0 / s, "epochs": s / 10,
              "dev_scores": {"accuracy": 60.0 + s, "f1": 70.0 + s}} for s in (5, 10, 15)]
    for stem in CELLS[:2]:
        data = json.loads((folder / f"{stem}.json").read_text())
        data["key"] = "v2" + data["key"][2:]
        data["cell"]["task_version"] = data["task"]["version"] = 2
        data["cell"]["train_data"]["selection_sha256"] = "another-selection"
        data["data"]["dev"] = {**data["data"]["eval"], "rows_used": 40, "held_apart": {
            "split": "validation", "group_by": "title", "groups": ["Article_A", "Article_B"], "rows": 40, "seed": 42}}
        data["baseline"]["cache_key"] = "another-baseline"
        if stem.startswith("baseline"):
            data["baseline"]["training"]["curve"] = curve
        else:  # the student's recovery scored the same dev rows, to 72 dev f1 of the teacher's 85
            data["compressor"]["recovery"]["curve"] = [{**row, "dev_scores": {"accuracy": 55.0 + s, "f1": 57.0 + s}}
                                                       for row, s in zip(curve, (5, 10, 15), strict=True)]
            data["compressor"]["recovery"]["kept_step"] = 10  # a keep_best recovery: its best dev checkpoint
        name = stem.split("-")[0] + "-v2" + stem.split("-")[1][2:]
        data["predictions_file"] = f"{name}.predictions.jsonl"
        (folder / f"{name}.json").write_text(json.dumps(data))
        shutil.copy(folder / f"{stem}.predictions.jsonl", folder / data["predictions_file"])
    return folder


def test_experiments_on_one_machine_are_kept_apart_and_a_learning_curve_is_shown(results, tmp_path):
    _second_experiment(results)
    written = write_reports(results, tmp_path / "out")
    frame = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert frame["experiment"].nunique() == 2 and frame["machine"].nunique() == 1
    for _, rows in frame.groupby("experiment"):  # each cell against its own experiment's baseline
        base = rows[rows.compressor == "baseline"].iloc[0]
        assert (rows.baseline_score == base.score).all()
    newest, older = sorted(frame["experiment"].unique(), key=lambda e: not e.startswith("task v2"))
    assert newest.startswith("task v2, train 3,668 x 3, eval 408, seed 42 [")
    text = (tmp_path / "out" / "quick.md").read_text()
    # the newest experiment comes first, each with its frontier; the older one's plot is named by its digest
    assert text.index(f"Experiment: {newest}.") < text.index(f"Experiment: {older}.")
    machine = frame["machine"].iloc[0]  # the two answer-first headings name their experiments, to tell them apart
    assert f"### mrpc: {machine}, {newest}\n" in text and f"### mrpc: {machine}, {older}\n" in text
    pngs = sorted(p.name for p in written if p.suffix == ".png")
    digest = older.rsplit("[", 1)[1].rstrip("]")
    assert pngs == sorted(["mrpc-all-minilm-l6-v2-amd-epyc-avx2-without-vnni-1-thread.png",
                           f"mrpc-all-minilm-l6-v2-amd-epyc-avx2-without-vnni-1-thread-{digest}.png",
                           "overview-all-minilm-l6-v2-amd-epyc-avx2-without-vnni-1-thread.png"])
    # the learning curve: the section, its rows, its dev groups and its plot
    section = text[text.index("## Baseline learning curves"):text.index("## Definitions")]
    assert "### mrpc (task v2), baseline `another-baseline`" in section
    assert "| 0.5 | 160 | 0.200 | 65.00 | 75.00 |" in section and "| 1.5 | 480 | 0.067 | 75.00 | 85.00 |" in section
    assert "Dev: 40 rows of validation (Article_A, Article_B)" in section
    plot = tmp_path / "out" / "quick" / "mrpc-learning-curve-another-.png"
    assert f"]({plot.relative_to(tmp_path / 'out').as_posix()})" in section
    image = matplotlib.image.imread(plot)
    assert image.shape[0] > 300 and image.std() > 0.05
    # the student's recovery curve, against the end of its teacher's
    recovery = text[text.index("## Recovery learning curves"):text.index("## Definitions")]
    assert "### mrpc, teacher `another-baseline` (dev f1 85.00 at the end of its training)" in recovery
    assert "| 1.5 | 480 | 0.067 | 72.00 | 84.7% |" in recovery and recovery.count("| `distill") == 3
    assert "| 1 (kept) | 320 | 0.100 | 67.00 | 78.8% |" in recovery
    image = matplotlib.image.imread(tmp_path / "out" / "quick" / "mrpc-recovery-curves-another-.png")
    assert image.shape[0] > 300 and image.std() > 0.05
    # without plots, the table is still there
    write_reports(results.parent / "results", tmp_path / "again", plots=False)
    assert "| 0.5 | 160 |" in (tmp_path / "again" / "quick.md").read_text()


def test_a_pipeline_stage_s_recovery_curve_is_found_and_named_by_its_stage(tmp_path):
    """A pipeline trains in a stage (``soft_movement+embedding_int8``): its curve lies under the stage's recovery
    and is found there, named with the stage; a record with no curve anywhere has none; a compressor's own curve
    is named by the record's label alone."""
    data = json.loads((MRPC / "distill-1243b599add5.json").read_text())
    rows = [{"step": s, "seen": 32 * s, "train_loss": 1.0 / s, "epochs": s / 10, "dev_scores": {"f1": 60.0 + s}}
            for s in (5, 10)]
    compressor = data["compressor"]
    int8 = json.loads((MRPC / "soft_movement+embedding_int8-74c435342012.json").read_text())["compressor"]["stages"][1]
    own_stage = {k: compressor[k] for k in ("name", "config", "config_hash", "changed", "provider", "family",
                                              "compute")}
    compressor.update(name="distill+embedding_int8", changed={"pipeline": "distill+embedding_int8"},
                      stages=[own_stage, int8])  # as a pipeline record names itself and its stages
    compressor["recovery"] = {"stages": [
        {"name": "distill", "recovery": {**compressor["recovery"], "curve": rows}, "seconds": 1.0},
        {"name": "embedding_int8", "recovery": None, "seconds": 0.0}]}
    (tmp_path / "staged.json").write_text(json.dumps(data))
    staged = read_record(tmp_path / "staged.json")
    assert recovery_curves(staged) == [(f"{record_label(staged)}, stage distill",
                                        data["compressor"]["recovery"]["stages"][0]["recovery"])]
    # a second pipeline that reused the cached first stage carries the same recovery: it is listed once
    twin = json.loads(json.dumps(data))
    twin["compressor"].update(name="distill+csr", config_hash="another-hash", changed={"pipeline": "distill+csr"})
    (tmp_path / "twin.json").write_text(json.dumps(twin))
    both = recovered_with_curves([staged, read_record(tmp_path / "twin.json")])
    assert both == {staged.baseline.cache_key: [("distill+csr, stage distill (also in 1 other pipeline)",
                                                 data["compressor"]["recovery"]["stages"][0]["recovery"])]}
    # where the records say which pipeline trained the stage and which took it from the cache, the trainer names it
    data["compressor"]["recovery"]["stages"][0]["reused_from_cache"] = False
    twin["compressor"]["recovery"]["stages"][0]["reused_from_cache"] = True
    (tmp_path / "staged.json").write_text(json.dumps(data))
    (tmp_path / "twin.json").write_text(json.dumps(twin))
    both = recovered_with_curves([read_record(tmp_path / "twin.json"), read_record(tmp_path / "staged.json")])
    assert both == {staged.baseline.cache_key: [("distill+embedding_int8, stage distill (also in 1 other pipeline)",
                                                 data["compressor"]["recovery"]["stages"][0]["recovery"])]}
    data["compressor"]["recovery"]["stages"][0]["recovery"].pop("curve")
    (tmp_path / "none.json").write_text(json.dumps(data))
    assert recovery_curves(read_record(tmp_path / "none.json")) == []
    data["compressor"]["recovery"] = {**data["compressor"]["recovery"]["stages"][0]["recovery"], "curve": rows}
    data["compressor"].update(name=own_stage["name"], changed=own_stage["changed"], stages=None)  # one compressor
    (tmp_path / "own.json").write_text(json.dumps(data))
    own = read_record(tmp_path / "own.json")
    assert recovery_curves(own) == [(record_label(own), data["compressor"]["recovery"])]


def test_two_machines_are_never_compared_nor_drawn_together(results, tmp_path):
    """Every cell again, as measured on another CPU, slower: each machine has its own baseline, sections, plots."""
    folder = results / "quick" / "mrpc" / "all-MiniLM-L6-v2"
    for stem in CELLS:
        data = json.loads((folder / f"{stem}.json").read_text())
        data["cell"]["machine"]["cpu"] = "Other CPU"
        data["key"] = CellKey.from_json(data["cell"]).digest()
        speed = (data["measurements"] or {}).get("speed")
        if speed:
            speed["throughput"]["samples_per_s"] = speed["throughput"]["samples_per_s"] / 2
        name = f"{data['compressor']['name']}-{data['key']}"
        data["predictions_file"] = f"{name}.predictions.jsonl"
        (folder / f"{name}.json").write_text(json.dumps(data))
        shutil.copy(folder / f"{stem}.predictions.jsonl", folder / data["predictions_file"])
    written = write_reports(results, tmp_path / "out")
    frame = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert sorted(frame.machine.str.split(",").str[0].unique()) == ["AMD EPYC", "Other CPU"]
    for machine, rows in frame.groupby("machine"):
        base = rows[rows.compressor == "baseline"]
        assert len(base) == 1 and (rows.baseline_score == base.score.iloc[0]).all(), machine
        if machine.startswith("Other CPU"):
            assert base.samples_per_s.iloc[0] == pytest.approx(frame[frame.machine != machine].pipe(
                lambda f: f[f.compressor == "baseline"].samples_per_s.iloc[0]) / 2, rel=1e-3)
    text = (tmp_path / "out" / "quick.md").read_text()
    for machine in frame.machine.unique():
        assert text.count(f"### mrpc: {machine}\n") == 2, machine  # its answer first, then its own tables
    pngs = [p.name for p in written if p.suffix == ".png"]
    assert len(pngs) == 4 and sum("other-cpu" in name for name in pngs) == 2  # a task plot and an overview each


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


def _cell(label: str, retention: float, speedup: float, size: int, family: str = "x", verdict: str = "loss",
          floor: str = "above the floor") -> Cell:
    values = dict.fromkeys(COLUMNS)
    values.update(model="m", task="t", preset="p", machine="cpu", compressor=label, config="-", family=family,
                  retention=retention, speedup=speedup, size_bytes=size, retention_verdict=verdict, seed=1, key=label,
                  floor_verdict=floor)
    return Cell(**values)


def test_the_frontier_keeps_exactly_the_undominated_cells():
    a = _cell("a", 99.0, 3.0, 20)  # fast and small
    b = _cell("b", 100.0, 1.0, 90)  # most accurate
    c = _cell("c", 98.0, 2.0, 30)  # worse than a on all three
    d = _cell("d", 99.0, 3.0, 20)  # ties a everywhere: neither dominates
    e = _cell("e", 90.0, 1.0, 10)  # the smallest
    assert [x.compressor for x in frontier([a, b, c, d, e])] == ["a", "b", "d", "e"]


def test_a_frontier_place_held_only_by_a_speed_lead_inside_the_noise_is_named():
    from dataclasses import replace  # noqa: PLC0415

    from benchsuite.report.frontier import held_by_noise  # noqa: PLC0415
    lucky = replace(_cell("lucky", 95.0, 1.01, 50), speedup_q25=1.00, speedup_q75=1.02)
    better = replace(_cell("better", 97.0, 1.00, 50), speedup_q25=0.99, speedup_q75=1.01)  # ranges overlap
    clearly_slower = replace(_cell("slow", 98.0, 0.90, 50), speedup_q25=0.89, speedup_q75=0.91)
    larger = replace(_cell("larger", 99.0, 1.00, 60), speedup_q25=0.99, speedup_q75=1.01)
    cells = [lucky, better, clearly_slower, larger]
    assert [c.compressor for c in frontier(cells)] == ["lucky", "better", "slow", "larger"]  # points: all stay
    assert [c.compressor for c in held_by_noise(lucky, cells)] == ["better"]
    assert held_by_noise(better, cells) == []  # larger keeps more but is larger: a trade, not noise
    baseline = replace(_cell("baseline", 100.0, 1.00, 50), speedup_q25=0.99, speedup_q75=1.01)
    assert held_by_noise(lucky, [lucky, baseline]) == [baseline]  # no smaller, no faster beyond noise: bought nothing
    no_ranges = _cell("bare", 95.0, 1.01, 50)
    assert held_by_noise(no_ranges, [no_ranges, _cell("b", 97.0, 1.00, 50)]) == []  # no ranges: medians decide


def test_a_familys_best_is_its_fastest_cell_that_keeps_accuracy():
    slow_exact = _cell("slow", 99.8, 1.1, 50, family="q", verdict="within noise")
    fast_lossy = _cell("fast", 95.0, 4.0, 20, family="q")
    fast_ok = _cell("ok", 99.1, 3.0, 25, family="q")
    only_lossy = _cell("lossy", 93.0, 2.0, 60, family="p")
    best = best_of_families([slow_exact, fast_lossy, fast_ok, only_lossy])
    assert best["q"].compressor == "ok" and best["p"].compressor == "lossy"


def test_a_cell_at_the_floor_is_never_on_the_frontier_nor_a_familys_best_if_another_is_above_it():
    useful = _cell("useful", 99.5, 1.5, 40, family="q", verdict="within noise")
    degenerate = _cell("degenerate", 94.0, 5.0, 10, family="q", floor="at the floor")  # fastest and smallest
    assert [c.compressor for c in frontier([useful, degenerate])] == ["useful"]
    assert best_of_families([useful, degenerate])["q"].compressor == "useful"
    lossy = _cell("lossy", 80.0, 1.2, 40, family="p")
    high_but_useless = _cell("useless", 94.0, 5.0, 10, family="p", floor="at the floor")
    assert best_of_families([lossy, high_but_useless])["p"].compressor == "lossy"


def test_a_plots_frontier_line_leaves_out_a_cell_at_the_floor():
    from benchsuite.report.plots import frontier_points  # noqa: PLC0415

    cells = [dataclasses.replace(_cell("fast", 95.0, 3.0, 20), score=80.0),
             dataclasses.replace(_cell("slow", 99.0, 1.0, 90), score=84.0),
             dataclasses.replace(_cell("fastest", 94.0, 5.0, 20, floor="at the floor"), score=81.0)]
    line = frontier_points(cells, lambda c: c.speedup, larger_x_better=True)
    assert line == [(1.0, 84.0), (3.0, 80.0)]  # "fastest" would be on it, were it above the floor


def test_the_report_gives_the_floor_and_marks_a_model_at_it(results, tmp_path):
    folder = results / "quick" / "mrpc" / "all-MiniLM-L6-v2"
    stem = "distill-1243b599add5"
    record = json.loads((folder / f"{stem}.json").read_text())
    rows = [json.loads(line) for line in (folder / f"{stem}.predictions.jsonl").read_text().splitlines()]
    for row in rows:
        row["prediction"] = 1  # now it answers "equivalent" for every pair
    (folder / f"{stem}.predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    positives = sum(r["reference"] == 1 for r in rows)
    floor = 100 * 2 * positives / (2 * positives + len(rows) - positives)
    record["scores"]["f1"] = record["primary_score"] = floor
    (folder / f"{stem}.json").write_text(json.dumps(record))
    write_reports(results, tmp_path / "out")
    frame = pd.read_csv(tmp_path / "out" / "summary.csv")
    rows = {r.compressor: r for r in frame.itertuples()}
    assert rows["baseline"].floor_score == pytest.approx(floor, abs=1e-4) and 80 < floor < 82  # mrpc's 81 F1
    assert rows["baseline"].floor_verdict == "above the floor"
    assert rows["distill"].floor_verdict == "at the floor" and rows["distill"].retention > 90
    text = (tmp_path / "out" / "quick.md").read_text()
    assert f"A predictor that ignores its input scores {floor:.2f}" in text
    assert "**at the floor**" in text
