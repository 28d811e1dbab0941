"""The sharing and factorisation family: tying, SVD initialisation, layouts and save/load on tiny models."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import BertForSequenceClassification

from benchsuite.compressors.base import CompressionContext, CompressionResult
from benchsuite.compressors.registry import build_compressor
from benchsuite.compressors.share.combined import Albert, AlbertConfig
from benchsuite.compressors.share.cross_layer import CrossLayer, CrossLayerConfig, layer_groups
from benchsuite.compressors.share.factorize import (
    FactorizedEmbedding,
    FactorizedEmbeddingCompressor,
    FactorizedEmbeddingConfig,
    LowRank,
    LowRankConfig,
    LowRankLinear,
    rank_for_energy,
    svd,
    target_linears,
)
from benchsuite.compressors.share.tying import gradual_tying
from benchsuite.errors import UsageError
from benchsuite.measure.footprint import disk_size, footprint, saved_size
from benchsuite.tasks.spec import TrainConfig
from benchsuite.testing import tiny_config

VOCAB, HIDDEN, FFN = 100, 32, 64
LAYER_PARAMS = 4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * HIDDEN * FFN + FFN + HIDDEN + 2 * 2 * HIDDEN  # 4 linears, 2 LNs


@pytest.fixture()
def model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config(VOCAB, num_hidden_layers=6, num_labels=2)).eval()


class _Tokenizer:
    pad_token_id = 0


def _context(compressor, features=(), teacher=None) -> CompressionContext:
    providers = ({"train_data": list(features),
                  "calibration_data": [{k: v for k, v in f.items() if k != "labels"} for f in features]}
                 | ({} if teacher is None else {"teacher": lambda: teacher}))
    return CompressionContext(needs=compressor.NEEDS, task=None, tokenizer=_Tokenizer(), seed=0,
                              providers=providers,
                              train_config=TrainConfig(epochs=1.0, batch_size=8, learning_rate=1e-3))


def _features() -> list[dict]:
    generator = torch.Generator().manual_seed(2)
    return [{"input_ids": torch.randint(1, VOCAB, (8,), generator=generator).tolist(),
             "attention_mask": [1] * 8, "labels": i % 2} for i in range(16)]


def _compress(compressor, model) -> CompressionResult:
    result = compressor.compress(copy.deepcopy(model), context=_context(compressor))
    result.model.eval()
    return result


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (4, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[2:, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _layers(model) -> nn.ModuleList:
    return model.bert.encoder.layer


def _round_trip(compressor, result, folder):
    model = result.model
    compressor.save(result, folder)
    reloaded = type(compressor).load(folder)
    with torch.no_grad():
        assert torch.equal(reloaded(**_batch()).logits, model(**_batch()).logits)
    assert footprint(reloaded).params == footprint(model).params
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        return reloaded, set(fh.keys())


# --- cross_layer ------------------------------------------------------------------------------------------


def test_layer_groups_are_runs_of_consecutive_layers():
    assert layer_groups(6, 1) == [[0, 1, 2, 3, 4, 5]]
    assert layer_groups(6, 3) == [[0, 1], [2, 3], [4, 5]]
    assert layer_groups(6, 4) == [[0, 1], [2], [3, 4], [5]]
    assert layer_groups(6, 6) == [[i] for i in range(6)]
    with pytest.raises(ValueError, match="groups must be in 1..6"):
        layer_groups(6, 7)


def test_cross_layer_ties_modules_and_counts_them_once(model):
    before = footprint(model)
    shared = _compress(CrossLayer(CrossLayerConfig(groups=3, epochs=0)), model).model
    layers = _layers(shared)
    assert [len({id(layer) for layer in layers[i:i + 2]}) for i in (0, 2, 4)] == [1, 1, 1]
    assert len({id(layer) for layer in layers}) == 3
    after = footprint(shared)
    assert after.params == before.params - 3 * LAYER_PARAMS
    assert after.params_by_name == before.params_by_name  # six depths still see their weights by name


def test_average_init_is_the_mean_of_the_group(model):
    shared = _compress(CrossLayer(CrossLayerConfig(groups=2, init="average", epochs=0)), model).model
    for group, layer in (([0, 1, 2], _layers(shared)[0]), ([3, 4, 5], _layers(shared)[5])):
        for key, value in layer.state_dict().items():
            mean = torch.stack([_layers(model)[i].state_dict()[key] for i in group]).mean(0)
            assert torch.allclose(value, mean, atol=1e-7), key


@pytest.mark.parametrize(("init", "source"), [("first", 0), ("middle", 2), ("last", 5)])
def test_picked_init_copies_that_layer(model, init, source):
    shared = _compress(CrossLayer(CrossLayerConfig(init=init, epochs=0)), model).model
    for key, value in _layers(shared)[3].state_dict().items():
        assert torch.equal(value, _layers(model)[source].state_dict()[key]), key


def test_cross_layer_saves_the_shared_layer_once_and_reloads_it_tied(model, tmp_path):
    compressor = CrossLayer(CrossLayerConfig(groups=1, epochs=0))
    reloaded, keys = _round_trip(compressor, _compress(compressor, model), tmp_path)
    assert all(layer is _layers(reloaded)[0] for layer in _layers(reloaded))
    assert {key.split(".")[3] for key in keys if ".encoder.layer." in key} == {"0"}
    saved = saved_size(tmp_path, format="safetensors").size_bytes
    assert saved < disk_size(model).size_bytes - 4 * 5 * LAYER_PARAMS + 4096  # five layers fewer, bar headers


def test_recovery_trains_the_shared_layer_and_keeps_it_tied(model):
    features = _features()
    compressor = CrossLayer(CrossLayerConfig(alpha=0.0))  # hard labels only: no teacher outputs needed
    start = _compress(CrossLayer(CrossLayerConfig(epochs=0)), model).model
    result = compressor.compress(copy.deepcopy(model), context=_context(compressor, features))
    trained = result.model
    assert result.recovery["steps"] == 2
    assert all(layer is _layers(trained)[0] for layer in _layers(trained))
    weight = _layers(trained)[0].intermediate.dense.weight
    assert not torch.equal(weight, _layers(start)[0].intermediate.dense.weight)


@pytest.mark.parametrize("init", ["average", "first"])
def test_recovery_with_attention_matching_runs_on_shared_layers(model, init):
    # the averaged layer is a copy: it must still read the model's config, which eager attention is switched on in
    compressor = CrossLayer(CrossLayerConfig(alpha=0.0, groups=3, init=init, hidden_weight=1.0, attention_weight=1.0))
    context = _context(compressor, _features(), teacher=copy.deepcopy(model))
    trained = compressor.compress(copy.deepcopy(model), context=context).model
    assert all(layer.attention.self.config is trained.config for layer in _layers(trained))
    assert trained.config._attn_implementation == model.config._attn_implementation  # switched back after


# --- norms="own": each depth keeps its LayerNorms ------------------------------------------------------------


def _is_norm(name: str) -> bool:
    return "LayerNorm" in name


@pytest.mark.parametrize("init", ["average", "middle"])
def test_own_norms_share_the_linears_and_keep_each_depths_layernorms(model, init):
    before = footprint(model)
    shared = _compress(CrossLayer(CrossLayerConfig(groups=3, init=init, norms="own", epochs=0)), model).model
    layers, original = _layers(shared), _layers(model)
    assert len({id(layer) for layer in layers}) == 6  # a layer object per depth
    for first in (0, 2, 4):
        for name, module in layers[first].named_modules():
            if isinstance(module, nn.Linear):
                assert layers[first + 1].get_submodule(name) is module, name
    source = {"average": None, "middle": 0}[init]
    for depth, layer in enumerate(layers):
        for key, value in layer.state_dict().items():
            group = [depth - depth % 2, depth - depth % 2 + 1]
            if _is_norm(key):  # the depth's own trained LayerNorm, whatever the init
                assert torch.equal(value, original[depth].state_dict()[key]), (depth, key)
            elif source is None:
                mean = torch.stack([original[i].state_dict()[key] for i in group]).mean(0)
                assert torch.allclose(value, mean, atol=1e-7), (depth, key)
            else:
                assert torch.equal(value, original[group[source]].state_dict()[key]), (depth, key)
    assert footprint(shared).params == before.params - 3 * (LAYER_PARAMS - 2 * 2 * HIDDEN)


def test_own_norms_save_the_linears_once_and_reload_them_tied(model, tmp_path):
    compressor = CrossLayer(CrossLayerConfig(groups=3, norms="own", epochs=0))
    result = _compress(compressor, model)
    reloaded, keys = _round_trip(compressor, result, tmp_path)
    layers = _layers(reloaded)
    assert layers[1].intermediate.dense is layers[0].intermediate.dense
    assert layers[1].output.LayerNorm is not layers[0].output.LayerNorm
    depths = {key.split(".")[3] for key in keys if ".encoder.layer." in key and not _is_norm(key)}
    assert depths == {"0", "2", "4"}
    assert {key.split(".")[3] for key in keys if ".encoder.layer." in key and _is_norm(key)} == set("012345")


def test_recovery_with_own_norms_trains_each_depths_norms_and_keeps_the_linears_tied(model):
    compressor = CrossLayer(CrossLayerConfig(alpha=0.0, groups=3, norms="own"))
    trained = compressor.compress(copy.deepcopy(model), context=_context(compressor, _features())).model
    layers = _layers(trained)
    assert all(layers[i + 1].attention.self.query is layers[i].attention.self.query for i in (0, 2, 4))
    assert not torch.equal(layers[0].output.LayerNorm.weight, layers[1].output.LayerNorm.weight)


def test_albert_with_own_norms_ties_only_the_linears(model, tmp_path):
    compressor = Albert(AlbertConfig(groups=1, norms="own", embedding_rank=8, epochs=0))
    result = _compress(compressor, model)
    assert result.layout == {"groups": [list(range(6))], "norms": "own", "embedding_rank": 8}
    reloaded, _ = _round_trip(compressor, result, tmp_path)
    assert all(layer.output.dense is _layers(reloaded)[0].output.dense for layer in _layers(reloaded))
    assert len({id(layer.output.LayerNorm) for layer in _layers(reloaded)}) == 6


def test_norms_is_a_late_option_so_committed_hashes_hold():
    assert "norms" not in CrossLayerConfig(groups=3).to_json()["params"]
    # the conll2003 record cross_layer-c0db1b52d26c and the mrpc record albert-079800f1dcb4, written when
    # "average" was init's default
    assert CrossLayerConfig(hidden_weight=1.0, epochs=4.0, groups=3, init="average").config_hash() == "595492a160ba"
    assert AlbertConfig(hidden_weight=1.0, epochs=4.0, init="average").config_hash() == "7682d3120099"
    # the default before init's default changed: the mrpc records cross_layer-1685a8e457b2, albert-e6e03acf981b
    assert CrossLayerConfig(init="average").config_hash() == "e4991678be5a"
    assert AlbertConfig(init="average").config_hash() == "971b8b3aeaa3"
    assert CrossLayerConfig(norms="own").config_hash() != CrossLayerConfig().config_hash()


@pytest.mark.parametrize("compressor_class", [CrossLayer, Albert])
def test_init_is_named_in_every_label_since_its_default_changed(compressor_class):
    """Records written while "average" was the default do not list init; every later one does, so two labels
    never name different starts alike."""
    config_class = compressor_class.config_class
    assert config_class().init == "first"
    assert compressor_class(config_class()).describe()["changed"] == {"init": "first"}
    assert compressor_class(config_class(init="average", groups=3)).describe()["changed"] == {
        "init": "average", "groups": 3}
    assert compressor_class(config_class(init="last")).describe()["changed"] == {"init": "last"}


# --- tie="gradual": pulled together during recovery, tied at tie_at ----------------------------------------


def _distance(layers, first: int, name: str) -> float:
    return (layers[first].get_parameter(name) - layers[first + 1].get_parameter(name)).norm().item()


@pytest.mark.parametrize("init", ["average", "first"])
def test_gradual_tying_follows_the_cubic_ramp_and_ties_at_its_end(model, init):
    trained = copy.deepcopy(model)
    layout = {"groups": layer_groups(6, 3)}
    after_step = gradual_tying(trained, layout, init=init, tie_at=0.5)  # 8 steps: tied after step 4
    layers, name = _layers(trained), "intermediate.dense.weight"
    start = _distance(layers, 0, name)
    anchor = layers[0].get_parameter(name).clone()
    for step in (1, 2, 3):  # no training between the steps: the distance is the ramp's exactly
        after_step(step, 8)
        assert _distance(layers, 0, name) == pytest.approx(start * (1 - step / 4) ** 3, rel=1e-4)
        assert layers[1] is not layers[0] and "tied_at_step" not in layout
    if init == "first":  # the picked member is the target: it does not move
        assert torch.equal(layers[0].get_parameter(name), anchor)
    after_step(4, 8)
    assert all(layers[i + 1] is layers[i] for i in (0, 2, 4)) and layout["tied_at_step"] == 4
    mean = (_layers(model)[0].get_parameter(name) + _layers(model)[1].get_parameter(name)) / 2
    assert torch.allclose(layers[0].get_parameter(name), mean if init == "average" else anchor, atol=1e-6)
    after_step(5, 8)  # after T: nothing more
    assert footprint(trained).params == footprint(model).params - 3 * LAYER_PARAMS


def test_gradual_tying_with_own_norms_pulls_and_ties_only_the_linears(model):
    trained = copy.deepcopy(model)
    after_step = gradual_tying(trained, {"groups": layer_groups(6, 3), "norms": "own"}, init="average", tie_at=1.0)
    for step in (1, 2):
        after_step(step, 2)
    layers, original = _layers(trained), _layers(model)
    assert len({id(layer) for layer in layers}) == 6
    assert all(layers[i + 1].attention.self.key is layers[i].attention.self.key for i in (0, 2, 4))
    for depth in range(6):  # each depth's LayerNorms untouched
        assert torch.equal(layers[depth].output.LayerNorm.weight, original[depth].output.LayerNorm.weight)


def test_recovery_with_gradual_tying_ends_tied_and_reloads_equal(model, tmp_path):
    compressor = CrossLayer(CrossLayerConfig(alpha=0.0, groups=3, tie="gradual", epochs=4.0))  # 8 steps
    result = compressor.compress(copy.deepcopy(model), context=_context(compressor, _features()))
    result.model.eval()
    assert result.recovery["steps"] == 8 and result.layout == {"groups": layer_groups(6, 3), "tied_at_step": 4}
    assert all(_layers(result.model)[i + 1] is _layers(result.model)[i] for i in (0, 2, 4))
    _, keys = _round_trip(compressor, result, tmp_path)
    assert {key.split(".")[3] for key in keys if ".encoder.layer." in key} == {"0", "2", "4"}


def test_albert_ties_gradually_too(model):
    compressor = Albert(AlbertConfig(alpha=0.0, embedding_rank=8, tie="gradual", tie_at=0.25, epochs=4.0))
    result = compressor.compress(copy.deepcopy(model), context=_context(compressor, _features()))
    assert result.layout["tied_at_step"] == 2
    assert all(layer is _layers(result.model)[0] for layer in _layers(result.model))


def test_tie_is_a_late_option_and_its_values_are_checked():
    params = CrossLayerConfig(groups=3).to_json()["params"]  # at their defaults, left out of the hash
    assert "tie" not in params and "tie_at" not in params
    assert CrossLayerConfig(tie="gradual").config_hash() != CrossLayerConfig().config_hash()
    with pytest.raises(ValueError, match="tie must be one of now, gradual"):
        CrossLayerConfig.from_params({"tie": "later"})
    with pytest.raises(ValueError, match=r"tie_at must be in \(0, 1\]"):
        AlbertConfig.from_params({"tie": "gradual", "tie_at": 0.0})
    with pytest.raises(ValueError, match="tie_at applies to tie=gradual only"):
        CrossLayerConfig.from_params({"tie_at": 0.3})
    with pytest.raises(ValueError, match="epochs=0 runs none"):
        CrossLayerConfig.from_params({"tie": "gradual", "epochs": 0})


# --- a shared module stays shared through the stages after it -------------------------------------------


@pytest.mark.parametrize("quantiser", ["dynamic_int8", "dynamic_int8:outlier_channels=2,calibration_examples=8",
                                       "weight_only_int8"])
def test_quantising_after_own_norms_keeps_the_linears_shared(model, tmp_path, quantiser):
    sharing = build_compressor("cross_layer:groups=3,norms=own,epochs=0")
    shared_params = footprint(_compress(sharing, model).model).params
    pipeline = build_compressor(f"cross_layer:groups=3,norms=own,epochs=0+{quantiser}")
    result = pipeline.compress(copy.deepcopy(model), context=_context(pipeline, _features()))
    layers = _layers(result.model.eval())
    for i in (0, 2, 4):
        for name in ("attention.self.query", "intermediate.dense"):
            assert layers[i + 1].get_submodule(name) is layers[i].get_submodule(name), (i, name)
    assert footprint(result.model).params == shared_params  # each shared Linear quantised once
    pipeline.save(result, tmp_path)
    reloaded = type(pipeline).load(tmp_path)
    assert _layers(reloaded)[1].intermediate.dense is _layers(reloaded)[0].intermediate.dense
    with torch.no_grad():
        assert torch.equal(reloaded(**_batch()).logits, result.model(**_batch()).logits)


def test_a_stage_that_rebuilds_the_layers_is_not_re_tied(model):
    # the student's layers 0 and 1 are the teacher's 0 and 2, from different pairs: the names of a shared
    # Linear before the stage now hold two different Linears, which must stay apart
    pipeline = build_compressor("cross_layer:groups=3,norms=own,epochs=0+distill:layers=3,alpha=0")
    context = _context(pipeline, _features(), teacher=copy.deepcopy(model))
    student = _layers(pipeline.compress(copy.deepcopy(model), context=context).model)
    assert len({id(layer.intermediate.dense) for layer in student}) == 3


def test_a_shared_quantised_layer_is_stored_once(model, tmp_path):
    # torch.ao unpacks a quantised Linear's weights anew at each name: the file must still hold them once
    sizes = {}
    for spec in ("dynamic_int8", "cross_layer:epochs=0+dynamic_int8"):
        compressor = build_compressor(spec)
        result = compressor.compress(copy.deepcopy(model), context=_context(compressor))
        compressor.save(result, tmp_path / spec)
        reloaded = type(compressor).load(tmp_path / spec)
        with torch.no_grad():
            assert torch.equal(reloaded(**_batch()).logits, result.model(**_batch()).logits)
        sizes[spec] = (tmp_path / spec / "model.pt").stat().st_size
    assert all(layer is _layers(reloaded)[0] for layer in _layers(reloaded))
    int8_layer = 4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN  # one byte a weight
    assert sizes["cross_layer:epochs=0+dynamic_int8"] < sizes["dynamic_int8"] - 5 * int8_layer


def test_static_int8_after_own_norms_is_refused_with_the_fix(model):
    pipeline = build_compressor("cross_layer:groups=3,norms=own,epochs=0+static_int8:calibration_examples=8")
    with pytest.raises(UsageError, match=r"static_int8 made .* different modules.*before the sharing stage"):
        pipeline.compress(copy.deepcopy(model), context=_context(pipeline, _features()))


def test_whole_layer_sharing_passes_through_static_int8(model):
    pipeline = build_compressor("cross_layer:groups=3,epochs=0+static_int8:calibration_examples=8")
    result = pipeline.compress(copy.deepcopy(model), context=_context(pipeline, _features()))
    assert _layers(result.model)[1] is _layers(result.model)[0]


# --- factorized_embedding ---------------------------------------------------------------------------------


def test_full_rank_factorised_embedding_reproduces_the_table():
    torch.manual_seed(0)
    embedding = nn.Embedding(50, 16, padding_idx=0)
    factorised = FactorizedEmbedding.from_embedding(embedding, rank=16)
    ids = torch.randint(0, 50, (3, 7))
    assert torch.allclose(factorised(ids), embedding(ids), atol=1e-5)
    assert not factorised.table.weight[0].any()  # the padding row stays exactly zero


def test_truncated_embedding_is_the_best_approximation_of_its_rank():
    torch.manual_seed(0)
    embedding = nn.Embedding(40, 16)
    factorised = FactorizedEmbedding.from_embedding(embedding, rank=5)
    product = (factorised.table.weight @ factorised.project.weight.T).detach()
    singular = torch.linalg.svdvals(embedding.weight.detach().double())
    error = (product - embedding.weight.detach()).double().norm() ** 2
    assert error == pytest.approx((singular[5:] ** 2).sum().item(), rel=1e-4)


def test_factorized_embedding_compressor_shrinks_and_reloads(model, tmp_path):
    compressor = FactorizedEmbeddingCompressor(FactorizedEmbeddingConfig(rank=8, epochs=0))
    result = _compress(compressor, model)
    factorised = result.model
    assert isinstance(factorised.get_input_embeddings(), FactorizedEmbedding)
    assert footprint(model).params - footprint(factorised).params == VOCAB * HIDDEN - (VOCAB * 8 + 8 * HIDDEN)
    assert result.layout == {"embedding_rank": 8}
    reloaded, _ = _round_trip(compressor, result, tmp_path)
    assert reloaded.get_input_embeddings().table.weight.shape == (VOCAB, 8)


def test_default_embedding_rank_is_a_third_of_the_hidden_size(model):
    compressor = FactorizedEmbeddingCompressor(FactorizedEmbeddingConfig(epochs=0))
    result = _compress(compressor, model)
    assert result.layout == {"embedding_rank": HIDDEN // 3}


@pytest.mark.parametrize("rank", [HIDDEN, 25])  # 25 x (100 + 32) >= 100 x 32: no saving
def test_factorized_embedding_refuses_a_rank_that_saves_nothing(model, rank):
    with pytest.raises(ValueError, match=r"rank=\d+ saves nothing .* choose rank <= 24"):
        _compress(FactorizedEmbeddingCompressor(FactorizedEmbeddingConfig(rank=rank, epochs=0)), model)


# --- low_rank ---------------------------------------------------------------------------------------------


def test_full_rank_low_rank_linear_reproduces_the_layer():
    torch.manual_seed(0)
    linear = nn.Linear(24, 16)
    x = torch.randn(5, 24)
    assert torch.allclose(LowRankLinear.from_linear(linear, rank=16)(x), linear(x), atol=1e-5)


def _with_singular_values(values: list[float], rows: int, cols: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    left, _ = torch.linalg.qr(torch.randn(rows, len(values), generator=generator))
    right, _ = torch.linalg.qr(torch.randn(cols, len(values), generator=generator))
    return left @ torch.diag(torch.tensor(values)) @ right.T


def test_energy_rule_picks_the_smallest_rank_holding_the_energy():
    _, singular, _ = svd(_with_singular_values([3.0, 2.0, 1.0, 0.0], 8, 6))  # squares 9, 4, 1 of 14
    assert [rank_for_energy(singular, e) for e in (0.5, 9 / 14, 0.9, 13 / 14, 0.95, 1.0)] == [1, 1, 2, 2, 3, 3]


def test_low_rank_uses_the_energy_rank_of_each_layer(model, tmp_path):
    name = "bert.encoder.layer.0.intermediate.dense"
    with torch.no_grad():
        model.get_submodule(name).weight.copy_(_with_singular_values([10.0, 5.0, 1.0, 0.5], FFN, HIDDEN))
    compressor = LowRank(LowRankConfig(energy=0.9, epochs=0))
    result = _compress(compressor, model)
    factorised = result.model
    assert result.layout["ranks"][name] == 2  # 100 + 25 of 126.25
    layer = factorised.get_submodule(name)
    assert isinstance(layer, LowRankLinear) and layer.down.weight.shape == (2, HIDDEN)
    _round_trip(compressor, result, tmp_path)


def test_low_rank_skips_layers_it_would_not_shrink(model, tmp_path):
    compressor = LowRank(LowRankConfig(rank=20, epochs=0))  # 20 x 64 >= 32 x 32, but 20 x 96 < 32 x 64
    result = _compress(compressor, model)
    factorised = result.model
    ranks, skipped = result.layout["ranks"], result.layout["skipped"]
    assert len(ranks) == 12 and all(".attention." not in name for name in ranks)
    assert len(skipped) == 24 and set(skipped.values()) == {20}
    assert footprint(model).params - footprint(factorised).params == 12 * (HIDDEN * FFN - 20 * (HIDDEN + FFN))
    reloaded, _ = _round_trip(compressor, result, tmp_path)
    assert isinstance(reloaded.get_submodule(next(iter(ranks))), LowRankLinear)


def test_include_selects_the_linears(model):
    encoder = target_linears(model, "encoder")
    attention, ffn = target_linears(model, "attention"), target_linears(model, "ffn")
    assert len(attention) == 24 and len(ffn) == 12 and sorted(attention + ffn) == sorted(encoder)
    assert set(target_linears(model, "all")) - set(encoder) == {"bert.pooler.dense", "classifier"}


def test_low_rank_default_is_energy_and_hashes_like_it():
    assert LowRankConfig().energy == 0.8 and LowRankConfig(rank=4).energy is None
    assert LowRankConfig().config_hash() == LowRankConfig(energy=0.8).config_hash()


# --- albert -----------------------------------------------------------------------------------------------


def test_albert_shares_layers_and_factorises_the_embedding(model, tmp_path):
    compressor = Albert(AlbertConfig(groups=1, embedding_rank=8, epochs=0))
    result = _compress(compressor, model)
    albert = result.model
    saved = 5 * LAYER_PARAMS + VOCAB * HIDDEN - (VOCAB * 8 + 8 * HIDDEN)
    assert footprint(model).params - footprint(albert).params == saved
    assert result.layout == {"groups": [list(range(6))], "embedding_rank": 8}
    reloaded, _ = _round_trip(compressor, result, tmp_path)
    assert all(layer is _layers(reloaded)[0] for layer in _layers(reloaded))
    assert isinstance(reloaded.get_input_embeddings(), FactorizedEmbedding)


# --- options ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "params", "field"), [
    (CrossLayerConfig, {"groups": 0}, "groups"),
    (CrossLayerConfig, {"init": "random"}, "init"),
    (FactorizedEmbeddingConfig, {"rank": 0}, "rank"),
    (LowRankConfig, {"rank": 4, "energy": 0.5}, "rank"),
    (LowRankConfig, {"rank": 0}, "rank"),
    (LowRankConfig, {"energy": 1.5}, "energy"),
    (LowRankConfig, {"energy": 0.0}, "energy"),
    (LowRankConfig, {"include": "head"}, "include"),
    (AlbertConfig, {"embedding_rank": 0}, "embedding_rank"),
    (AlbertConfig, {"init": "best"}, "init"),
    (CrossLayerConfig, {"norms": "mine"}, "norms"),
    (AlbertConfig, {"norms": "depth"}, "norms"),
])
def test_bad_options_are_named(config, params, field):
    with pytest.raises(ValueError, match=field):
        config.from_params(params)


def test_more_groups_than_layers_is_refused_at_compress_time(model):
    with pytest.raises(ValueError, match="groups must be in 1..6 .* got 7"):
        _compress(CrossLayer(CrossLayerConfig(groups=7, epochs=0)), model)


def test_layers_pruned_unevenly_cannot_be_shared_and_the_error_says_what_to_do(model):
    """A pipeline heads+cross_layer: the pruning stage left layers of different widths."""
    layer = model.base_model.encoder.layer[0]  # layer 0 keeps 8 FFN neurons, layer 1 all of its
    hidden = layer.intermediate.dense.in_features
    layer.intermediate.dense, layer.output.dense = nn.Linear(hidden, 8), nn.Linear(8, hidden)
    with pytest.raises(ValueError, match=r"layers \[0, 1\] have different shapes .* share the layers first"):
        _compress(CrossLayer(CrossLayerConfig(groups=3, epochs=0)), model)


def test_the_progress_bar_counts_only_groups_that_share():
    assert CrossLayer(CrossLayerConfig(groups=3)).recovery_description(
        {"groups": [[0, 1], [2, 3], [4, 5]]}) == "recovering 3 shared layer(s)"
    assert CrossLayer(CrossLayerConfig(groups=6)).recovery_description(
        {"groups": [[i] for i in range(6)]}) == "recovering 6 layer(s), 0 of them shared"
    assert CrossLayer(CrossLayerConfig(groups=3, tie="gradual", epochs=1)).recovery_description(
        {"groups": [[0, 1, 2], [3, 4], [5]]}) == "recovering 3 layer(s), 2 of them gradually tied"
