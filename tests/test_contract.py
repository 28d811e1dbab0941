"""The compressor contract's edges: optional dependencies, the needs table, results instead of state."""

from __future__ import annotations

import pytest

from benchsuite.cli import main
from benchsuite.compressors.base import NEED_NAMES, NEEDS_TABLE, CompressionResult, as_result
from benchsuite.compressors.ort_int8 import OrtInt8
from benchsuite.compressors.registry import build_compressor
from benchsuite.errors import UsageError


def test_a_compressor_missing_its_optional_package_is_listed_unavailable_and_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(OrtInt8, "requires", ("benchsuite_no_such_package",))
    assert OrtInt8.unavailable_reason() == 'needs benchsuite_no_such_package: pip install -e ".[onnx]"'
    assert main(["list", "compressors"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ort_int8 "))
    assert "UNAVAILABLE: needs benchsuite_no_such_package" in line
    with pytest.raises(UsageError, match="ort_int8.* not available here: it needs benchsuite_no_such_package"):
        build_compressor("ort_int8")
    with pytest.raises(UsageError, match="not available here"):
        build_compressor("distill+ort_int8")
    assert main(["run", "--compressors", "ort_int8", "--results-dir", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_available_when_its_packages_import():
    pytest.importorskip("onnxruntime")
    assert OrtInt8.unavailable_reason() is None


def test_the_needs_table_is_the_set_of_needs():
    assert NEED_NAMES == frozenset(NEEDS_TABLE) == {"train_data", "task_rows", "teacher", "teacher_outputs",
                                                    "calibration_data", "pretrained", "transfer_data"}
    assert all(isinstance(text, str) and text for text in NEEDS_TABLE.values())


def test_a_bare_model_is_a_result_without_facts_and_anything_else_is_refused():
    import torch

    model = torch.nn.Linear(2, 2)
    compressor = build_compressor("baseline")
    assert as_result(model, compressor) == CompressionResult(model)
    with pytest.raises(TypeError, match="must return a CompressionResult"):
        as_result({"model": model}, compressor)


def test_a_returned_tokenizer_is_saved_counted_and_reads_the_inputs(tiny_model, data_env, tmp_path, plugins,
                                                                     monkeypatch):
    import json

    from benchsuite import runner

    given = []
    real = runner.task_kind
    monkeypatch.setattr(runner, "task_kind",
                        lambda spec, tokenizer: (given.append(tokenizer), real(spec, tokenizer))[1])
    assert main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", "sst2", "--compressors",
                 "baseline,own_tokenizer", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
                 "--threads", "1"]) == 0
    found = {r["compressor"]["name"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "r").rglob("*.json"))}
    own, base = found["own_tokenizer"], found["baseline"]
    assert any("compressor's own tokenizer" in note for note in own["notes"])
    # the same weights, plus the tokenizer's files
    assert own["measurements"]["disk"]["size_bytes"] > base["measurements"]["disk"]["size_bytes"]
    assert "own tokenizer's files" in own["measurements"]["disk"]["method"]
    assert own["scores"] == base["scores"]  # an identical tokenizer reads the same inputs
    # after the task's own, the returned tokenizer (a copy) built the task kind that evaluated and measured it
    assert len(given) == 2 and given[1] is not given[0]
