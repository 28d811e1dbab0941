"""Distillation: the losses, the teacher-output cache, the recovery loop and the ``distill`` student."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification

from benchsuite.compressors.base import CompressionContext
from benchsuite.compressors.distill import Distill, DistillConfig
from benchsuite.data import load_task_data
from benchsuite.distillation.loss import attention_loss, hidden_loss, soft_loss
from benchsuite.distillation.recovery import RECOVERY_NEEDS, uniform_layer_map
from benchsuite.distillation.teacher import teacher_outputs
from benchsuite.engine import collate, forward_all
from benchsuite.models import load_model, load_tokenizer, resolve_model
from benchsuite.tasks import load_task, task_kind
from benchsuite.testing import tiny_config


def test_soft_loss_is_hinton_kl_times_t_squared():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    expected = F.kl_div(F.log_softmax(s / 2, -1), F.softmax(t / 2, -1), reduction="batchmean") * 4
    assert torch.allclose(soft_loss(s, t, None, temperature=2.0), expected, atol=1e-6)
    assert soft_loss(t, t, None, temperature=2.0).abs() < 1e-6


def test_soft_loss_over_positions_ignores_padding():
    torch.manual_seed(0)
    s, t = torch.randn(2, 6), torch.randn(2, 6)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    loss = soft_loss(s, t, mask, temperature=1.0)
    s2, t2 = s.clone(), t.clone()
    s2[1, 4:], t2[1, 4:] = 50.0, -50.0  # padding positions: must not matter
    assert torch.allclose(soft_loss(s2, t2, mask, temperature=1.0), loss)
    ref = torch.stack([F.kl_div(F.log_softmax(s[i, m], -1), F.softmax(t[i, m], -1), reduction="sum")
                       for i, m in enumerate(mask)]).mean()
    assert torch.allclose(loss, ref, atol=1e-5)


def test_soft_loss_per_token_classes_averages_real_tokens_only():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    ref = F.kl_div(F.log_softmax(s[mask], -1), F.softmax(t[mask], -1), reduction="batchmean")
    assert torch.allclose(soft_loss(s, t, mask, temperature=1.0), ref, atol=1e-6)


def test_regression_head_is_matched_by_mse():
    s, t = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [4.0]])
    assert soft_loss(s, t, None, temperature=3.0).item() == pytest.approx(2.5)


def test_matching_losses_count_real_tokens_only():
    mask = torch.tensor([[True, False]])
    a, b = torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)
    b[0, 1] = 9.0  # a padding token: ignored
    assert hidden_loss(a, b, mask, kind="mse") == 0
    b[0, 0] = 1.0
    assert hidden_loss(a, b, mask, kind="mse") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same heads"):
        attention_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2), mask)


def test_layer_map_spreads_evenly():
    assert uniform_layer_map(3, 6) == [2, 4, 6]
    assert uniform_layer_map(2, 6) == [3, 6]
    assert uniform_layer_map(6, 6) == [1, 2, 3, 4, 5, 6]


@pytest.fixture()
def sst2(tiny_model, data_env):
    spec = load_task("sst2")
    kind = task_kind(spec, load_tokenizer(resolve_model(str(tiny_model)), max_length=spec.max_length))
    data = load_task_data(spec, max_train=48, max_eval=8, seed=0)
    return spec, kind, kind.train_features(data.train)


def test_teacher_outputs_match_a_forward_pass_and_are_cached(sst2, tiny_model, tmp_path):
    spec, kind, features = sst2
    teacher = load_model(kind.auto_class, str(tiny_model), **kind.model_kwargs())
    args = dict(names=kind.outputs, per_token=kind.per_token, pad_token_id=kind.tokenizer.pad_token_id,
                cache_dir=tmp_path, teacher_key="t")
    first = teacher_outputs(lambda: teacher, features, **args)
    direct, _ = forward_all(teacher, features, output_names=["logits"], batch_size=64,
                            pad_token_id=kind.tokenizer.pad_token_id, per_token=False)
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(first.values["logits"], direct["logits"], strict=True))

    class Exploding(torch.nn.Module):
        def forward(self, **_):
            raise AssertionError("the cached outputs should have been read")

    again = teacher_outputs(Exploding, features, **args)  # same key: read back, not recomputed
    assert all(np.array_equal(a, b) for a, b in zip(first.values["logits"], again.values["logits"], strict=True))
    with pytest.raises(AssertionError, match="cached"):  # other features: another key
        teacher_outputs(Exploding, features[:10], **args)


def test_per_token_outputs_batch_back_padded_with_a_mask(tmp_path):
    from benchsuite.distillation.teacher import TeacherOutputs

    outputs = TeacherOutputs(("logits",), True, {"logits": [np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)]})
    values, mask = outputs.batch("logits", [0, 1], width=5)
    assert values.shape == (2, 5, 3) and mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]
    assert values[0, 2:].abs().sum() == 0


def _context(spec, kind, features, teacher, tmp_path, **train):
    outputs = teacher_outputs(lambda: teacher, features, names=kind.outputs, per_token=kind.per_token,
                              pad_token_id=kind.tokenizer.pad_token_id, cache_dir=tmp_path, teacher_key="t")
    return CompressionContext(needs=RECOVERY_NEEDS, task=spec, tokenizer=kind.tokenizer, seed=0,
                              providers={"train_data": features, "teacher": lambda: teacher,
                                         "teacher_outputs": outputs},
                              train_config=replace(spec.train, **{"epochs": 1.0, "batch_size": 8, **train}))


def _tiny_classifier(layers: int, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config(30522, num_hidden_layers=layers, num_labels=2)).eval()


def test_student_keeps_every_other_teacher_layer(sst2, tmp_path):
    spec, kind, features = sst2
    teacher = _tiny_classifier(4, seed=0)
    result = Distill(DistillConfig(epochs=0)).compress(copy.deepcopy(teacher), context=_context(
        spec, kind, features, teacher, tmp_path))
    student = result.model
    assert student.config.num_hidden_layers == 2
    for got, source in zip(student.bert.encoder.layer, (0, 2), strict=True):
        expected = teacher.bert.encoder.layer[source].state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in got.state_dict().items())
    assert [layer.attention.self.layer_idx for layer in student.bert.encoder.layer] == [0, 1]
    Distill().save(result, tmp_path / "saved")
    reloaded = Distill.load(tmp_path / "saved")
    batch = collate([{k: features[0][k] for k in ("input_ids", "attention_mask")}], 0)
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, student(**batch).logits, atol=1e-6)


def test_distillation_pulls_the_student_towards_the_teacher(sst2, tmp_path):
    spec, kind, features = sst2
    teacher = _tiny_classifier(2, seed=0)
    batch = collate([{k: f[k] for k in ("input_ids", "attention_mask")} for f in features], 0)

    def gap(model) -> float:
        with torch.no_grad():
            return soft_loss(model(**batch).logits, teacher(**batch).logits, None, temperature=1.0).item()

    soft, hard = _tiny_classifier(2, seed=1), _tiny_classifier(2, seed=1)
    before = gap(soft)
    for model, alpha in ((soft, 1.0), (hard, 0.0)):
        compressor = Distill(DistillConfig(layers=2, alpha=alpha, epochs=3.0, learning_rate=1e-3))
        result = compressor.compress(model, context=_context(spec, kind, features, teacher, tmp_path))
        assert result.recovery["steps"] == 18
    assert gap(soft) < before / 2
    assert gap(soft) < gap(hard)  # the hard-label student learns the labels, not the teacher


def test_hidden_and_attention_matching_train(sst2, tmp_path):
    spec, kind, features = sst2
    teacher = _tiny_classifier(4, seed=0)
    compressor = Distill(DistillConfig(layers=2, hidden_weight=1.0, attention_weight=1.0, epochs=1.0))
    result = compressor.compress(copy.deepcopy(teacher), context=_context(spec, kind, features, teacher, tmp_path))
    student = result.model
    assert np.isfinite(result.recovery["final_loss"])
    assert student.config._attn_implementation == teacher.config._attn_implementation != "eager"


@pytest.mark.parametrize("options, field", [({"alpha": 1.5}, "alpha"), ({"temperature": 0}, "temperature"),
                                            ({"layers": 0}, "layers"), ({"layers": 2, "keep": (0,)}, "keep"),
                                            ({"hidden_distance": "l1"}, "hidden_distance"),
                                            ({"epochs": -1}, "epochs"),
                                            ({"train_precision": "fp16"}, "train_precision")])
def test_bad_options_are_refused_by_name(options, field):
    with pytest.raises(ValueError, match=field):
        DistillConfig(**options)


def test_a_student_deeper_than_its_teacher_is_refused(sst2, tmp_path):
    spec, kind, features = sst2
    teacher = _tiny_classifier(2, seed=0)
    with pytest.raises(ValueError, match="cannot keep 3"):
        Distill(DistillConfig(layers=3)).compress(copy.deepcopy(teacher), context=_context(
            spec, kind, features, teacher, tmp_path))


def test_optional_floats_hash_the_same_however_written():
    assert (DistillConfig.from_params({"epochs": 1}).config_hash()
            == DistillConfig.from_params({"epochs": 1.0}).config_hash())


def test_bf16_recovery_trains_fp32_weights_and_is_recorded(sst2, tmp_path):
    spec, kind, features = sst2
    teacher = _tiny_classifier(4, seed=0)
    students = {}
    for precision in ("fp32", "bf16"):
        compressor = Distill(DistillConfig(layers=2, hidden_weight=1.0, train_precision=precision))
        result = compressor.compress(copy.deepcopy(teacher), context=_context(spec, kind, features, teacher, tmp_path))
        assert result.recovery["train_precision"] == precision and np.isfinite(result.recovery["final_loss"])
        assert all(p.dtype == torch.float32 for p in result.model.parameters())
        students[precision] = result.model.state_dict()
    fp32, bf16 = students["fp32"], students["bf16"]
    moved = [k for k, v in fp32.items() if v.is_floating_point() and not torch.equal(v, bf16[k])]
    assert moved  # bf16 forward passes give other gradients, so other weights
    for k in moved:  # ...but the same training, up to bf16 rounding
        assert torch.allclose(fp32[k], bf16[k], atol=0.05), k


def test_bf16_recovery_warns_where_the_cpu_would_emulate_it(sst2, tmp_path, monkeypatch):
    import benchsuite.distillation.recovery as recovery

    monkeypatch.setattr(recovery, "cpu_vector_flags", lambda: ["avx", "avx2", "fma"])
    spec, kind, features = sst2
    teacher = _tiny_classifier(2, seed=0)
    with pytest.warns(UserWarning, match="emulated.*drop the option"):
        Distill(DistillConfig(layers=2, train_precision="bf16")).compress(
            copy.deepcopy(teacher), context=_context(spec, kind, features, teacher, tmp_path))


def test_train_precision_is_late_in_every_recovery_config():
    from benchsuite.compressors.share.cross_layer import CrossLayerConfig

    for config in (DistillConfig, CrossLayerConfig):  # CrossLayerConfig has late options of its own
        assert "train_precision" not in config().to_json()["params"]
        assert config(train_precision="fp32").config_hash() == config().config_hash()
        bf16 = config(train_precision="bf16")
        assert bf16.to_json()["params"]["train_precision"] == "bf16" and bf16.config_hash() != config().config_hash()
        assert config.from_params(bf16.to_json()["params"]) == bf16


def test_attention_dropout_is_replaced_during_recovery_only(sst2, tmp_path):
    from benchsuite.distillation import recovery

    spec, kind, features = sst2
    teacher = _tiny_classifier(2, seed=0)
    student = copy.deepcopy(teacher)
    dropouts = [m for name, m in student.named_modules() if name.endswith("attention.self.dropout")]
    assert len(dropouts) == 2 and {m.p for m in dropouts} == {student.config.attention_probs_dropout_prob} != {0.0}
    during = []
    result = recovery.recover(student, context=_context(spec, kind, features, teacher, tmp_path),
                              options=DistillConfig(attention_dropout=0.0), desc="test",
                              after_step=lambda step, total: during.append({m.p for m in dropouts}))
    assert during and all(ps == {0.0} for ps in during)
    assert {m.p for m in dropouts} == {student.config.attention_probs_dropout_prob}  # the model's own again
    assert result["attention_dropout"] == 0.0
    with pytest.raises(ValueError, match="no BERT-style attention dropout"):
        recovery.recover(torch.nn.Sequential(torch.nn.Linear(2, 2)), context=_context(
            spec, kind, features, teacher, tmp_path), options=DistillConfig(attention_dropout=0.0), desc="test")
    with pytest.raises(ValueError, match="attention_dropout"):
        DistillConfig(attention_dropout=1.0)
    assert "attention_dropout" not in DistillConfig().to_json()["params"]


def test_keep_best_ends_recovery_at_the_best_dev_checkpoint(sst2, tmp_path):
    from benchsuite.distillation import recovery

    spec, kind, features = sst2
    teacher = _tiny_classifier(2, seed=0)
    context = _context(spec, kind, features, teacher, tmp_path)
    options = DistillConfig(keep_best=True, alpha=0.0)
    with pytest.raises(ValueError, match="holds no dev rows out"):
        recovery.recover(copy.deepcopy(teacher), context=context, options=options, desc="test")
    dev = {1: 0.4, 2: 0.8, 3: 0.6}  # the task's primary metric at each checkpoint

    def curve(model, n_features, cfg):
        return [1, 2, 3], lambda step, seen: {"dev_scores": {spec.primary_metric: dev[step]}}

    context.learning_curve = curve
    result = recovery.recover(copy.deepcopy(teacher), context=context, options=options, desc="test")
    assert result["kept_step"] == 2 and [row["step"] for row in result["curve"]] == [1, 2, 3]
    with pytest.raises(ValueError, match="acts on the model after each recovery step"):
        recovery.recover(copy.deepcopy(teacher), context=context, options=options, desc="test",
                         after_step=lambda step, total: None)
    assert "keep_best" not in DistillConfig().to_json()["params"]
    assert DistillConfig(keep_best=True).config_hash() != DistillConfig().config_hash()
