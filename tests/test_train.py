"""The fine-tuning loop's learning-curve checkpoints: rows where asked, and the same weights as without them."""

from __future__ import annotations

import pytest
import torch
from transformers import BertForSequenceClassification

from benchsuite.tasks.spec import TrainConfig
from benchsuite.testing import tiny_config
from benchsuite.train import fine_tune


def _model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config(100, num_labels=2))


def _features(n: int = 40) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        length = 4 + i % 7
        out.append({"input_ids": torch.randint(1, 100, (length,), generator=g).tolist(),
                    "attention_mask": [1] * length, "labels": i % 2})
    return out


def test_checkpoints_record_the_curve_and_leave_the_weights_unchanged() -> None:
    cfg = TrainConfig(learning_rate=1e-3, epochs=2, batch_size=8, warmup_ratio=0.1)
    plain, checked = _model(), _model()
    fine_tune(plain, _features(), cfg=cfg, seed=3, pad_token_id=0)
    modes: list[bool] = []

    def score(step: int, seen: int) -> dict:
        modes.append(checked.training)
        with torch.no_grad():
            logits = checked(input_ids=torch.tensor([[5, 6, 7]])).logits
        return {"epochs": step / 5, "logit": float(logits[0, 0])}

    stats = fine_tune(checked, _features(), cfg=cfg, seed=3, pad_token_id=0, checkpoint_steps={2, 5, 10},
                      checkpoint=score)
    assert [row["step"] for row in stats.curve] == [2, 5, 10]
    assert [row["seen"] for row in stats.curve] == [16, 40, 80]  # 40 features, batches of 8: 5 steps an epoch
    assert stats.curve[-1]["train_loss"] == stats.final_loss and modes == [False, False, False]
    assert len({row["logit"] for row in stats.curve}) == 3  # scored at three different points of training
    for (name, a), b in zip(plain.state_dict().items(), checked.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert checked.training is False  # fine_tune leaves the model in eval mode
    assert "curve" in stats.to_json() and "curve" not in fine_tune(
        _model(), _features(), cfg=cfg, seed=3, pad_token_id=0).to_json()


def test_autocast_covers_each_forward_and_loss_but_not_the_checkpoints() -> None:
    cfg = TrainConfig(learning_rate=1e-3, epochs=1, batch_size=8)
    model = _model()
    seen: dict[str, list] = {"loss": [], "checkpoint": []}

    def loss_fn(m, batch, index):
        seen["loss"].append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        assert batch["input_ids"].shape[1] == 32  # features of 4-10 tokens, padded to the autocast multiple
        out = m(**batch)
        assert out.logits.dtype == torch.bfloat16  # the matmuls ran in bf16
        return out.loss

    def score(step: int, seen_: int) -> dict:
        seen["checkpoint"].append(torch.is_autocast_enabled("cpu"))
        return {}

    fine_tune(model, _features(), cfg=cfg, seed=3, pad_token_id=0, loss_fn=loss_fn, autocast=torch.bfloat16,
              checkpoint_steps={5}, checkpoint=score)
    assert seen["loss"] == [(True, torch.bfloat16)] * 5 and seen["checkpoint"] == [False]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32
    assert not torch.is_autocast_enabled("cpu")


def test_keep_best_ends_with_the_best_checkpoints_weights() -> None:
    cfg = TrainConfig(learning_rate=1e-3, epochs=2, batch_size=8, warmup_ratio=0.1)
    model = _model()
    saved: dict[int, dict] = {}

    def score(step: int, seen: int) -> dict:
        saved[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"dev": {2: 0.5, 5: 0.9, 10: 0.7}[step]}

    stats = fine_tune(model, _features(), cfg=cfg, seed=3, pad_token_id=0, checkpoint_steps={2, 5, 10},
                      checkpoint=score, keep_best=lambda row: row["dev"])
    assert stats.kept_step == 5 and stats.to_json()["kept_step"] == 5
    assert not all(torch.equal(a, b) for a, b in zip(saved[5].values(), saved[10].values(), strict=True))
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[5][name]), name
    assert model.training is False

    plain, tied = _model(), _model()  # on a tie the later checkpoint is kept: here the last step, as without it
    fine_tune(plain, _features(), cfg=cfg, seed=3, pad_token_id=0)
    stats = fine_tune(tied, _features(), cfg=cfg, seed=3, pad_token_id=0, checkpoint_steps={2, 10},
                      checkpoint=lambda step, seen: {}, keep_best=lambda row: 0.0)
    assert stats.kept_step == 10
    for (name, a), b in zip(plain.state_dict().items(), tied.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert "kept_step" not in fine_tune(_model(), _features(), cfg=cfg, seed=3, pad_token_id=0).to_json()
    with pytest.raises(ValueError, match="keep_best chooses among checkpoints"):
        fine_tune(_model(), _features(), cfg=cfg, seed=3, pad_token_id=0, keep_best=lambda row: 0.0)
