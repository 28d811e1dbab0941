"""The reference checkpoint (all-MiniLM-L6-v2) through the whole pipeline on a small real slice."""

import json

import pytest

from benchsuite.presets import Budget, Preset
from benchsuite.runner import RunOptions, run


@pytest.mark.slow
def test_reference_model_learns_sst2_from_1000_examples(data_env, tmp_path):
    preset = Preset("test", ("sst2",), default=Budget(max_train=1000, max_eval=200, epochs=2))
    summary = run(RunOptions(tasks=("sst2",), compressors=("baseline",), preset=preset,
                             results_dir=tmp_path / "results", cache_dir=tmp_path / "cache"))
    (path,) = summary.written
    record = json.loads(path.read_text())
    assert record["model"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert record["measurements"]["footprint"]["params"] == 22_713_986  # 22.7M encoder + 2-way head
    # 64 steps of fine-tuning: a broken pipeline (label swap, wrong head, no training) stays near 50%.
    assert record["scores"]["accuracy"] > 70
