"""The plugin's own tests: a tiny model from benchsuite.testing, the class API, and one smoke run."""

import json
import math

import pytest
import torch
from benchsuite_zero_small import ZeroSmall, ZeroSmallConfig
from transformers import AutoModelForSequenceClassification

from benchsuite.cli import main
from benchsuite.compressors.base import CompressionContext
from benchsuite.testing import tiny_model_dir


@pytest.mark.parametrize("bad", [-0.01, math.inf, math.nan, "0.1", True])
def test_threshold_must_be_finite_and_non_negative(bad):
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
        ZeroSmallConfig(threshold=bad)


def test_integer_and_float_thresholds_are_one_config():
    assert ZeroSmallConfig(threshold=1).config_hash() == ZeroSmallConfig(threshold=1.0).config_hash()


def test_zeroes_small_encoder_weights_and_leaves_the_head(tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir(tmp_path / "tiny"), num_labels=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    context = CompressionContext(needs=ZeroSmall.NEEDS, task=None, tokenizer=None, seed=0, providers={})
    ZeroSmall(ZeroSmallConfig(threshold=0.02)).compress(model, context=context)
    for name, after in model.state_dict().items():
        small = before[name].abs() < 0.02
        if name.startswith("bert.") and name.endswith(".weight") and after.dim() == 2 and "embeddings" not in name:
            assert small.any() and not after[small].any(), name
            assert torch.equal(after[~small], before[name][~small]), name
        else:
            assert torch.equal(after, before[name]), name


def test_runs_in_benchsuite(tmp_path):
    # Data comes from the Hub, or from the mirror BENCHSUITE_DATA_DIR names; one thread is plenty for a tiny model.
    code = main(["run", "--preset", "smoke", "--tasks", "sst2", "--model", str(tiny_model_dir(tmp_path / "tiny")),
                 "--compressors", "zero_small:threshold=0.02", "--results-dir", str(tmp_path / "results"),
                 "--cache-dir", str(tmp_path / "cache"), "--threads", "1"])
    assert code == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert record["status"] == "ok" and record["compressor"]["config"]["params"] == {"threshold": 0.02}
