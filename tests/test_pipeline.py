"""Pipelines of compressors: parsing and refusal, the record, prefix reuse, one stage = the plain cell,
save and reload, and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchsuite.cli import main
from benchsuite.compressors import pipeline as pipeline_module
from benchsuite.compressors.distill import Distill
from benchsuite.compressors.pipeline import Pipeline
from benchsuite.compressors.registry import build_compressor
from benchsuite.errors import UsageError
from benchsuite.records import read_record

pytestmark = pytest.mark.xdist_group("pipeline")

STUDENT = "distill:layers=1,epochs=0.5"
PIPELINE = f"{STUDENT}+heads:heads=0.5,epochs=0.5+dynamic_int8"


def run(tiny_model, results, cache, compressors, *extra, task="sst2"):
    return main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", task, "--compressors",
                 compressors, "--results-dir", str(results), "--cache-dir", str(cache), "--threads", "1", *extra])


def records(results: Path) -> dict[str, dict]:
    found = {}
    for path in results.rglob("*.json"):
        data = json.loads(path.read_text())
        found[data["compressor"]["name"]] = {**data, "path": str(path)}
    return found


@pytest.mark.parametrize("spec", ["dynamic_int8+distill", "bf16+heads", "weight_only_int8+magnitude",
                                  "distill+fp16+dynamic_int8"])
def test_an_order_that_cannot_work_is_refused_before_any_work(spec, tiny_model, data_env, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(Distill, "reshape", lambda *a, **k: calls.append(a))
    with pytest.raises(UsageError, match="cannot follow it; put .* last"):
        build_compressor(spec)
    code = run(tiny_model, tmp_path / "r", tmp_path / "c", spec)
    assert code == 2 and not calls and not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_parsing_pipelines_and_their_lists():
    from benchsuite.cli import _compressor_list

    assert _compressor_list("baseline,distill:layers=3,keep=0,2,4+heads:ffn=0.5+dynamic_int8,bf16") == (
        "baseline", "distill:layers=3,keep=0,2,4+heads:ffn=0.5+dynamic_int8", "bf16")
    pipeline = build_compressor("distill:layers=3,keep=0,2,4+heads:ffn=0.5+dynamic_int8")
    assert isinstance(pipeline, Pipeline) and pipeline.name == "distill+heads+dynamic_int8"
    assert pipeline.spec == "distill:keep=0,2,4,layers=3+heads:ffn=0.5+dynamic_int8"
    assert build_compressor(pipeline.spec).config.config_hash() == pipeline.config.config_hash()
    assert pipeline.compute == "int8" and not pipeline.trainable_output
    with pytest.raises(UsageError, match="empty stage"):
        build_compressor("distill++dynamic_int8")


def test_one_stage_pipeline_is_the_plain_cell(tiny_model, data_env, tmp_path):
    compressor = build_compressor(STUDENT)
    assert type(compressor) is Distill  # no '+': the compressor itself, its own name, config and hash
    with pytest.raises(UsageError, match="at least two stages"):
        Pipeline([compressor])


@pytest.fixture(scope="module")
def pipeline_run(tiny_model, mirror, tmp_path_factory) -> tuple[Path, Path]:
    """(record file, cache) of one smoke run of PIPELINE on sst2, shared by the tests that read it."""
    folder = tmp_path_factory.mktemp("pipeline-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCHSUITE_DATA_DIR", str(mirror))
        assert run(tiny_model, folder / "r", folder / "c", PIPELINE) == 0
    return Path(records(folder / "r")["distill+heads+dynamic_int8"]["path"]), folder / "c"


def test_pipeline_record_round_trips_with_every_stage(pipeline_run):
    record_file, _ = pipeline_run
    data = {**json.loads(record_file.read_text()), "path": str(record_file)}
    record = read_record(Path(data["path"]))
    assert record.status == "ok"
    assert json.loads(json.dumps(record.to_json())) == {k: v for k, v in data.items() if k != "path"}
    info = record.compressor
    assert [s.name for s in info.stages] == ["distill", "heads", "dynamic_int8"]
    assert [s.changed for s in info.stages] == [{"layers": 1, "epochs": 0.5}, {"epochs": 0.5}, {}]
    assert info.config_hash == build_compressor(PIPELINE).config.config_hash() and info.compute == "int8"
    assert info.family == "pipeline" and info.changed == {"pipeline": build_compressor(PIPELINE).spec}
    layouts = [s["layout"] for s in info.layout["stages"]]
    assert layouts[0] == {"kept_layers": [0], "teacher_layers": 2} and "heads_kept" in layouts[1]
    recoveries = info.recovery["stages"]
    assert recoveries[0]["recovery"]["steps"] > 0 and recoveries[2]["recovery"] is None
    assert [r["reused_from_cache"] for r in recoveries] == [False, False, False]
    # the final model is measured: one layer of int8 against two fp32 layers
    assert record.measurements.footprint["params"] < record.measurements.footprint_before["params"]
    assert record.measurements.disk["size_bytes"] > 0 and record.measurements.memory


def test_saved_pipeline_reloads_to_the_same_predictions(tiny_model, data_env, tmp_path):
    from tests.conformance_checks import make_setup

    setup = make_setup(tiny_model, "classification", "sst2", tmp_path / "cache")
    pipeline = build_compressor(f"{STUDENT}+heads:heads=0.5,epochs=0.5+factorized_embedding:rank=4,epochs=0.5"
                                "+dynamic_int8")
    import copy

    result = pipeline.compress(copy.deepcopy(setup.model), context=setup.context(pipeline.NEEDS))
    with torch.inference_mode():
        expected = result.model(**setup.inputs).logits
    pipeline.save(result, tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "pipeline.json").read_text())
    assert saved["format"] == "replay" and len(saved["stages"]) == 4
    reloaded = Pipeline.load(tmp_path / "saved")
    with torch.inference_mode():
        assert torch.equal(reloaded(**setup.inputs).logits, expected)


def test_a_pipeline_with_a_sparse_stage_stores_its_zeros_sparsely_and_reloads_exactly(tiny_model, data_env, tmp_path):
    from benchsuite.compressors.rebuild import SPARSE_FILE
    from tests.conformance_checks import make_setup

    setup = make_setup(tiny_model, "classification", "sst2", tmp_path / "cache")
    pipeline = build_compressor("heads:heads=0.5,epochs=0.5+magnitude:sparsity=0.9,epochs=0.5")
    assert "bitmask + nonzero values" in pipeline.save_format
    import copy

    result = pipeline.compress(copy.deepcopy(setup.model), context=setup.context(pipeline.NEEDS))
    with torch.inference_mode():
        expected = result.model(**setup.inputs).logits
    pipeline.save(result, tmp_path / "saved")
    assert (tmp_path / "saved" / SPARSE_FILE).is_file() and not (tmp_path / "saved" / "model.safetensors").exists()
    reloaded = Pipeline.load(tmp_path / "saved")
    with torch.inference_mode():
        assert torch.equal(reloaded(**setup.inputs).logits, expected)
    # quantised last: torch.ao's format holds the model, the zeros as int8 zeros
    assert "torch.ao" in build_compressor("magnitude+dynamic_int8").save_format


def test_prefix_reuse_trains_a_shared_prefix_once(tiny_model, data_env, tmp_path, monkeypatch):
    trained = []
    original = Distill.reshape

    def counting(self, model, *, context):
        trained.append(self.config.layers)
        return original(self, model, context=context)

    monkeypatch.setattr(Distill, "reshape", counting)
    stored = []
    put = pipeline_module.PrefixCache.put
    monkeypatch.setattr(pipeline_module.PrefixCache, "put", lambda self, stages, *a: (
        stored.append([s.name for s in stages]), put(self, stages, *a)))
    first, second = f"{STUDENT}+dynamic_int8", f"{STUDENT}+bf16"
    assert run(tiny_model, tmp_path / "r", tmp_path / "c", f"{first},{second}") == 0
    assert trained == [1] and stored == [["distill"]]
    found = records(tmp_path / "r")
    assert [s["reused_from_cache"] for s in found["distill+dynamic_int8"]["compressor"]["recovery"]["stages"]] == [
        False, False]
    reused = found["distill+bf16"]["compressor"]["recovery"]["stages"]
    assert [s["reused_from_cache"] for s in reused] == [True, False]
    assert reused[0]["recovery"] == found["distill+dynamic_int8"]["compressor"]["recovery"]["stages"][0]["recovery"]
    # the same cell recomputed from the cached prefix predicts what the one that trained it predicted
    assert run(tiny_model, tmp_path / "r2", tmp_path / "c", first) == 0
    assert trained == [1]
    again = records(tmp_path / "r2")["distill+dynamic_int8"]
    assert again["scores"] == found["distill+dynamic_int8"]["scores"]
    assert Path(again["path"]).with_suffix(".predictions.jsonl").read_text() == Path(
        found["distill+dynamic_int8"]["path"]).with_suffix(".predictions.jsonl").read_text()


def test_exported_model_loads_and_reproduces_its_record(tiny_model, data_env, tmp_path, pipeline_run,
                                                        monkeypatch):
    from benchsuite.export import load_exported

    record_file, cache = pipeline_run
    trained = []
    monkeypatch.setattr(Distill, "reshape", lambda *a, **k: trained.append(a))
    out = tmp_path / "export"
    assert main(["export", str(record_file), "--out", str(out), "--cache-dir", str(cache),
                 "--model", str(tiny_model), "--threads", "1"]) == 0
    assert not trained  # the pipeline's trained prefix came from the cache the run filled
    card = (out / "README.md").read_text()
    record = read_record(record_file)
    assert build_compressor(PIPELINE).spec in card and record.key in card
    assert "32 of 32 rows" in card or f"{record.data.eval.rows_used} of {record.data.eval.rows_used}" in card
    model, tokenizer = load_exported(out)
    from benchsuite.tasks import load_task, task_kind

    kind = task_kind(load_task("sst2"), tokenizer)
    from benchsuite.data import load_task_data
    from benchsuite.presets import get_preset

    budget = get_preset("smoke").budget("sst2")
    data = load_task_data(load_task("sst2"), max_train=budget.max_train, max_eval=budget.max_eval, seed=42)
    evaluation = kind.evaluate(model, data.eval, batch_size=64)
    recorded = [json.loads(line) for line in record_file.with_suffix(".predictions.jsonl").read_text().splitlines()]
    assert [json.loads(json.dumps(r)) for r in evaluation.predictions] == recorded
    assert evaluation.scores == record.scores
    # an existing folder is kept unless --force
    assert main(["export", str(record_file), "--out", str(out), "--cache-dir", str(cache),
                 "--model", str(tiny_model)]) == 2


def test_export_refuses_a_record_this_install_cannot_reproduce(tiny_model, data_env, tmp_path, pipeline_run, capsys):
    record_file, cache = pipeline_run
    data = json.loads(record_file.read_text())
    data["cell"]["eval_data"]["rows_used"] += 1  # as if the run had evaluated other rows than this install selects
    changed = tmp_path / record_file.name
    changed.write_text(json.dumps(data))
    assert main(["export", str(changed), "--out", str(tmp_path / "x"), "--cache-dir", str(cache),
                 "--model", str(tiny_model)]) == 2
    assert "cell key differs in eval_data" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_pruning_then_embedding_int8_keeps_sparse_linears_and_shrinks_the_table(tiny_model, data_env, tmp_path):
    """#19's file target: the pruned Linears stay fp32 and sparse on disk, the word-embedding table becomes int8
    rows; the file is smaller than the pruned model's by about three quarters of the table, and reloads exactly."""
    import copy

    from benchsuite.compressors.base import as_result
    from benchsuite.compressors.rebuild import SPARSE_FILE
    from benchsuite.measure.footprint import saved_size
    from benchsuite.quant.groupwise import GroupQuantEmbedding
    from tests.conformance_checks import make_setup

    setup = make_setup(tiny_model, "classification", "sst2", tmp_path / "cache")
    pipeline = build_compressor("magnitude:sparsity=0.9,epochs=0.5+embedding_int8")
    result = pipeline.compress(copy.deepcopy(setup.model), context=setup.context(pipeline.NEEDS))
    assert isinstance(result.model.get_input_embeddings(), GroupQuantEmbedding)
    linears = [m for m in result.model.bert.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float32 for m in linears)
    zeros = sum(int((m.weight == 0).sum()) for m in linears) / sum(m.weight.numel() for m in linears)
    assert zeros == pytest.approx(0.9, abs=0.01)
    pipeline.save(result, tmp_path / "both")
    assert (tmp_path / "both" / SPARSE_FILE).is_file()

    magnitude = pipeline.stages[0]
    context = setup.context(magnitude.NEEDS)
    torch.manual_seed(context.seed)  # as the pipeline seeds each stage
    pruned = as_result(magnitude.compress(copy.deepcopy(setup.model), context=context), magnitude)
    magnitude.save(pruned, tmp_path / "pruned")
    table = setup.model.get_input_embeddings().weight
    shrunk = saved_size(tmp_path / "pruned", format="x").size_bytes - saved_size(tmp_path / "both",
                                                                                 format="x").size_bytes
    assert 0.6 * 4 * table.numel() < shrunk < 0.75 * 4 * table.numel()  # 4 bytes -> 1, plus one scale per 64

    reloaded = Pipeline.load(tmp_path / "both")
    with torch.inference_mode():
        assert torch.equal(reloaded(**setup.inputs).logits, result.model(**setup.inputs).logits)
