"""``csr``: pruned Linears run by torch's CSR kernel; the same outputs, a smaller file, a checked reload."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertForSequenceClassification

from benchsuite.compressors.pipeline import Pipeline
from benchsuite.compressors.prune.csr import Csr, CsrConfig, CsrLinear
from benchsuite.compressors.registry import build_compressor
from benchsuite.measure.footprint import footprint
from benchsuite.quant.groupwise import GroupQuantEmbedding
from benchsuite.testing import tiny_config


def _pruned_linear(zeros: float, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    linear = nn.Linear(48, 40)
    with torch.no_grad():
        linear.weight[torch.rand_like(linear.weight) < zeros] = 0
    return linear


def _pruned_model(zeros: float = 0.9) -> BertForSequenceClassification:
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(500, num_labels=2)).eval()
    with torch.no_grad():
        for module in model.bert.encoder.modules():
            if isinstance(module, nn.Linear):
                module.weight[torch.rand_like(module.weight) < zeros] = 0
    return model


def test_a_csr_linear_computes_what_the_dense_one_does_from_its_nonzeros_alone():
    linear = _pruned_linear(0.9)
    layer = CsrLinear.from_linear(linear)
    nonzeros = int(torch.count_nonzero(linear.weight))
    assert layer.values.numel() == nonzeros and layer.col_indices.dtype == torch.int32
    assert layer.crow_indices.dtype == torch.int32 and layer.crow_indices.numel() == 41
    assert torch.equal(layer.dense_weight(), linear.weight.detach())
    x = torch.randn(3, 5, 48)
    with torch.no_grad():
        assert torch.allclose(layer(x), linear(x), atol=1e-5)


def test_csr_converts_only_the_sparse_linears_and_keeps_the_outputs(tmp_path):
    model = _pruned_model()
    ids = torch.randint(1, 500, (4, 12))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    compressor = Csr()
    result = compressor.compress(copy.deepcopy(model), context=None)
    converted = result.layout["converted"]
    encoder = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("bert.encoder")]
    assert sorted(converted) == sorted(encoder)  # the dense pooler and classifier stay nn.Linear
    assert isinstance(result.model.classifier, nn.Linear) and isinstance(result.model.bert.pooler.dense, nn.Linear)
    with torch.no_grad():
        got = result.model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    before, after = footprint(model), footprint(result.model)
    assert (after.params, after.params_nonzero) == (before.params, before.params_nonzero)

    compressor.save(result, tmp_path / "csr")
    model.save_pretrained(tmp_path / "dense", safe_serialization=True)
    dense, csr = ((tmp_path / kind / "model.safetensors").stat().st_size for kind in ("dense", "csr"))
    weights = sum(model.get_submodule(n).weight.numel() for n in encoder)
    # each weight's 4 bytes, less 8 a nonzero (value, int32 column) at ~10% nonzeros, row offsets and header
    assert 0.65 * 4 * weights < dense - csr < 4 * weights
    reloaded = Csr.load(tmp_path / "csr")
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, got)


def test_csr_refuses_a_model_without_zeros_and_names_the_fix():
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(500, num_labels=2)).eval()
    with pytest.raises(ValueError, match=r"no Linear has at least 50% zero weights.*movement\+csr"):
        Csr().compress(model, context=None)
    with pytest.raises(ValueError, match="min_sparsity"):
        CsrConfig(min_sparsity=1.0)


def test_a_damaged_csr_file_fails_at_load_not_in_the_kernel(tmp_path):
    compressor = Csr()
    compressor.save(compressor.compress(_pruned_model(), context=None), tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    name = next(k for k in state if k.endswith("col_indices"))
    state[name][0] = 10_000  # a column past the matrix
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(RuntimeError, match="col_indices"):
        Csr.load(tmp_path)


def test_movement_style_pipeline_with_int8_embeddings_then_csr_reloads_exactly(tiny_model, data_env, tmp_path):
    """magnitude, then the table as int8 rows, then the CSR kernel: each stage's structure replays on load."""
    from tests.conformance_checks import make_setup

    setup = make_setup(tiny_model, "classification", "sst2", tmp_path / "cache")
    pipeline = build_compressor("magnitude:sparsity=0.9,epochs=0.5+embedding_int8+csr")
    result = pipeline.compress(copy.deepcopy(setup.model), context=setup.context(pipeline.NEEDS))
    assert isinstance(result.model.get_input_embeddings(), GroupQuantEmbedding)
    assert any(isinstance(m, CsrLinear) for m in result.model.modules())
    pipeline.save(result, tmp_path / "saved")
    reloaded = Pipeline.load(tmp_path / "saved")
    with torch.inference_mode():
        assert torch.equal(reloaded(**setup.inputs).logits, result.model(**setup.inputs).logits)


def test_a_pruned_model_on_the_csr_kernel_is_scored_and_measured_by_the_runner(tiny_model, data_env, tmp_path):
    """The whole cell: trained, scored, saved, reloaded in the memory probe's fresh process, timed; the record
    says which Linears run the sparse kernel, and its size is the CSR file's."""
    import json

    from benchsuite.cli import main

    spec = "magnitude:sparsity=0.9,epochs=0.5+embedding_int8+csr"
    code = main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", "sst2", "--compressors", spec,
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--threads", "1"])
    assert code == 0
    (path,) = [p for p in (tmp_path / "r").rglob("*.json")]
    record = json.loads(path.read_text())
    assert record["status"] == "ok" and record["compressor"]["name"] == "magnitude+embedding_int8+csr"
    csr = record["compressor"]["layout"]["stages"][2]["layout"]
    assert csr["sparse_kernel"] and len(csr["converted"]) == 2 * 6  # tiny model: 2 layers of 6 Linears
    measured = record["measurements"]
    before, after = measured["footprint_before"], measured["footprint"]
    assert after["params"] == before["params"] and after["params_nonzero"] < before["params_nonzero"]
    assert measured["memory"] and measured["disk"]["size_bytes"] < 0.5 * 4 * before["params"]
