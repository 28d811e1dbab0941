"""End to end on a tiny random BERT and the real data mirror (smoke preset: seconds)."""

import json
from pathlib import Path

import pytest

from benchsuite.cli import main
from benchsuite.report import write_reports

TASKS = ("sst2", "mrpc", "squad", "conll2003")


def run(tiny_model, results, cache, *extra):
    return main(["run", "--preset", "smoke", "--model", str(tiny_model), "--results-dir", str(results),
                 "--cache-dir", str(cache), *extra])


def records(results: Path) -> dict[str, dict]:
    return {str(p.relative_to(results)): json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))}


def test_run_writes_records_resumes_and_reports(tiny_model, data_env, tmp_path, capsys):
    results, cache = tmp_path / "results", tmp_path / "cache"
    assert run(tiny_model, results, cache) == 0
    found = records(results)
    assert [name.rsplit("-", 1)[0] for name in sorted(found)] == [f"smoke/{t}/bert/baseline" for t in sorted(TASKS)]
    for name, record in found.items():
        assert name.endswith(f"-{record['key']}.json") and record["schema_version"] == 2
        assert record["status"] == "ok"
        assert record["primary_score"] == record["scores"][record["task"]["primary_metric"]]
        assert record["provenance"]["machine"]["torch_threads"] >= 1
        predictions = (results / name).with_suffix(".predictions.jsonl")
        assert record["predictions_file"] == predictions.name
        assert len(predictions.read_text().splitlines()) == record["data"]["eval"]["rows_used"] == 32
        assert record["measurements"]["footprint"]["params"] > 0
        assert record["baseline"]["reused_from_cache"] is False
    # squad holds whole validation articles out as a dev set, scored every half epoch of the baseline's training
    squad = next(r for r in found.values() if r["task"]["name"] == "squad")
    curve, per_epoch = squad["baseline"]["training"]["curve"], -(-squad["baseline"]["training"]["train_features"] // 32)
    assert [row["step"] for row in curve] == [round(per_epoch / 2), per_epoch]
    assert curve[-1]["epochs"] == 1 and set(curve[-1]["dev_scores"]) == {"exact_match", "f1"}
    assert squad["data"]["dev"]["held_apart"]["groups"] and squad["data"]["dev"]["rows_used"] > 0
    assert "curve" not in next(r for r in found.values() if r["task"]["name"] == "sst2")["baseline"]["training"]
    capsys.readouterr()

    assert run(tiny_model, results, cache) == 0  # resume: every cell is done
    assert "0 written, 4 already done" in capsys.readouterr().out
    assert records(results) == found

    first = write_reports(results, tmp_path / "r1")
    second = write_reports(results, tmp_path / "r2")
    assert [p.name for p in first] == [p.name for p in second]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]  # Markdown, CSV and PNGs alike
    text = first[0].read_text()
    assert all(f"## {t}" in text for t in TASKS)


def test_same_seed_same_scores_and_cache_reuse(tiny_model, data_env, tmp_path):
    cache = tmp_path / "cache"
    assert run(tiny_model, tmp_path / "a", cache, "--tasks", "mrpc,conll2003") == 0
    assert run(tiny_model, tmp_path / "b", cache, "--tasks", "mrpc,conll2003") == 0
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert [r["scores"] for r in a.values()] == [r["scores"] for r in b.values()]
    assert all(r["baseline"]["reused_from_cache"] for r in b.values())

    # A corrupted cache entry is detected by its checksum and rebuilt, to the same weights.
    for weights in cache.rglob("model.safetensors"):
        weights.write_bytes(weights.read_bytes()[:1000])
    assert run(tiny_model, tmp_path / "c", cache, "--tasks", "mrpc,conll2003") == 0
    c = records(tmp_path / "c")
    assert not any(r["baseline"]["reused_from_cache"] for r in c.values())
    assert [r["scores"] for r in c.values()] == [r["scores"] for r in a.values()]


def test_failing_compressor_is_isolated(tiny_model, data_env, tmp_path, plugins):
    results = tmp_path / "results"
    code = run(tiny_model, results, tmp_path / "cache", "--tasks", "sst2",
               "--compressors", "baseline,raising,greedy,zero_half")
    assert code == 1
    by_name = {r["compressor"]["name"]: r for r in records(results).values()}
    assert by_name["baseline"]["status"] == "ok"
    assert by_name["raising"]["status"] == "failed"
    assert "this compressor always fails" in by_name["raising"]["error"]["traceback"]
    assert by_name["greedy"]["error"]["type"] == "PermissionError"
    zero_half = by_name["zero_half"]["measurements"]
    # Linear weights of the tiny BERT: 2 layers x (4*32*32 + 2*32*64) + pooler 32*32 + classifier 2*32
    # = 17,472; the smaller half of each is zeroed: about 8,736 fewer non-zeros (ties at the median aside).
    dropped = zero_half["footprint_before"]["params_nonzero"] - zero_half["footprint"]["params_nonzero"]
    assert dropped == pytest.approx(8736, abs=64)
    assert zero_half["footprint"]["params"] == zero_half["footprint_before"]["params"]
    report = write_reports(results, tmp_path / "reports")[0].read_text()
    assert "## Failed cells" in report and "this compressor always fails" in report


def test_report_skips_truncated_and_foreign_files(tiny_model, data_env, tmp_path, caplog):
    results = tmp_path / "results"
    assert run(tiny_model, results, tmp_path / "cache", "--tasks", "sst2") == 0
    (results / "smoke" / "truncated.json").write_text('{"schema_version": 1, "sta')
    (results / "smoke" / "foreign.json").write_text('{"hello": "world"}')
    text = write_reports(results, tmp_path / "reports")[0].read_text()
    assert "## sst2" in text
    assert "truncated.json: not valid JSON" in caplog.text
    assert "foreign.json: not a benchsuite record" in caplog.text


def test_row_limits_name_their_own_preset(tiny_model, data_env, tmp_path):
    results = tmp_path / "results"
    assert run(tiny_model, results, tmp_path / "cache", "--tasks", "sst2", "--max-train", "20", "--max-eval", "10") == 0
    (record,) = records(results).values()
    assert record["preset"] == "smoke-train20-eval10"
    assert (record["data"]["train"]["rows_used"], record["data"]["eval"]["rows_used"]) == (20, 10)


def test_a_compressor_gets_every_calibration_input_it_asks_for_or_a_clear_refusal(tiny_model, data_env, tmp_path,
                                                                                   plugins):
    """The runner once cut calibration data to 256 inputs before a compressor's own count applied."""
    results = tmp_path / "results"
    assert main(["run", "--preset", "quick", "--max-train", "300", "--max-eval", "16", "--tasks", "sst2",
                 "--model", str(tiny_model), "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache"),
                 "--compressors", "counts_calibration:count=300,counts_calibration:count=301"]) == 1
    found = {r["compressor"]["config"]["params"]["count"]: r for r in records(results).values()
             if r["compressor"]["name"] == "counts_calibration"}
    assert found[300]["status"] == "ok" and found[300]["compressor"]["layout"] == {"calibration_inputs": 300}
    assert found[301]["status"] == "failed"
    assert "count" in found[301]["error"]["message"] and "300" in found[301]["error"]["message"]


def test_teacher_outputs_are_computed_once_per_task_and_recorded(tiny_model, data_env, tmp_path):
    results, cache = tmp_path / "results", tmp_path / "cache"
    assert run(tiny_model, results, cache, "--tasks", "sst2,squad", "--threads", "1",
               "--compressors", "distill,distill:alpha=0.9,distill:alpha=0") == 0
    assert len(list((cache / "teacher_outputs").glob("*/entry.json"))) == 2  # one per task, not per cell
    found = [r for r in records(results).values() if r["compressor"]["name"] == "distill"]
    assert len(found) == 6 and all(r["status"] == "ok" for r in found)
    for record in found:
        assert record["compressor"]["recovery"]["steps"] > 0
        assert record["compressor"]["layout"]["kept_layers"] == [0]  # the tiny teacher has 2 layers
        # recovery scores squad's held-out dev articles every half epoch, as the baseline's training does
        recovery = record["compressor"]["recovery"]
        if record["task"]["name"] == "squad":
            assert [row["epochs"] for row in recovery["curve"]] == [0.5, 1]
            assert set(recovery["curve"][-1]["dev_scores"]) == {"exact_match", "f1"}
        else:
            assert "curve" not in recovery  # sst2 holds no dev rows out
    assert sorted(str(r["compressor"]["changed"]) for r in found) == ["{'alpha': 0.0}"] * 2 + ["{'alpha': 0.9}"] * 2 + [
        "{}"] * 2
