"""The pruning family on tiny random models: exact sparsity, the cubic schedule, head and neuron
surgery against masking, Michel importance, and the rebuilt model's round trip."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

from benchsuite.compressors.base import CompressionContext
from benchsuite.compressors.prune.importance import importance, keep_after_removing
from benchsuite.compressors.prune.magnitude import Magnitude, MagnitudeConfig
from benchsuite.compressors.prune.structured import FfnConfig, FfnPrune, HeadPrune, HeadsConfig, StructuredConfig
from benchsuite.compressors.prune.surgery import keep_heads, keep_neurons
from benchsuite.engine import collate
from benchsuite.tasks.spec import TrainConfig
from benchsuite.testing import tiny_config

VOCAB = 100
HEAD = 8  # head size of the 4-head, 32-wide tiny model


def bert(seed: int = 0, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config(VOCAB, num_attention_heads=4, **overrides)).eval()


def features(count: int = 32, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        width = int(rng.integers(4, 12))
        rows.append({"input_ids": rng.integers(1, VOCAB, width).tolist(), "attention_mask": [1] * width,
                     "token_type_ids": [0] * width, "labels": int(rng.integers(0, 2))})
    return rows


def context(cls, *, epochs: float = 1.0, pretrained=None) -> CompressionContext:
    """Hard labels only (alpha=0 in the configs below), so no teacher outputs are needed."""
    return CompressionContext(needs=cls.NEEDS, task=None, tokenizer=SimpleNamespace(pad_token_id=0), seed=0,
                              providers={"train_data": features(), "pretrained": pretrained},
                              train_config=TrainConfig(epochs=epochs, batch_size=8, learning_rate=1e-3))


def batch() -> dict[str, torch.Tensor]:
    rows = features(6, seed=1)
    return {k: v for k, v in collate(rows, 0).items() if k != "labels"}  # padded: masks matter


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch()).logits


def encoder_linear_weights(model) -> list[torch.Tensor]:
    return [m.weight for m in model.bert.encoder.modules() if isinstance(m, torch.nn.Linear)]


# --- magnitude ------------------------------------------------------------------------------------


def test_oneshot_prunes_globally_to_the_exact_sparsity_and_recovery_keeps_the_mask():
    model = bert()
    loud = model.bert.encoder.layer[0].output.dense.weight
    with torch.no_grad():
        loud *= 10  # a global ranking spares this tensor; a per-tensor one would not
    original = torch.cat([w.detach().flatten() for w in encoder_linear_weights(model)])
    flat = original.abs()
    pruned = round(0.8 * flat.numel())
    expected_kept = torch.zeros_like(flat, dtype=torch.bool)
    expected_kept[flat.topk(flat.numel() - pruned).indices] = True
    head, pooler = model.classifier.weight.detach().clone(), model.bert.pooler.dense.weight.detach().clone()

    compressor = Magnitude(MagnitudeConfig(sparsity=0.8, alpha=0.0))
    result = compressor.compress(model, context=context(Magnitude, epochs=2))
    model = result.model

    after = torch.cat([w.detach().flatten() for w in encoder_linear_weights(model)])
    assert torch.equal(after != 0, expected_kept)  # exactly the largest weights, still after AdamW's steps
    assert result.recovery["steps"] == 8
    assert not torch.equal(after[expected_kept], original[expected_kept])  # recovery did train the kept weights
    assert float((loud == 0).float().mean()) < 0.2
    assert not torch.equal(model.classifier.weight, head) and (model.classifier.weight != 0).all()
    assert (model.bert.pooler.dense.weight != 0).all() and not torch.equal(model.bert.pooler.dense.weight, pooler)
    layout = result.layout
    assert layout["sets"]["encoder_linear"]["pruned"] == layout["pruned_weights"] == pruned
    assert layout["sparsity"] == round(pruned / flat.numel(), 6) and "word_embeddings" not in layout["sets"]
    assert layout["sparse_storage"] is True and layout["sparse_kernel"] is False
    assert "bitmask + nonzero values" in Magnitude(MagnitudeConfig()).save_format


def test_gradual_schedule_follows_the_cubic_formula():
    model = bert()
    size = sum(w.numel() for w in encoder_linear_weights(model))
    compressor = Magnitude(MagnitudeConfig(sparsity=0.6, schedule="gradual", ramp=0.5, prune_every=1, alpha=0.0))
    result = compressor.compress(model, context=context(Magnitude, epochs=2))  # 8 steps, ramp over 4
    model = result.model
    expected = [0.6 * (1 - (1 - t / 4) ** 3) for t in (1, 2, 3, 4)]
    steps = result.layout["steps"]
    assert [s[0] for s in steps] == [1, 2, 3, 4]
    assert [s[1] for s in steps] == pytest.approx(expected, abs=1e-6)
    assert [s[2] for s in steps] == pytest.approx([round(e * size) / size for e in expected], abs=1e-6)
    zeros = sum(int((w == 0).sum()) for w in encoder_linear_weights(model))
    assert zeros == round(0.6 * size)  # held at the target through steps 5..8


def test_gradual_updates_every_prune_every_steps_and_at_the_end_of_the_ramp():
    compressor = Magnitude(MagnitudeConfig(sparsity=0.5, schedule="gradual", ramp=0.75, prune_every=4, alpha=0.0))
    result = compressor.compress(bert(), context=context(Magnitude, epochs=2))  # ramp: round(0.75 * 8) = 6 steps
    assert [s[0] for s in result.layout["steps"]] == [4, 6]
    assert result.layout["steps"][-1][1] == 0.5


def test_gradual_without_recovery_is_refused():
    with pytest.raises(ValueError, match="epochs"):
        MagnitudeConfig(schedule="gradual", epochs=0)


@pytest.mark.parametrize("embeddings", [True, False])
def test_embeddings_flag_prunes_the_word_embeddings_on_their_own(embeddings):
    model = bert()
    table = model.bert.embeddings.word_embeddings.weight
    before = table.detach().clone()
    compressor = Magnitude(MagnitudeConfig(sparsity=0.7, embeddings=embeddings, epochs=0))
    result = compressor.compress(model, context=context(Magnitude))
    if embeddings:
        assert int((table == 0).sum()) == round(0.7 * table.numel())
        assert result.layout["sets"]["word_embeddings"]["sparsity"] == pytest.approx(0.7, abs=1e-3)
    else:
        assert torch.equal(table, before) and set(result.layout["sets"]) == {"encoder_linear"}
    assert (model.bert.embeddings.position_embeddings.weight != 0).all()


# --- structured: surgery, importance, the compressors ----------------------------------------------


def test_removing_heads_and_neurons_computes_what_masking_them_computes():
    model = bert()
    heads_kept, neurons_kept = [[1, 3], [0, 1, 2]], [list(range(0, 64, 3)), list(range(40))]
    masked = copy.deepcopy(model)
    for layer, heads, neurons in zip(masked.bert.encoder.layer, heads_kept, neurons_kept, strict=True):
        with torch.no_grad():
            for h in set(range(4)) - set(heads):
                layer.attention.output.dense.weight[:, h * HEAD:(h + 1) * HEAD] = 0
            layer.output.dense.weight[:, sorted(set(range(64)) - set(neurons))] = 0
    for layer, heads, neurons in zip(model.bert.encoder.layer, heads_kept, neurons_kept, strict=True):
        keep_heads(layer, heads)
        keep_neurons(layer, neurons)
    assert not torch.allclose(logits(masked), logits(bert()), atol=1e-4)  # the masks do change the output
    assert torch.allclose(logits(model), logits(masked), atol=1e-6)
    first, second = model.bert.encoder.layer
    assert first.attention.self.query.weight.shape == (2 * HEAD, 32) and first.attention.self.value.bias.shape == (16,)
    assert second.attention.output.dense.weight.shape == (32, 3 * HEAD)
    assert first.intermediate.dense.weight.shape == (22, 32) and second.output.dense.weight.shape == (32, 40)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in masked.parameters())


def make_useless(model, *, layer: int, heads: list[int] = (), neuron: int | None = None) -> None:
    """Zero the value projection of ``heads`` and the outgoing weights of ``neuron``: they contribute nothing."""
    block = model.bert.encoder.layer[layer]
    with torch.no_grad():
        for h in heads:
            block.attention.self.value.weight[h * HEAD:(h + 1) * HEAD] = 0
            block.attention.self.value.bias[h * HEAD:(h + 1) * HEAD] = 0
        if neuron is not None:
            block.output.dense.weight[:, neuron] = 0


def test_importance_ranks_a_useless_head_and_neuron_last():
    model = bert()
    make_useless(model, layer=1, heads=[2])
    make_useless(model, layer=0, neuron=5)
    scores = importance(model, features(), pad_token_id=0)
    heads, neurons = torch.stack(scores.heads), torch.stack(scores.neurons)
    assert heads[1, 2] == 0 and heads.flatten().argmin() == 6
    assert (heads.flatten() > 0).sum() == 7 and neurons[0, 5] == 0 and (neurons > 0).sum() == 127
    assert torch.allclose(heads.norm(dim=1), torch.ones(2))  # Michel's per-layer L2 normalisation
    assert keep_after_removing(scores.heads, 1, field="heads") == [[0, 1, 2, 3], [0, 1, 3]]


def test_every_layer_keeps_a_unit_and_too_much_pruning_is_refused():
    scores = [torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0])]
    assert keep_after_removing(scores, 2, field="heads") == [[1], [1]]
    with pytest.raises(ValueError, match=r"heads asks to remove 3 of 4.*at most 2"):
        keep_after_removing(scores, 3, field="heads")


def test_structured_pruning_recovers_shrinks_and_round_trips(tmp_path):
    model = bert()
    make_useless(model, layer=0, heads=[1, 2, 3])  # so that layers end with different head counts
    params = sum(p.numel() for p in model.parameters())
    compressor = HeadPrune(HeadsConfig(heads=3 / 8, ffn=0.25, alpha=0.0, importance_examples=32))
    result = compressor.compress(model, context=context(HeadPrune))
    model, layout = result.model, result.layout
    assert layout["heads_kept"] == [[0], [0, 1, 2, 3]] and layout["heads_removed"] == 3
    assert sum(layout["ffn_kept"]) == 96 and layout["ffn_removed"] == 32 and result.recovery["steps"] == 4
    first, second = model.bert.encoder.layer
    assert first.attention.self.key.weight.shape == (HEAD, 32) and second.attention.self.key.weight.shape == (32, 32)
    assert [layer.intermediate.dense.out_features for layer in (first, second)] == layout["ffn_kept"]
    assert sum(p.numel() for p in model.parameters()) < params
    compressor.save(result, tmp_path / "saved")
    loaded = HeadPrune.load(tmp_path / "saved")
    assert torch.equal(logits(loaded), logits(model))
    assert loaded.bert.encoder.layer[0].attention.self.num_attention_heads == 1


def test_importance_is_scored_on_exactly_the_examples_asked_for():
    with pytest.raises(ValueError, match="importance_examples=33 asks for 33 labelled training features, but .* 32"):
        FfnPrune(FfnConfig(epochs=0, importance_examples=33)).compress(bert(), context=context(FfnPrune))


def test_ffn_defaults_prune_half_the_neurons_and_no_heads():
    compressor = FfnPrune(FfnConfig(epochs=0, importance_examples=32))
    result = compressor.compress(bert(), context=context(FfnPrune))
    model = result.model
    assert result.layout["ffn_removed"] == 64 and result.layout["heads_removed"] == 0
    assert all(layer.attention.self.num_attention_heads == 4 for layer in model.bert.encoder.layer)
    assert (HeadsConfig().heads, HeadsConfig().ffn, FfnConfig().heads) == (0.5, 0.0, 0.0)


@pytest.mark.parametrize(("config", "options", "field"), [
    (MagnitudeConfig, {"sparsity": 1.0}, "sparsity"),
    (MagnitudeConfig, {"sparsity": 0.0}, "sparsity"),
    (MagnitudeConfig, {"schedule": "cubic"}, "schedule"),
    (MagnitudeConfig, {"ramp": 0.0}, "ramp"),
    (MagnitudeConfig, {"prune_every": 0}, "prune_every"),
    (HeadsConfig, {"heads": 1.0}, "heads"),
    (FfnConfig, {"ffn": -0.1}, "ffn"),
    (HeadsConfig, {"importance_examples": 0}, "importance_examples"),
    (HeadsConfig, {"attention_weight": 1.0}, "attention_weight"),
    (StructuredConfig, {}, "nothing to prune"),
])
def test_bad_options_name_the_field(config, options, field):
    with pytest.raises(ValueError, match=field):
        config.from_params(options)


# --- movement pruning -----------------------------------------------------------------------------


def test_movement_scores_accumulate_minus_gradient_times_weight_also_where_pruned():
    from benchsuite.compressors.prune.movement import MovementMask

    linear = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
    mask = MovementMask(torch.zeros(2, 2))
    mask.mask.copy_(torch.tensor([[True, False], [True, True]]))
    torch.nn.utils.parametrize.register_parametrization(linear, "weight", mask)
    upstream = torch.tensor([[0.5, 1.0], [-1.0, 2.0]])  # dL/dW' for L = sum(W' * upstream)
    (linear.weight * upstream).sum().backward()
    dense = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    assert torch.equal(mask.score, -upstream * dense)  # the pruned weight's score moved too (+2.0)
    original = linear.parametrizations.weight.original
    assert torch.equal(original.grad, upstream * mask.mask)  # a pruned weight gets no gradient
    assert torch.equal(linear.weight.detach(), dense * mask.mask)


def test_top_scores_keeps_exactly_the_highest_across_tensors():
    from benchsuite.compressors.prune.movement import top_scores

    a, b = torch.tensor([[3.0, -1.0], [0.0, 5.0]]), torch.tensor([2.0, 2.0, -4.0])
    kept = top_scores([a, b], 4)  # 5, 3, 2, 2 (the tie is kept whole here)
    assert kept[0].tolist() == [[True, False], [False, True]] and kept[1].tolist() == [True, True, False]
    kept = top_scores([a, b], 3)  # a tie at the cut: the earlier position wins
    assert kept[1].tolist() == [True, False, False]


def test_movement_pruning_reaches_its_sparsity_by_movement_not_magnitude():
    from benchsuite.compressors.prune.movement import Movement, MovementConfig

    model = bert()
    before = [w.detach().clone() for w in encoder_linear_weights(model)]
    head = model.classifier.weight.detach().clone()
    result = Movement(MovementConfig(sparsity=0.8, alpha=0.0, prune_every=2)).compress(
        model, context=context(Movement, epochs=4))
    model = result.model
    assert not torch.nn.utils.parametrize.is_parametrized(model)  # folded back into plain Linears
    weights = encoder_linear_weights(model)
    flat = torch.cat([w.detach().flatten() for w in weights])
    size = flat.numel()
    assert int((flat == 0).sum()) == round(0.8 * size)
    layout = result.layout
    assert layout["sparsity"] == round(round(0.8 * size) / size, 6) and layout["importance"] == "movement"
    assert layout["sparse_storage"] is True and layout["sparse_kernel"] is False
    # the cubic ramp, every 2 steps over round(0.7 * 16) = 11 steps, then fixed
    assert [s[0] for s in layout["steps"]] == [2, 4, 6, 8, 10, 11] and layout["steps"][-1][1] == 0.8
    assert all(s[2] == pytest.approx(s[1], abs=1e-4) for s in layout["steps"])
    # the kept weights are not the largest ones at the start: movement, not magnitude, chose them
    start = torch.cat([w.flatten() for w in before]).abs()
    by_magnitude = torch.zeros(size, dtype=torch.bool)
    by_magnitude[start.topk(size - round(0.8 * size)).indices] = True
    overlap = float(((flat != 0) & by_magnitude).sum()) / float(by_magnitude.sum())
    assert overlap < 0.6  # 0.32 here; a random choice would give 0.2, magnitude itself 1.0
    assert sum(s[3] for s in layout["steps"]) > 0  # pruned weights whose scores rose came back
    assert not torch.equal(model.classifier.weight, head) and (model.classifier.weight != 0).all()


def test_a_warm_up_delays_the_first_mask_update_and_the_ramp_runs_from_its_end():
    from benchsuite.compressors.prune.magnitude import scheduled_sparsity

    # 20 steps: nothing up to step round(0.2 * 20) = 4, then the cubic over the 10 steps to round(0.7 * 20) = 14
    targets = {t: scheduled_sparsity(t, 20, final=0.9, ramp=0.7, prune_every=2, warmup=0.2) for t in range(1, 21)}
    assert [t for t, s in targets.items() if s is not None] == [6, 8, 10, 12, 14]
    assert targets[6] == pytest.approx(0.9 * (1 - (1 - 2 / 10) ** 3)) and targets[14] == pytest.approx(0.9)
    # no warm-up: the schedule it always had
    assert [t for t in range(1, 21) if scheduled_sparsity(t, 20, final=0.9, ramp=0.7, prune_every=2)
            is not None] == [2, 4, 6, 8, 10, 12, 14]


def test_movement_ranked_per_matrix_prunes_each_matrix_to_the_sparsity():
    from benchsuite.compressors.prune.movement import Movement, MovementConfig, kept_masks

    a, b = torch.tensor([[3.0, -1.0], [0.0, 5.0]]), torch.tensor([9.0, 8.0, 7.0, 6.0])
    assert [int(m.sum()) for m in kept_masks([a, b], 0.5, "global")] == [0, 4]  # b's scores are all higher
    assert [m.tolist() for m in kept_masks([a, b], 0.5, "matrix")] == [[[True, False], [False, True]],
                                                                      [True, True, False, False]]
    result = Movement(MovementConfig(sparsity=0.8, alpha=0.0, prune_every=2, ranking="matrix", warmup=0.25)).compress(
        bert(), context=context(Movement, epochs=4))
    for weight in encoder_linear_weights(result.model):
        assert int((weight == 0).sum()) == round(0.8 * weight.numel())
    assert result.layout["ranking"] == "matrix" and result.layout["steps"][0][0] == 6  # after round(0.25 * 16) = 4


def test_movement_refuses_a_warm_up_that_leaves_no_ramp_and_an_unknown_ranking():
    from benchsuite.compressors.prune.movement import MovementConfig

    with pytest.raises(ValueError, match="warmup must be in"):
        MovementConfig(warmup=0.7)
    with pytest.raises(ValueError, match="ranking must be one of global, matrix"):
        MovementConfig(ranking="layer")


def test_movement_needs_recovery_training():
    from benchsuite.compressors.prune.movement import MovementConfig

    with pytest.raises(ValueError, match="epochs=0 turns off"):
        MovementConfig(epochs=0).validate()


@pytest.mark.parametrize("name", ["magnitude", "movement"])
def test_start_pretrained_prunes_the_pretrained_model_not_the_fine_tuned_one(name):
    from benchsuite.compressors.prune.magnitude import Magnitude, MagnitudeConfig
    from benchsuite.compressors.prune.movement import Movement, MovementConfig

    cls, config = {"magnitude": (Magnitude, MagnitudeConfig), "movement": (Movement, MovementConfig)}[name]
    pretrained = bert(seed=7)  # another model than the "fine-tuned" one below, head included
    tiny_steps = {"alpha": 0.0, "learning_rate": 1e-12, "sparsity": 0.5}  # the weights barely move from the start
    for start, source in (("pretrained", pretrained), ("finetuned", bert(seed=0))):
        result = cls(config(start=start, **tiny_steps)).compress(
            bert(seed=0), context=context(cls, pretrained=lambda: copy.deepcopy(pretrained)))
        for pruned, original in zip(encoder_linear_weights(result.model), encoder_linear_weights(source), strict=True):
            kept = pruned != 0
            assert 0.3 < float(kept.float().mean()) < 0.7
            assert torch.allclose(pruned[kept], original[kept], atol=1e-6)
        assert torch.allclose(result.model.classifier.weight, source.classifier.weight, atol=1e-6)
    with pytest.raises(ValueError, match="start must be one of finetuned, pretrained"):
        config(start="scratch")
    with pytest.raises(ValueError, match="start=pretrained learns the task"):
        config(start="pretrained", epochs=0, schedule="oneshot") if name == "magnitude" else config(
            start="pretrained", epochs=0)
