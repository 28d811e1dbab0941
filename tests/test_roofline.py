import copy
import json
import warnings

import pytest
import torch
from torch import nn
from transformers import AutoModel

from benchsuite.measure import roofline
from benchsuite.measure.roofline import (
    MatmulPeak,
    achieved_fraction,
    cached_matmul_peak,
    forward_flops,
    measure_matmul_peak,
)


def _quantize(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def _batch(batch_size: int = 3, length: int = 11) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(batch_size, length, dtype=torch.long)
    mask[0, 7:] = 0  # one padded row: attention still runs over the padded length
    return {"input_ids": torch.randint(1000, 2000, (batch_size, length), generator=generator),
            "attention_mask": mask}


def _bert_hand_flops(config, batch_size: int, length: int) -> int:
    h, i = config.hidden_size, config.intermediate_size
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    tokens = batch_size * length
    per_token_linear = 4 * h * h + 2 * h * i  # q, k, v, attention output; FFN up and down
    linear = 2 * tokens * per_token_linear * config.num_hidden_layers
    pooler = 2 * batch_size * h * h  # the pooler's dense layer sees the first token only
    attention = 2 * 2 * batch_size * heads * length**2 * head_dim * config.num_hidden_layers
    return linear + pooler + attention


def test_linear_flops_exact():
    assert forward_flops(nn.Linear(64, 32), {"input": torch.randn(8, 64)}) == 2 * 8 * 64 * 32


def test_quantized_linear_counts_as_float():
    float_model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
    quantized = _quantize(float_model)
    assert isinstance(quantized[0], torch.ao.nn.quantized.dynamic.Linear)
    x = {"input": torch.randn(2, 5, 64)}
    assert forward_flops(quantized, x) == forward_flops(float_model, x) == 2 * 10 * (64 * 32 + 32 * 16)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_tiny_bert_matches_hand_formula(tiny_model, attention):
    model = AutoModel.from_pretrained(tiny_model, attn_implementation=attention)
    assert model.config.num_hidden_layers == 2  # the formula below assumes a plain BERT encoder
    flops = forward_flops(model, _batch(3, 11))
    assert flops == _bert_hand_flops(model.config, 3, 11)


def test_quantized_bert_flops_equal_float(tiny_model):
    model = AutoModel.from_pretrained(tiny_model)
    quantized = _quantize(model)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules())
    batch = _batch(2, 9)
    float_flops, quantized_flops = forward_flops(model, batch), forward_flops(quantized, batch)
    assert abs(quantized_flops - float_flops) <= 0.01 * float_flops
    assert quantized_flops == float_flops == _bert_hand_flops(model.config, 2, 9)


def test_forward_flops_restores_training_mode():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    assert forward_flops(model, {"input": torch.randn(2, 4)}) == 2 * 2 * 4 * 4
    assert model.training


def test_measure_matmul_peak_small_and_restores_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        peak = measure_matmul_peak(threads=2, size=256, repeats=2)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert peak.fp32_gflops > 0
    assert (peak.fp32_size, peak.threads, peak.repeats) == (256, 2, 2)
    assert peak.torch_version == torch.__version__
    if {"x86", "fbgemm"} & set(torch.backends.quantized.supported_engines):
        assert peak.int8_gops is not None and peak.int8_gops > 0, peak.int8_unavailable
        assert peak.int8_shape == roofline.INT8_SHAPE
    else:
        assert peak.int8_gops is None and peak.int8_unavailable
    assert MatmulPeak.from_json(json.loads(json.dumps(peak.to_json()))) == peak


def test_missing_int8_engine_is_recorded_not_raised(monkeypatch):
    def no_engine(*args, **kwargs):
        raise RuntimeError("Didn't find engine for operation quantized::linear_prepack NoQEngine")

    monkeypatch.setattr(torch.ao.quantization, "quantize_dynamic", no_engine)
    engine = torch.backends.quantized.engine
    peak = measure_matmul_peak(threads=1, size=64, repeats=1)
    assert peak.fp32_gflops > 0
    assert peak.int8_gops is None and peak.int8_shape is None
    assert "NoQEngine" in peak.int8_unavailable
    assert torch.backends.quantized.engine == engine


def _fake_peak(threads: int) -> MatmulPeak:
    return MatmulPeak(fp32_gflops=100.0, int8_gops=250.0, fp32_size=2048, int8_shape=(4096, 1536, 384),
                      threads=threads, repeats=10, torch_version=torch.__version__, cpu_model=roofline.cpu_model(),
                      method="fake", measured_at_utc="2025-01-01T00:00:00+00:00", int8_engine="x86")


def test_cached_matmul_peak_measures_once_and_remeasures_corrupt_file(tmp_path, monkeypatch):
    calls = []

    def fake_measure(*, threads):
        calls.append(threads)
        return _fake_peak(threads)

    monkeypatch.setattr(roofline, "measure_matmul_peak", fake_measure)
    first = cached_matmul_peak(tmp_path, threads=2)
    files = list((tmp_path / "machine").iterdir())
    assert len(files) == 1 and files[0].name.startswith("matmul-peak-") and files[0].suffix == ".json"
    assert cached_matmul_peak(tmp_path, threads=2) == first == _fake_peak(2)
    assert calls == [2]

    files[0].write_text("{not json")
    assert cached_matmul_peak(tmp_path, threads=2) == first
    assert calls == [2, 2]
    assert json.loads(files[0].read_text())["fp32_gflops"] == 100.0  # rewritten

    cached_matmul_peak(tmp_path, threads=1)  # another thread count is another entry
    assert calls == [2, 2, 1]
    assert len(list((tmp_path / "machine").glob("matmul-peak-*.json"))) == 2
    assert not list((tmp_path / "machine").glob("*.tmp"))


def test_achieved_fraction():
    peak = _fake_peak(2)
    assert achieved_fraction(2_000_000_000, 0.1, peak) == {
        "achieved_gflops": 20.0, "peak_gflops": 100.0, "fraction_of_peak": 0.2}
    assert achieved_fraction(2_000_000_000, 0.1, peak, int8=True)["fraction_of_peak"] == 0.08
    with pytest.raises(ValueError):
        achieved_fraction(1, 0.0, peak)
    no_int8 = MatmulPeak(**{**peak.__dict__, "int8_gops": None, "int8_unavailable": "no engine"})
    with pytest.raises(ValueError, match="no engine"):
        achieved_fraction(1, 1.0, no_int8, int8=True)
