import copy
import json
import warnings

import pytest
import torch
from torch import nn
from transformers import AutoModel

from benchsuite.measure import roofline
from benchsuite.measure.roofline import (
    KINDS,
    MatmulPeak,
    PeakMeasurement,
    achieved_fraction,
    cached_matmul_peak,
    describe_peak,
    forward_flops,
    measure_matmul_peak,
    measure_peak,
    peak_efficiency,
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


# --- peaks --------------------------------------------------------------------------------------
# No test asserts a speed: the measuring functions run at small sizes, or are replaced by fixed numbers.

SMALL_INT8 = (64, 128, 32)


def test_measure_matmul_peak_every_kind_small_and_restores_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        peak = measure_matmul_peak(threads=2, size=128, half_size=64, repeats=2, int8_shape=SMALL_INT8)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert [m.kind for m in peak.measurements] == list(KINDS)
    assert (peak.threads, peak.torch_version, peak.cpu_model) == (2, torch.__version__, roofline.cpu_model())
    for kind, n in (("fp32", 128), ("bf16", 64), ("fp16", 64)):
        best = peak.best(kind)
        assert best is not None and best.gflops > 0, peak.unavailable(kind)
        assert best.measurement.shape == (n, n, n) and best.measurement.repeats == 2 and best.best_of == 1
        assert f"{n}x{n} {kind}" in best.measurement.method
    if {"x86", "fbgemm"} & set(torch.backends.quantized.supported_engines):
        int8 = peak.best("int8")
        assert int8 is not None and int8.gflops > 0, peak.unavailable("int8")
        assert int8.measurement.shape == SMALL_INT8 and int8.measurement.engine in ("x86", "fbgemm")
    else:
        assert peak.best("int8") is None and peak.unavailable("int8")
    assert MatmulPeak.from_json(json.loads(json.dumps(peak.to_json()))) == peak
    summary = peak.summary()
    assert summary["fp32_gflops"] == peak.best("fp32").gflops and summary["measurements"] == dict.fromkeys(KINDS, 1)


def test_half_precision_size_fits_the_budget(monkeypatch):
    # No time allowed: the smallest size. Any time allowed: the largest (the sizes made tiny here).
    tight = measure_peak("bf16", threads=1, repeats=1, half_budget_s=0.0)
    assert tight.shape == (roofline.HALF_SIZES[0],) * 3 and tight.gflops > 0
    assert "whose measurement was estimated" in tight.method
    monkeypatch.setattr(roofline, "HALF_SIZES", (16, 32, 48))
    loose = measure_peak("fp16", threads=1, repeats=1, half_budget_s=1e9)
    assert loose.shape == (48, 48, 48) and loose.gflops > 0


def test_missing_int8_engine_is_recorded_not_raised(monkeypatch):
    def no_engine(*args, **kwargs):
        raise RuntimeError("Didn't find engine for operation quantized::linear_prepack NoQEngine")

    monkeypatch.setattr(torch.ao.quantization, "quantize_dynamic", no_engine)
    engine = torch.backends.quantized.engine
    peak = measure_matmul_peak(threads=1, size=64, half_size=32, repeats=1, int8_shape=SMALL_INT8)
    assert peak.best("fp32").gflops > 0
    assert peak.best("int8") is None and peak.of_kind("int8")[0].shape is None
    assert "NoQEngine" in peak.unavailable("int8")
    assert torch.backends.quantized.engine == engine


def test_half_precision_failure_is_recorded_fp32_failure_raised(monkeypatch):
    def no_kernel(dtype, n, repeats):
        raise RuntimeError(f"\"addmm_impl_cpu_\" not implemented for '{dtype}'")

    monkeypatch.setattr(roofline, "_mm_gflops", no_kernel)
    half = measure_peak("fp16", threads=1, repeats=1, size=32)
    assert half.gflops is None and half.shape is None and "not implemented" in half.unavailable
    with pytest.raises(RuntimeError, match="not implemented"):
        measure_peak("fp32", threads=1, repeats=1, size=32)
    with pytest.raises(ValueError, match="unknown compute type"):
        measure_peak("int4", threads=1)


def _m(kind: str, gflops: float | None, when: str = "2025-01-01T00:00:00+00:00") -> PeakMeasurement:
    shape = roofline.INT8_SHAPE if kind == "int8" else (2048, 2048, 2048)
    return PeakMeasurement(kind=kind, gflops=gflops, shape=shape if gflops is not None else None, repeats=10,
                           method=f"fake {kind}", measured_at_utc=when, engine="x86" if kind == "int8" else None,
                           unavailable=None if gflops is not None else "no engine")


def _peak(threads: int, *measurements: PeakMeasurement) -> MatmulPeak:
    return MatmulPeak(cpu_model=roofline.cpu_model(), threads=threads, torch_version=torch.__version__,
                      measurements=measurements)


def _full(threads: int = 2, fp32: float = 100.0) -> MatmulPeak:
    return _peak(threads, _m("fp32", fp32), _m("bf16", 10.0), _m("fp16", 5.0), _m("int8", 250.0))


def _fake_measuring(monkeypatch, values: dict[str, list[float]] | None = None) -> list[tuple[str, int]]:
    """Replace measure_peak: each kind gives its next value from ``values`` (else a default); returns the calls."""
    calls = []
    defaults = {"fp32": 100.0, "bf16": 10.0, "fp16": 5.0, "int8": 250.0}
    queue = {kind: list(v) for kind, v in (values or {}).items()}

    def fake(kind, *, threads, **kwargs):
        calls.append((kind, threads))
        value = queue[kind].pop(0) if queue.get(kind) else defaults[kind]
        return _m(kind, value, when=f"2025-01-02T00:00:{len(calls):02d}+00:00")

    monkeypatch.setattr(roofline, "measure_peak", fake)
    return calls


def _cache_file(cache_dir, threads: int):
    return roofline._cache_path(cache_dir, threads)


def test_cached_matmul_peak_measures_once_and_remeasures_corrupt_file(tmp_path, monkeypatch):
    calls = _fake_measuring(monkeypatch)
    first = cached_matmul_peak(tmp_path, threads=2)
    files = list((tmp_path / "machine").iterdir())
    assert len(files) == 1 and files[0].name.startswith("matmul-peak-2t-") and files[0].suffix == ".json"
    assert sorted(calls) == sorted((kind, 2) for kind in KINDS)
    assert cached_matmul_peak(tmp_path, threads=2) == first
    assert len(calls) == 4  # read back, not measured again
    assert {kind: first.best(kind).gflops for kind in KINDS} == {"fp32": 100.0, "bf16": 10.0, "fp16": 5.0,
                                                                 "int8": 250.0}

    files[0].write_text("{not json")
    assert cached_matmul_peak(tmp_path, threads=2).best("fp32").gflops == 100.0
    assert len(calls) == 8
    assert json.loads(files[0].read_text())["format"] == roofline.CACHE_FORMAT  # rewritten

    cached_matmul_peak(tmp_path, threads=1)  # another thread count is another entry
    assert calls[8:] == [(kind, 1) for kind in KINDS]
    assert len(list((tmp_path / "machine").glob("matmul-peak-*.json"))) == 2
    assert not list((tmp_path / "machine").glob("*.tmp"))


def test_cached_peak_is_the_best_of_every_measurement(tmp_path, monkeypatch):
    calls = _fake_measuring(monkeypatch)
    busy, idle, later = (_m("fp32", 54.0, "2025-01-01T00:00:00+00:00"), _m("fp32", 120.0, "2025-01-03T00:00:00+00:00"),
                         _m("fp32", 80.0, "2025-01-04T00:00:00+00:00"))
    stored = _peak(2, busy, _m("bf16", 9.0), idle, _m("fp16", 4.0), later, _m("bf16", 11.0), _m("int8", None))
    roofline._write_cache(_cache_file(tmp_path, 2), stored)
    peak = cached_matmul_peak(tmp_path, threads=2)
    assert calls == [] and peak == stored  # every measurement kept, none taken
    best = peak.best("fp32")
    assert (best.gflops, best.best_of, best.measurement.measured_at_utc) == (120.0, 3, "2025-01-03T00:00:00+00:00")
    assert best.to_json()["best_of"] == 3 and best.to_json()["measured_at_utc"] == "2025-01-03T00:00:00+00:00"
    assert (peak.best("bf16").gflops, peak.best("bf16").best_of) == (11.0, 2)
    assert peak.best("int8") is None and peak.unavailable("int8") == "no engine"
    assert peak.summary()["measurements"] == {"fp32": 3, "bf16": 2, "fp16": 1, "int8": 1}
    words = describe_peak(best.to_json())
    assert "fp32 torch.mm of 2048x2048 matrices over 3 measurement(s)" in words and "2025-01-03" in words


def test_achieved_fraction():
    peak = _full()
    result = achieved_fraction(2_000_000_000, 0.1, peak)
    assert {k: result[k] for k in ("achieved_gflops", "peak_gflops", "fraction_of_peak", "peak_kind", "note")} == {
        "achieved_gflops": 20.0, "peak_gflops": 100.0, "fraction_of_peak": 0.2, "peak_kind": "fp32", "note": None}
    assert result["peak"] == peak.best("fp32").to_json()
    assert achieved_fraction(2_000_000_000, 0.1, peak, kind="int8")["fraction_of_peak"] == 0.08
    assert achieved_fraction(2_000_000_000, 1.0, peak, kind="bf16")["fraction_of_peak"] == 0.2
    assert achieved_fraction(2_000_000_000, 1.0, peak, kind="fp16")["peak_gflops"] == 5.0
    with pytest.raises(ValueError):
        achieved_fraction(1, 0.0, peak)
    with pytest.raises(ValueError, match="unknown compute type"):
        achieved_fraction(1, 1.0, peak, kind="int4")
    no_int8 = _peak(2, _m("fp32", 100.0), _m("int8", None))
    with pytest.raises(ValueError, match="no engine"):
        achieved_fraction(1, 1.0, no_int8, kind="int8")


@pytest.mark.parametrize("seconds", [1.0, 0.5, 0.1, 0.01, 1e-6])
def test_achieved_fraction_never_above_one(seconds):
    result = achieved_fraction(10_000_000_000, seconds, _full(fp32=100.0))  # 10 GFLOP: 10 to 1e7 GFLOP/s
    if result["fraction_of_peak"] is None:
        assert 10 / seconds > 100.0 and "beats the fp32 peak" in result["note"]
    else:
        assert 0 < result["fraction_of_peak"] <= 1.0 and result["note"] is None
    exact = achieved_fraction(10_000_000_000, 0.1, _full(fp32=100.0))
    assert exact["fraction_of_peak"] == 1.0 and exact["note"] is None


def test_peak_efficiency_normal_case_does_not_remeasure(tmp_path, monkeypatch):
    calls = _fake_measuring(monkeypatch)
    result = peak_efficiency(2_000_000_000, 0.1, compute="fp32", cache_dir=tmp_path, threads=2)
    assert len(calls) == len(KINDS)  # the first use measures every kind once
    assert (result["fraction_of_peak"], result["peak_kind"], result["compute"]) == (0.2, "fp32", "fp32")
    assert result["note"] is None and result["peak_remeasured"] is False
    assert result["peak"]["best_of"] == 1 and result["peak"]["measured_at_utc"]
    assert result["matmul_peak"]["fp32_gflops"] == 100.0 and result["matmul_peak"]["int8_gops"] == 250.0
    again = peak_efficiency(2_000_000_000, 0.4, compute="bf16", cache_dir=tmp_path, threads=2)  # 5 GFLOP/s
    assert len(calls) == len(KINDS)
    assert (again["peak_kind"], again["peak_gflops"], again["fraction_of_peak"]) == ("bf16", 10.0, 0.5)


def test_a_beaten_peak_is_measured_again_and_the_best_kept(tmp_path, monkeypatch):
    roofline._write_cache(_cache_file(tmp_path, 2), _full(fp32=54.0))  # measured while the cores were busy
    calls = _fake_measuring(monkeypatch, {"fp32": [120.0]})
    result = peak_efficiency(8_000_000_000, 0.1, compute="fp32", cache_dir=tmp_path, threads=2)  # 80 GFLOP/s
    assert calls == [("fp32", 2)]
    assert result["peak_remeasured"] is True and "measured again" in result["note"]
    assert (result["peak_gflops"], result["fraction_of_peak"]) == (120.0, round(80 / 120, 4))
    assert result["peak"]["best_of"] == 2
    cached = MatmulPeak.from_json(json.loads(_cache_file(tmp_path, 2).read_text()))
    assert [m.gflops for m in cached.of_kind("fp32")] == [54.0, 120.0]
    # Now the pass no longer beats the peak: nothing is measured.
    result = peak_efficiency(8_000_000_000, 0.1, compute="fp32", cache_dir=tmp_path, threads=2)
    assert calls == [("fp32", 2)] and result["peak_remeasured"] is False and result["note"] is None
    # A bf16 pass is held against bf16, and beating it re-measures bf16 only.
    result = peak_efficiency(2_000_000_000, 0.1, compute="bf16", cache_dir=tmp_path, threads=2)
    assert calls[1:] == [("bf16", 2)] and result["peak_kind"] == "bf16"


def test_a_pass_still_beating_the_peak_gets_no_fraction(tmp_path, monkeypatch):
    roofline._write_cache(_cache_file(tmp_path, 2), _full(fp32=50.0))
    calls = _fake_measuring(monkeypatch, {"fp32": [40.0]})  # the re-measurement is no better
    result = peak_efficiency(8_000_000_000, 0.1, compute="fp32", cache_dir=tmp_path, threads=2)
    assert calls == [("fp32", 2)] and result["peak_remeasured"] is True
    assert result["fraction_of_peak"] is None
    assert result["peak_gflops"] == 50.0 and result["peak"]["best_of"] == 2
    assert "measured again" in result["note"] and "beats the fp32 peak" in result["note"]
    assert "no fraction is given" in result["note"]


def test_compute_without_a_peak_falls_back_to_fp32_and_says_so(tmp_path, monkeypatch):
    roofline._write_cache(_cache_file(tmp_path, 2), _peak(2, _m("fp32", 100.0), _m("bf16", 10.0),
                                                            _m("fp16", 5.0), _m("int8", None)))
    calls = _fake_measuring(monkeypatch)
    int8 = peak_efficiency(2_000_000_000, 0.1, compute="int8", cache_dir=tmp_path, threads=2)
    assert (int8["compute"], int8["peak_kind"], int8["fraction_of_peak"]) == ("int8", "fp32", 0.2)
    assert "no int8 peak" in int8["note"] and "no engine" in int8["note"]
    assert int8["matmul_peak"]["int8_gops"] is None
    odd = peak_efficiency(2_000_000_000, 0.1, compute="int4", cache_dir=tmp_path, threads=2)
    assert odd["peak_kind"] == "fp32" and "unknown compute type 'int4'" in odd["note"]
    assert calls == []


def _single_measurement_file(threads: int, **changes) -> dict:
    """A cache file as written before per-kind peaks."""
    return {"fp32_gflops": 54.0, "int8_gops": 250.0, "fp32_size": 2048, "int8_shape": [4096, 1536, 384],
            "threads": threads, "repeats": 10, "torch_version": torch.__version__, "cpu_model": roofline.cpu_model(),
            "method": "fp32: torch.mm ...; int8: ...", "measured_at_utc": "2025-01-01T00:00:00+00:00",
            "int8_engine": "x86", "int8_unavailable": None, **changes}


def test_a_single_measurement_cache_file_is_read_as_one_measurement(tmp_path, monkeypatch):
    path = _cache_file(tmp_path, 2)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_single_measurement_file(2)))
    calls = _fake_measuring(monkeypatch)
    peak = cached_matmul_peak(tmp_path, threads=2)
    assert calls == [("bf16", 2), ("fp16", 2)]  # only the kinds it did not have
    fp32, int8 = peak.best("fp32"), peak.best("int8")
    assert (fp32.gflops, fp32.best_of, fp32.measurement.shape) == (54.0, 1, (2048, 2048, 2048))
    assert fp32.measurement.measured_at_utc == "2025-01-01T00:00:00+00:00"
    assert "single-measurement cache file" in fp32.measurement.method
    assert (int8.gflops, int8.measurement.shape, int8.measurement.engine) == (250.0, (4096, 1536, 384), "x86")
    assert MatmulPeak.from_json(json.loads(path.read_text())) == peak  # rewritten in the new layout
    # The low peak it holds is measured again once a pass beats it.
    monkeypatch.setattr(roofline, "measure_peak", lambda kind, *, threads, **kw: _m(kind, 120.0))
    result = peak_efficiency(8_000_000_000, 0.1, compute="fp32", cache_dir=tmp_path, threads=2)
    assert result["peak_gflops"] == 120.0 and result["fraction_of_peak"] == round(80 / 120, 4)


@pytest.mark.parametrize("content", [
    _single_measurement_file(2, cpu_model="another CPU"),  # another machine's
    {**_single_measurement_file(2), "threads": 1},  # another thread count's
    {k: v for k, v in _single_measurement_file(2).items() if k != "fp32_size"},  # incomplete
    _single_measurement_file(2, fp32_gflops="fast"),
    _single_measurement_file(2, fp32_gflops=-3.0),
    _single_measurement_file(2, fp32_gflops=None),
    {**_peak(2, _m("fp32", 100.0)).to_json(), "measurements": [{**_m("fp32", 100.0).to_json(), "gflops": None}]},
    {**_peak(2, _m("fp32", 100.0)).to_json(), "measurements": [{**_m("fp32", 100.0).to_json(), "kind": "int4"}]},
    {"format": 99, "measurements": []},
    {"format": roofline.CACHE_FORMAT, "cpu_model": "x", "threads": 2, "torch_version": "0", "measurements": [1]},
    [1, 2, 3],
])
def test_an_unusable_cache_file_is_measured_again(tmp_path, monkeypatch, content):
    path = _cache_file(tmp_path, 2)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(content))
    calls = _fake_measuring(monkeypatch)
    peak = cached_matmul_peak(tmp_path, threads=2)
    assert sorted(calls) == sorted((kind, 2) for kind in KINDS)
    assert peak.best("fp32").gflops == 100.0 and peak.best("fp32").best_of == 1


def test_a_single_measurement_file_without_int8(tmp_path, monkeypatch):
    path = _cache_file(tmp_path, 2)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_single_measurement_file(2, int8_gops=None, int8_shape=None, int8_engine=None,
                                                        int8_unavailable="RuntimeError: NoQEngine")))
    calls = _fake_measuring(monkeypatch)
    peak = cached_matmul_peak(tmp_path, threads=2)
    assert calls == [("bf16", 2), ("fp16", 2)]
    assert peak.best("int8") is None and "NoQEngine" in peak.unavailable("int8")


def test_each_built_in_compressor_names_the_arithmetic_it_runs():
    """Efficiency is held against the peak of ``compute``: a half-precision or int8 model held against the fp32
    peak read 197-222% once. Weight-only int8/int4 and the int8 embedding table compute in fp32."""
    from benchsuite.compressors.registry import get_compressor_class, registered  # noqa: PLC0415

    expected = {"fp16": "fp16", "bf16": "bf16", "dynamic_int8": "int8", "static_int8": "int8", "ort_int8": "int8"}
    builtin = [n for n, r in registered().items() if r.entry_point.value.startswith("benchsuite.")]
    assert set(expected) <= set(builtin)
    for name in builtin:
        assert get_compressor_class(name).compute == expected.get(name, "fp32"), name
