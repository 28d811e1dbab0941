"""soft_movement: the threshold schedule, the scores' Adam and penalty, the floor, and sparsity that follows lambda."""

from __future__ import annotations

import copy

import pytest
import torch

from benchsuite.compressors.prune.soft_movement import (
    MIN_KEPT,
    ScoreAdam,
    SoftMovement,
    SoftMovementConfig,
    floored_top,
    penalty_gradients,
    scheduled_masks,
    soft_masks,
    threshold_at,
)


def test_the_threshold_rises_cubically_to_its_final_value_and_stays():
    assert threshold_at(0, 100, final=0.1, ramp=0.5) == 0
    assert threshold_at(25, 100, final=0.1, ramp=0.5) == pytest.approx(0.1 * (1 - 0.5**3))
    assert threshold_at(50, 100, final=0.1, ramp=0.5) == pytest.approx(0.1)
    assert threshold_at(100, 100, final=0.1, ramp=0.5) == pytest.approx(0.1)


def test_score_adam_steps_as_torch_adam_does():
    torch.manual_seed(0)
    start = [torch.randn(4, 3), torch.randn(5)]
    grads = [[torch.randn_like(s) for s in start] for _ in range(3)]
    mine = [s.clone() for s in start]
    adam = ScoreAdam(mine, lr=0.05)
    ref = [torch.nn.Parameter(s.clone()) for s in start]
    torch_adam = torch.optim.Adam(ref, lr=0.05)
    for step in grads:
        adam.step(step)
        for p, g in zip(ref, step, strict=True):
            p.grad = g.clone()
        torch_adam.step()
    for a, b in zip(mine, ref, strict=True):
        assert torch.allclose(a, b.detach(), atol=1e-6)


def test_the_penalty_gradient_is_that_of_the_mean_kept_fraction():
    torch.manual_seed(0)
    scores = [torch.randn(6, 4, requires_grad=True), torch.randn(10, requires_grad=True)]
    (7.0 * sum(torch.sigmoid(s).mean() for s in scores) / len(scores)).backward()
    for mine, s in zip(penalty_gradients([s.detach() for s in scores], 7.0), scores, strict=True):
        assert torch.allclose(mine, s.grad, atol=1e-7)


def test_masks_keep_scores_above_the_threshold_and_never_less_than_the_floor():
    scores = [torch.tensor([[3.0, -3.0], [0.0, -1.0]]), torch.full((1000,), -9.0)]
    scores[1][7] = -8.0
    first, second = soft_masks(scores, 0.3)  # sigmoid > 0.3 <=> score > -0.847
    assert first.tolist() == [[True, False], [True, False]]
    assert int(second.sum()) == int(MIN_KEPT * 1000) + 1 and bool(second[7])


def test_floored_top_keeps_exactly_k_and_every_tensor_its_floor():
    scores = [torch.arange(1000, dtype=torch.float32), -torch.arange(400, dtype=torch.float32) - 5000]
    big, small = floored_top(scores, 100)
    assert int(big.sum()) + int(small.sum()) == 100
    assert int(small.sum()) == int(MIN_KEPT * 400) + 1 and bool(small[0]) and bool(small[2])  # its best, though low
    assert bool(big[999]) and not bool(big[900])  # the rest by rank across tensors
    assert sum(int(m.sum()) for m in floored_top(scores, 0)) == int(MIN_KEPT * 1000) + 1 + int(MIN_KEPT * 400) + 1


@pytest.mark.parametrize("keep", [0, 7, 500, 1900, 2299, 2300])
def test_floored_top_agrees_with_a_full_sort_ties_included(keep):
    def top_scores(ranked, count):  # the reference: a full stable sort, ties by position
        flat = torch.cat([r.flatten() for r in ranked])
        kept = torch.zeros_like(flat, dtype=torch.bool)
        kept[torch.argsort(flat, descending=True, stable=True)[:count]] = True
        return [k.view_as(r) for k, r in zip(kept.split([r.numel() for r in ranked]), ranked, strict=True)]

    torch.manual_seed(1)
    scores = [torch.randn(40, 50).round(decimals=1), torch.randn(300) - 5]  # many ties; a tensor of low scores
    reference = []
    for score in scores:
        score = score.clone()
        score.view(-1)[torch.topk(score.flatten(), int(MIN_KEPT * score.numel()) + 1).indices] = float("inf")
        reference.append(score)
    expected = top_scores(reference, max(keep, 2 * 1 + int(MIN_KEPT * 2000) + int(MIN_KEPT * 300)))
    for mine, theirs, score in zip(floored_top(scores, keep), expected, scores, strict=True):
        # the same scores kept (torch.topk, which the reference takes the floors by, breaks ties its own way)
        assert torch.equal(score[mine].sort().values, score[theirs].sort().values)
        if keep >= 500:  # floors not binding: the same positions, ties broken by position in both
            assert torch.equal(mine, theirs)


def test_the_schedule_cuts_masks_that_keep_too_much_and_lands_exactly_at_its_end():
    torch.manual_seed(0)
    scores = [torch.randn(40, 50), torch.randn(300)]
    size = 2300

    def kept(masks):
        return sum(int(m.sum()) for m in masks)

    cut = scheduled_masks(scores, 0.0, step=5, ramp_steps=10, sparsity=0.8)  # tau 0: the threshold keeps all
    assert kept(cut) == size - round(0.8 * (1 - 0.5**3) * size)  # the cubic curve, halfway up the ramp
    sparse = soft_masks(scores, 0.45)  # sigmoid(s) > 0.45 keeps about 46%: sparser than the schedule at step 2
    left = scheduled_masks(scores, 0.45, step=2, ramp_steps=10, sparsity=0.3)
    assert all(torch.equal(a, b) for a, b in zip(left, sparse, strict=True))
    for step in (10, 12):  # at the ramp's end and after it: exactly the target, the best scores back if need be
        exact = scheduled_masks(scores, 0.45, step=step, ramp_steps=10, sparsity=0.3)
        assert kept(exact) == size - round(0.3 * size)
        assert all(bool((e | ~s).all()) for e, s in zip(exact, sparse, strict=True))  # a superset of the sparse masks


@pytest.mark.parametrize("bad", [{"threshold": 0.0}, {"threshold": 1.0}, {"regularization": -1.0},
                                 {"score_learning_rate": 0.0}, {"ramp": 0.0}, {"epochs": 0.0},
                                 {"sparsity": 0.0}, {"sparsity": 0.999}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SoftMovementConfig(**bad)


def test_more_regularization_prunes_more_and_the_layout_counts_the_zeros(tiny_model, data_env, tmp_path):
    from tests.conformance_checks import make_setup

    setup = make_setup(tiny_model, "classification", "sst2", tmp_path / "cache")
    reached = {}
    for regularization in (0.0, 1e6):
        compressor = SoftMovement(SoftMovementConfig(regularization=regularization, score_learning_rate=0.5))
        torch.manual_seed(0)
        result = compressor.compress(copy.deepcopy(setup.model), context=setup.context(compressor.NEEDS))
        linears = [m for m in result.model.bert.encoder.modules() if isinstance(m, torch.nn.Linear)]
        zeros = sum(int((m.weight == 0).sum()) for m in linears)
        assert result.layout["pruned_weights"] == zeros
        assert result.layout["steps"][-1][3] == pytest.approx(result.layout["sparsity"], abs=1e-6)
        assert all(not torch.nn.utils.parametrize.is_parametrized(m) for m in linears)
        reached[regularization] = result.layout["sparsity"]
    assert reached[1e6] > 0.9 and reached[1e6] > reached[0.0] + 0.3, reached


@pytest.mark.parametrize("regularization", [0.0, 1e6])
def test_a_target_sparsity_is_reached_exactly_whatever_lambda_would_leave(tiny_model, data_env, tmp_path,
                                                                          regularization):
    from tests.conformance_checks import make_setup

    setup = make_setup(tiny_model, "classification", "sst2", tmp_path / "cache")
    compressor = SoftMovement(SoftMovementConfig(regularization=regularization, score_learning_rate=0.5,
                                                 sparsity=0.6))
    torch.manual_seed(0)
    result = compressor.compress(copy.deepcopy(setup.model), context=setup.context(compressor.NEEDS))
    linears = [m for m in result.model.bert.encoder.modules() if isinstance(m, torch.nn.Linear)]
    size = sum(m.weight.numel() for m in linears)
    assert sum(int((m.weight == 0).sum()) for m in linears) == round(0.6 * size)
    assert result.layout["target_sparsity"] == 0.6 and result.layout["steps"][-1][3] == result.layout["sparsity"]


def test_sparsity_leaves_the_hash_of_configs_without_it_unchanged():
    # the hash committed records of mrpc's soft_movement:hidden_weight=1,epochs=8 stage carry
    assert SoftMovementConfig(hidden_weight=1.0, epochs=8.0).config_hash() == "67cca62296b6"
    assert "sparsity" not in SoftMovementConfig().to_json()["params"]
    assert SoftMovementConfig(hidden_weight=1.0, epochs=8.0, sparsity=0.9).config_hash() != "67cca62296b6"
