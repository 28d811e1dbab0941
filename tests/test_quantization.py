"""The quantisation family: numerics of its building blocks, and each compressor on a tiny model."""

import copy
import json

import pytest
import torch
from torch import nn

from benchsuite.cli import _compressor_list
from benchsuite.compressors.base import CompressionContext
from benchsuite.compressors.casts import Bf16, Fp16
from benchsuite.compressors.int8 import DynamicInt8, Int8Config, StaticInt8, StaticInt8Config
from benchsuite.compressors.registry import build_compressor
from benchsuite.compressors.weight_only import WeightOnlyConfig, WeightOnlyInt4, WeightOnlyInt8
from benchsuite.errors import UsageError
from benchsuite.machine import cpu_vector_flags
from benchsuite.measure.footprint import footprint, saved_size
from benchsuite.models import load_model
from benchsuite.quant import outliers
from benchsuite.quant.calibrate import input_absmax
from benchsuite.quant.groupwise import (
    GroupQuantEmbedding,
    GroupQuantLinear,
    dequantize_groups,
    pack_int4,
    quantize_groups,
    unpack_int4,
)
from benchsuite.quant.torch_ao import VNNI_FLAGS, FullRangeDynamicLinear, check_full_range, dynamic_mapping, quiet

torch.manual_seed(0)


# --- group-wise weight-only numerics -----------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 4])
def test_group_quantisation_error_is_within_half_a_step(bits):
    weight = torch.randn(16, 64)
    q, scales = quantize_groups(weight, bits=bits, group_size=16)
    assert q.dtype == torch.int8 and scales.shape == (16, 4)
    assert q.abs().max() <= {8: 127, 4: 7}[bits]
    error = (dequantize_groups(q, scales) - weight).abs().reshape(16, 4, 16)
    assert (error <= scales.unsqueeze(-1) / 2 + 1e-6).all()


def test_group_quantisation_keeps_zeros_and_all_zero_groups():
    weight = torch.randn(4, 32)
    weight[:, :8] = 0
    weight[1] = 0
    q, scales = quantize_groups(weight, bits=4, group_size=8)
    assert (dequantize_groups(q, scales)[weight == 0] == 0).all()


def test_int4_packing_round_trips_every_value():
    values = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 2)
    packed = pack_int4(values)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 16)
    assert torch.equal(unpack_int4(packed), values)


@pytest.mark.parametrize("bad", [0, 5, -16])
def test_group_size_must_divide_the_row(bad):
    with pytest.raises(ValueError, match="group_size"):
        quantize_groups(torch.randn(4, 32), bits=8, group_size=bad)


@pytest.mark.parametrize("bits", [8, 4])
def test_group_quant_linear_matches_its_dequantised_weight(bits):
    linear = nn.Linear(64, 32)
    layer = GroupQuantLinear.from_linear(linear, bits=bits, group_size=32)
    x = torch.randn(5, 64)
    expected = x @ layer.dequantized().T + linear.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)
    relative = (layer(x) - linear(x)).norm() / linear(x).norm()
    assert relative < {8: 0.01, 4: 0.2}[bits]
    assert layer.compressed_weights()[0].shape == (32, 64)  # one element per weight, unpacked


def test_group_quant_embedding_dequantises_only_the_rows_it_reads():
    table = nn.Embedding(50, 32)
    layer = GroupQuantEmbedding.from_embedding(table, bits=4, group_size=16)
    ids = torch.tensor([[3, 7, 3], [0, 49, 12]])
    assert torch.allclose(layer(ids), layer.dequantized()[ids])
    assert (layer(ids) - table(ids)).abs().max() <= layer.scales.max() / 2 + 1e-6


# --- outlier decomposition -------------------------------------------------------------------------------


def test_outlier_split_is_exact_in_fp32_and_selects_outlier_layers():
    torch.manual_seed(0)  # unseeded, about 1 draw in 40 gives the second layer an outlier of its own
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 4))
    x = torch.randn(3, 5, 16)
    x[..., 2] *= 40  # one outlier channel into the first layer only
    expected = model(x)
    absmax = {"0": x.abs().reshape(-1, 16).amax(0), "1": model[0](x).abs().reshape(-1, 8).amax(0)}
    chosen = outliers.select(absmax, ratio=6.0)
    assert chosen == ["0"]
    inner = outliers.wrap(model, chosen, k=2)
    assert inner == ["0.linear"]
    outliers.split(model, chosen, absmax)
    assert 2 in model[0].outliers.tolist()
    assert (model[0].linear.weight[:, model[0].outliers] == 0).all()
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_input_absmax_skips_padding():
    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(4, 4)

        def forward(self, input_ids, attention_mask):
            return self.dense(input_ids.float().unsqueeze(-1).expand(-1, -1, 4))

    batch = {"input_ids": torch.tensor([[1, 2, 99]]), "attention_mask": torch.tensor([[1, 1, 0]])}
    assert input_absmax(Probe(), ["dense"], [batch])["dense"].tolist() == [2.0] * 4


# --- compressors on the tiny model -----------------------------------------------------------------------


@pytest.fixture()
def classifier(tiny_model):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return load_model(AutoModelForSequenceClassification, str(tiny_model), num_labels=2).eval()


class _Tokenizer:
    pad_token_id = 0


def _context(compressor, n=256, seed=0):  # 256: what the int8 configs ask for by default
    generator = torch.Generator().manual_seed(seed)
    examples = [{"input_ids": torch.randint(5, 90, (int(torch.randint(4, 20, (1,), generator=generator)),),
                                            generator=generator).tolist()} for _ in range(n)]
    for example in examples:
        example["attention_mask"] = [1] * len(example["input_ids"])
    return CompressionContext(needs=compressor.NEEDS, task=None, tokenizer=_Tokenizer(), seed=0,
                              providers={"calibration_data": examples})


def _batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 90, (6, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[3:, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask}


VNNI = bool(VNNI_FLAGS & set(cpu_vector_flags()))
COMPRESSORS = [
    DynamicInt8(),
    DynamicInt8(Int8Config(per_channel=False, embeddings=False)),
    DynamicInt8(Int8Config(outlier_channels=2, outlier_ratio=1.0)),
    StaticInt8(),
    StaticInt8(StaticInt8Config(observer="minmax", outlier_channels=2, outlier_ratio=1.0)),
    WeightOnlyInt8(),
    WeightOnlyInt4(WeightOnlyConfig(group_size=32)),
    Fp16(),
    Bf16(),
]
if VNNI:
    COMPRESSORS.append(DynamicInt8(Int8Config(reduce_range=False)))


@pytest.mark.parametrize("compressor", COMPRESSORS, ids=lambda c: f"{c.name}-{c.config.config_hash()}")
def test_compressed_outputs_stay_close_and_reload_exactly(compressor, classifier, tmp_path):
    batch = _batch()
    with torch.inference_mode():
        expected = classifier(**batch).logits
    result = compressor.compress(copy.deepcopy(classifier), context=_context(compressor))
    model = result.model
    with torch.inference_mode():
        got = model(**batch).logits.float()
    assert (got - expected).abs().max() < 0.05 * expected.abs().max() + 0.02
    compressor.save(result, tmp_path)
    reloaded = type(compressor).load(tmp_path)
    with torch.inference_mode():
        assert torch.equal(reloaded(**batch).logits.float(), got)
    assert footprint(reloaded).params == footprint(model).params
    assert footprint(model).params >= footprint(classifier).params  # quantising stores every weight


def test_int8_counts_every_weight_and_saves_a_quarter(classifier, tmp_path):
    compressor = DynamicInt8()
    before = footprint(classifier)
    result = compressor.compress(copy.deepcopy(classifier), context=_context(compressor))
    assert footprint(result.model).params == before.params  # packed int8 weights count as parameters
    compressor.save(result, tmp_path)
    fp32_bytes = 4 * before.params
    assert saved_size(tmp_path, format="x").size_bytes < 0.45 * fp32_bytes


def test_full_range_linear_weights_are_counted(classifier):
    """The 8-bit-activation Linear subclasses torch.ao's; its packed weights count as parameters too."""
    with quiet():
        model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(classifier), {nn.Linear}, dtype=torch.qint8,
                                                       mapping=dynamic_mapping(reduce_range=False))
    assert any(isinstance(m, FullRangeDynamicLinear) for m in model.modules())
    assert footprint(model).params == footprint(classifier).params


def test_int4_file_is_smaller_than_int8(classifier, tmp_path):
    sizes = {}
    config = WeightOnlyConfig(group_size=32)
    for compressor in (WeightOnlyInt8(config), WeightOnlyInt4(config)):
        folder = tmp_path / compressor.name
        compressor.save(compressor.compress(copy.deepcopy(classifier), context=_context(compressor)), folder)
        sizes[compressor.name] = saved_size(folder, format="x").size_bytes
    assert sizes["weight_only_int4"] < 0.7 * sizes["weight_only_int8"]


@pytest.mark.parametrize("cast", [Fp16(), Bf16()], ids=lambda c: c.name)
def test_casts_store_half_precision(cast, classifier, tmp_path):
    cast.save(cast.compress(copy.deepcopy(classifier), context=_context(cast)), tmp_path)
    reloaded = type(cast).load(tmp_path)
    assert {p.dtype for p in reloaded.parameters()} == {cast.dtype}


def test_outlier_layout_is_saved_and_rebuilt(classifier, tmp_path):
    compressor = DynamicInt8(Int8Config(outlier_channels=2, outlier_ratio=1.0))
    result = compressor.compress(copy.deepcopy(classifier), context=_context(compressor))
    split = result.layout["outlier_split"]
    assert split and all(isinstance(result.model.get_submodule(n), outliers.OutlierSplitLinear) for n in split)
    compressor.save(result, tmp_path)
    assert json.loads((tmp_path / "compressor.json").read_text())["layout"]["outlier_split"] == split
    reloaded = DynamicInt8.load(tmp_path)
    assert all(isinstance(reloaded.get_submodule(n), outliers.OutlierSplitLinear) for n in split)


def test_load_refuses_another_compressors_folder(classifier, tmp_path):
    compressor = WeightOnlyInt8(WeightOnlyConfig(group_size=32))
    compressor.save(compressor.compress(copy.deepcopy(classifier), context=_context(compressor)), tmp_path)
    with pytest.raises(UsageError, match="weight_only_int8"):
        WeightOnlyInt4.load(tmp_path)


def test_weight_only_group_size_must_divide_every_layer(classifier):
    compressor = WeightOnlyInt8(WeightOnlyConfig(group_size=48))
    with pytest.raises(ValueError, match="does not divide"):
        compressor.compress(copy.deepcopy(classifier), context=_context(compressor))


def test_static_int8_without_calibration_examples_says_so(classifier):
    compressor = StaticInt8()
    context = CompressionContext(needs=compressor.NEEDS, task=None, tokenizer=_Tokenizer(), seed=0,
                                 providers={"calibration_data": []})
    with pytest.raises(ValueError, match="calibration_examples=256 asks for 256 calibration inputs, but .* only 0"):
        compressor.compress(copy.deepcopy(classifier), context=context)


def test_int8_calibrates_on_exactly_the_examples_it_asks_for(classifier):
    """Never silently fewer than the config (and so the record) says: 255 of 256 is refused."""
    compressor = StaticInt8()
    with pytest.raises(ValueError, match="set calibration_examples=255 or less"):
        compressor.compress(copy.deepcopy(classifier), context=_context(compressor, n=255))


def test_full_range_activations_need_vnni():
    with pytest.raises(ValueError, match="VNNI"):
        check_full_range("x86", ["avx2", "fma"])
    check_full_range("x86", ["avx2", "avx512_vnni"])
    check_full_range("onednn", ["avx2"])


@pytest.mark.skipif(not VNNI, reason="8-bit activations need VNNI")
def test_full_range_activations_are_more_accurate(classifier):
    batch = _batch()
    with torch.inference_mode():
        expected = classifier(**batch).logits
    errors = {}
    for reduce_range in (True, False):
        compressor = DynamicInt8(Int8Config(reduce_range=reduce_range, embeddings=False))
        model = compressor.compress(copy.deepcopy(classifier), context=_context(compressor)).model
        with torch.inference_mode():
            errors[reduce_range] = (model(**batch).logits - expected).abs().mean().item()
    assert errors[False] < errors[True]


@pytest.mark.parametrize("spec, message", [
    ("dynamic_int8:engine=tpu", "engine must be one of"),
    ("dynamic_int8:outlier_channels=-1", "outlier_channels"),
    ("dynamic_int8:outlier_ratio=0.5", "outlier_ratio"),
    ("static_int8:observer=mse", "observer must be one of"),
    ("static_int8:calibration_examples=0", "calibration_examples"),
    ("weight_only_int4:group_size=0", "group_size"),
    ("fp16:dtype=fp8", "unknown option"),
])
def test_bad_quantisation_options_are_named(spec, message):
    with pytest.raises(UsageError, match=message):
        build_compressor(spec)


def test_compressor_list_keeps_options_with_their_compressor():
    assert _compressor_list("baseline,dynamic_int8:reduce_range=false,outlier_channels=4,bf16") == (
        "baseline", "dynamic_int8:reduce_range=false,outlier_channels=4", "bf16")
    with pytest.raises(Exception, match="before any compressor"):
        _compressor_list("k=1,baseline")


@pytest.mark.parametrize("compressor", [WeightOnlyInt8(), WeightOnlyInt4(WeightOnlyConfig(group_size=16))],
                         ids=lambda c: c.name)
def test_weight_only_quantises_a_factorised_embeddings_table(compressor, classifier, tmp_path):
    """After factorized_embedding (a pipeline's earlier stage) the input embedding is a V x E table and an E x H
    projection: the table is stored in groups, the projection as a Linear; the model reloads exactly."""
    from benchsuite.compressors.share.factorize import factorize_embedding

    factorize_embedding(classifier, 16)
    batch = _batch()
    with torch.inference_mode():
        expected = classifier(**batch).logits
    result = compressor.compress(copy.deepcopy(classifier), context=_context(compressor))
    embedding = result.model.get_input_embeddings()
    assert isinstance(embedding.table, GroupQuantEmbedding) and isinstance(embedding.project, GroupQuantLinear)
    with torch.inference_mode():
        got = result.model(**batch).logits
    assert (got - expected).abs().max() < 0.1 * expected.abs().max() + 0.02
    pipeline_free = compressor.restructure(copy.deepcopy(classifier), {})  # the skeleton a reload builds
    assert isinstance(pipeline_free.get_input_embeddings().table, GroupQuantEmbedding)


def test_a_table_quantised_by_an_earlier_stage_is_not_quantised_again(classifier):
    from benchsuite.compressors.weight_only import EmbeddingInt8

    first = EmbeddingInt8()
    model = first.compress(copy.deepcopy(classifier), context=_context(first)).model
    assert isinstance(model.get_input_embeddings(), GroupQuantEmbedding)
    assert all(isinstance(m, nn.Linear) for m in model.modules() if "Linear" in type(m).__name__)
    later = DynamicInt8()
    with pytest.raises(ValueError, match="quantised it already .*embeddings=false"):
        later.compress(model, context=_context(later))
