"""benchsuite optimise on the tiny model: a plugin's declared space is searched, the bound is respected, a
second run resumes without redoing a candidate, poor candidates stop on the slice (their pipelines too,
without work), and the budget stops the search."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from benchsuite.cli import main
from benchsuite.compressors.int8 import DynamicInt8, Int8Config
from benchsuite.errors import UsageError
from benchsuite.optimise import search
from benchsuite.optimise.space import SearchSpace
from benchsuite.optimise.study import CandidateResult, SliceCheck, Study, StudyKey, chosen, read_study

pytestmark = pytest.mark.xdist_group("optimise")

STOPPED = "zero_small:threshold=0.01"  # the example plugin (examples/benchsuite-zero-small), installed


def optimise(tiny_model, results, cache, *extra, compressors="zero_small,fp16", bound="0.9"):
    return main(["optimise", "--preset", "smoke", "--model", str(tiny_model), "--tasks", "sst2", "--compressors",
                 compressors, "--min-retention", bound, "--results-dir", str(results), "--cache-dir", str(cache),
                 "--out", str(results.parent / "reports"), "--threads", "1", *extra])


def study_of(results: Path) -> tuple[Study, Path]:
    (path,) = results.rglob("*.study.json")
    return read_study(path), path


def cell_records(results: Path) -> dict[str, Path]:
    """Cell record path by its compressor spec, as the study names candidates."""
    found = {}
    for path in results.rglob("*.json"):
        if path.name.endswith(".study.json"):
            continue
        found[path.relative_to(results).as_posix()] = path
    return found


@pytest.fixture(scope="module")
def two_runs(tiny_model, mirror, tmp_path_factory):
    """Two runs of one study over an installed plugin's space: the first stops after 2 new candidates, the second
    searches the rest. Slice checks of zero_small:threshold=0.01 (and anything after it) read 50%: it must be
    stopped, and its pipeline with it. (A plugin registered only in this process could not be a pipeline's
    first stage: the memory probe reloads the pipeline in a fresh process.)"""
    from benchsuite.compressors.registry import registered

    if "zero_small" not in registered():
        pytest.skip("the example plugin is not installed: pip install -e examples/benchsuite-zero-small")
    folder = tmp_path_factory.mktemp("optimise")
    results, cache = folder / "results", folder / "cache"
    real_check = search._Slice.check

    def check(self, model, kind, label):
        if label.startswith(STOPPED):
            return SliceCheck(examples=len(self.rows), checked=label, retention=50.0, ci_low=40.0, ci_high=60.0)
        return real_check(self, model, kind, label)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCHSUITE_DATA_DIR", str(mirror))
        patch.setattr(search._Slice, "check", check)
        assert optimise(tiny_model, results, cache, "--max-stages", "2", "--max-candidates", "2") == 0
        first, path = study_of(results)
        first_records = {p: f.stat().st_mtime_ns for p, f in cell_records(results).items()}
        assert optimise(tiny_model, results, cache, "--max-stages", "2") == 0
        second, _ = study_of(results)
    return {"first": first, "second": second, "first_records": first_records, "results": results,
            "reports": folder / "reports", "path": path}


def test_a_plugins_declared_space_is_searched_to_the_end(two_runs):
    study = two_runs["second"]
    specs = {c.spec for c in study.candidates}
    # max 2 stages: zero_small (trainable, 2 thresholds) then optionally fp16 (last only), fp16 alone, the baseline
    assert specs == {"baseline", "fp16", "zero_small", STOPPED, "zero_small+fp16", f"{STOPPED}+fp16"}
    assert study.runs[-1].stopped_because.startswith("every candidate of the space decided")


def test_a_second_run_resumes_without_redoing_a_candidate(two_runs):
    first, second = two_runs["first"], two_runs["second"]
    assert len(first.runs) == 1 and len(second.runs) == 2
    assert [c.run for c in first.candidates] == [0] * len(first.candidates)
    assert len([c for c in first.candidates if not c.reused_record]) == 2
    new = [c for c in second.candidates if c.run == 1]
    assert new and not {c.spec for c in new} & {c.spec for c in first.candidates}
    specs = [c.spec for c in second.candidates]
    assert len(specs) == len(set(specs)), "no candidate is tried twice"
    for path, mtime in two_runs["first_records"].items():  # the first run's records were not rewritten
        assert (two_runs["results"] / path).stat().st_mtime_ns == mtime


def test_a_poor_candidate_stops_on_the_slice_and_so_does_its_pipeline_without_a_record(two_runs):
    study = two_runs["second"]
    stopped = {c.spec: c for c in study.candidates if c.status == "stopped"}
    assert set(stopped) == {STOPPED, f"{STOPPED}+fp16"}
    for candidate in stopped.values():
        assert candidate.record is None and candidate.slice.checked == STOPPED and candidate.slice.ci_high == 60.0
    names = [Path(p).name for p in cell_records(two_runs["results"])]
    assert sum(n.startswith("zero_small-") for n in names) == 1  # the default threshold only
    assert sum(n.startswith("zero_small+fp16-") for n in names) == 1


def test_every_measured_candidate_has_a_record_and_the_choice_meets_the_bound(two_runs):
    study = two_runs["second"]
    bound = 100 * study.key.min_retention
    for candidate in study.candidates:
        if candidate.status == "measured":
            record = json.loads((two_runs["results"] / candidate.record).read_text())
            assert record["status"] == "ok" and candidate.retention is not None and candidate.speedup is not None
            assert candidate.meets_bound == (candidate.retention >= bound)
    best = chosen(study)
    assert best is not None and best.retention >= bound and best.spec != "baseline"
    assert best.speedup == max(c.speedup for c in study.candidates if c.meets_bound and c.spec != "baseline")


def test_the_report_section_and_plot_are_written(two_runs):
    text = (two_runs["reports"] / "optimise.md").read_text()
    assert "## sst2 (smoke): keep 90%, maximise speed" in text and "**Chosen: `" in text
    assert f"| stopped: {STOPPED} kept 50.0%" in text
    (png,) = (two_runs["reports"] / "optimise").glob("sst2-speed-*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    # benchsuite report regenerates the same bytes from the study files, and links them from the preset's report
    figure = png.read_bytes()
    assert main(["report", "--results-dir", str(two_runs["results"]), "--out", str(two_runs["reports"])]) == 0
    assert (two_runs["reports"] / "optimise.md").read_text() == text and png.read_bytes() == figure
    assert "searched pipelines for sst2: its choices" in (two_runs["reports"] / "smoke.md").read_text()


def _candidate(number, spec, retention, speedup, compression=2.0, bound=99.0):
    return CandidateResult(number=number, run=0, spec=spec, params={}, status="measured", retention=retention,
                           speedup=speedup, compression=compression, meets_bound=retention >= bound)


def test_the_choice_never_breaks_the_bound_for_speed_or_size():
    key = StudyKey(preset="quick", task="sst2", model="m", model_weights_sha256="0", seed=42, machine={},
                   min_retention=0.99, objective="speed", slice_examples=256, max_stages=3)
    fast_but_poor = _candidate(0, "distill:layers=2+dynamic_int8", 95.0, 5.0, compression=9.0)
    kept = _candidate(1, "dynamic_int8", 99.5, 1.5, compression=3.9)
    slower_smaller = _candidate(2, "heads+dynamic_int8", 99.2, 1.4, compression=4.5)
    study = Study(key=key, candidates=[fast_but_poor, kept, slower_smaller])
    assert chosen(study) is kept
    study.key = StudyKey(**{**key.__dict__, "objective": "size"})
    assert chosen(study) is slower_smaller
    study.candidates = [fast_but_poor]
    assert chosen(study) is None


def test_the_budget_stops_a_candidate_and_the_search(tiny_model, data_env, plugins, tmp_path):
    results = tmp_path / "results"
    began = time.monotonic()
    assert optimise(tiny_model, results, tmp_path / "cache", "--budget-minutes", "0.5", "--max-stages", "1",
                    compressors="slow") == 0
    elapsed = time.monotonic() - began
    assert elapsed < 30 + 10, f"a 30 s budget took {elapsed:.0f} s"
    study, _ = study_of(results)
    last = study.candidates[-1]
    assert last.spec == "slow:seconds=600.0" and last.status == "over_budget" and last.record is None
    assert study.runs[-1].stopped_because == "budget"
    assert not any("slow" in p for p in cell_records(results)), "no record for a candidate cut short"


def test_the_space_orders_stages_and_builds_every_candidate():
    space = SearchSpace("classification", pool=["distill", "heads", "dynamic_int8", "fp16"])
    assert space.trainable == ["distill", "heads"] and space.terminal == ["dynamic_int8", "fp16"]
    specs = [c.spec for c in space.candidates()]
    int8 = 2 * len(space.values["dynamic_int8"]["reduce_range"])  # reduce_range=False only where VNNI allows it
    assert len(specs) == len(set(specs)) == space.size() == (1 + 3 * (1 + 4) + 4) * (1 + int8 + 1)
    for candidate in space.candidates():
        names = [stage.name for stage in candidate.stages]
        assert names == sorted(names, key=["distill", "heads", "dynamic_int8", "fp16"].index)
        assert sum(n in ("dynamic_int8", "fp16") for n in names) <= 1 and len(names) <= 3
        candidate.build()


@pytest.mark.parametrize(("args", "message"), [
    (["--min-retention", "99"], "fraction of the baseline's score"),
    (["--min-retention", "0.99", "--compressors", "baseline"], "declares no search_space"),
    (["--min-retention", "0.99", "--budget-minutes", "0"], "--budget-minutes must be > 0"),
])
def test_bad_settings_are_refused_with_the_fix(args, message, tiny_model, data_env, tmp_path, capsys):
    code = main(["optimise", "--preset", "smoke", "--model", str(tiny_model), "--tasks", "sst2",
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_space_refuses_a_pool_name_without_a_space():
    with pytest.raises(UsageError, match="declares no search_space"):
        SearchSpace("classification", pool=["baseline"])


def test_values_this_machine_refuses_are_left_out_of_the_space():
    from benchsuite.optimise.space import _runnable_values
    from tests.plugins import ZeroHalf

    class Picky(ZeroHalf):
        name = "picky"
        search_space = {"factor": (0.5, 1.0)}

        def refusal(self):
            return "no full factor here" if self.config.factor == 1.0 else None

    values, refused = _runnable_values(Picky)
    assert values == {"factor": (0.5,)} and refused == {("factor", 1.0): "no full factor here"}
    space = SearchSpace("classification", pool=["dynamic_int8"])
    refuses = DynamicInt8(Int8Config(reduce_range=False)).refusal() is not None  # a CPU without VNNI
    assert space.values["dynamic_int8"]["reduce_range"] == ((True,) if refuses else (True, False))
    assert ("dynamic_int8:reduce_range=False" in space.refused) == refuses


def test_a_failure_is_retried_by_a_later_run_only():
    from benchsuite.optimise.study import decides

    failed = CandidateResult(number=0, run=0, spec="x", params={}, status="failed", reason="a bug")
    cut = CandidateResult(number=1, run=0, spec="y", params={}, status="over_budget")
    stopped = CandidateResult(number=2, run=0, spec="z", params={}, status="stopped")
    assert decides(failed, 0) and not decides(failed, 1)
    assert not decides(cut, 0) and decides(stopped, 1)
