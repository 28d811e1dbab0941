"""Importance of attention heads and feed-forward neurons (Michel et al. 2019, "Are Sixteen Heads
Really Better than One?"), and a global ranking that keeps every layer alive.

Every head's context vectors (before ``attention.output.dense``) and every neuron's activation
(after ``intermediate``) are multiplied by a gate of ones, which leaves the forward unchanged.
The gradient of the task loss with respect to a gate is the first-order estimate of what removing
that unit changes; its absolute value is summed over batches of labelled training features, and
each layer's scores are divided by their L2 norm (Michel et al.'s normalisation), so that one
global ranking can compare units of different layers. Scores are computed once, on the unpruned
model (Michel et al. also iterate: prune a little, rescore); the model is in eval mode (no dropout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from benchsuite.compressors.layers import encoder_layers
from benchsuite.compressors.prune.surgery import check_layer, head_count, neuron_count
from benchsuite.engine import collate, length_sorted_batches


@dataclass(frozen=True)
class Importance:
    heads: list[torch.Tensor]  # one (heads,) tensor per layer, L2-normalised within the layer
    neurons: list[torch.Tensor]  # one (intermediate,) tensor per layer, L2-normalised within the layer
    examples: int


def importance(model: torch.nn.Module, features: Sequence[dict], *, pad_token_id: int,
               batch_size: int = 32) -> Importance:
    """Score every head and feed-forward neuron of ``model``'s encoder on ``features`` (with labels)."""
    if not features:
        raise ValueError("importance needs at least one labelled training feature; got none")
    layers = encoder_layers(model)
    for index, layer in enumerate(layers):
        check_layer(layer, index)
    head_gates = [torch.ones(head_count(layer), requires_grad=True) for layer in layers]
    neuron_gates = [torch.ones(neuron_count(layer), requires_grad=True) for layer in layers]
    head_sums = [torch.zeros(g.shape) for g in head_gates]
    neuron_sums = [torch.zeros(g.shape) for g in neuron_gates]
    handles = []
    training = model.training
    try:
        for layer, head_gate, neuron_gate in zip(layers, head_gates, neuron_gates, strict=True):
            handles.append(layer.attention.self.register_forward_hook(_gate_heads(head_gate)))
            handles.append(layer.intermediate.register_forward_hook(_gate_neurons(neuron_gate)))
        model.eval()
        for index in length_sorted_batches([len(f["input_ids"]) for f in features], batch_size):
            loss = model(**collate([features[i] for i in index], pad_token_id)).loss
            if loss is None:
                raise ValueError("importance needs features with labels (the task loss); these have none")
            grads = torch.autograd.grad(loss, head_gates + neuron_gates)
            for total, grad in zip(head_sums + neuron_sums, grads, strict=True):
                total += grad.abs()
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    return Importance(heads=[_normalise(s) for s in head_sums], neurons=[_normalise(s) for s in neuron_sums],
                      examples=len(features))


def _gate_heads(gate: torch.Tensor):
    def hook(module, args, output):
        context, *rest = output  # context: (batch, width, heads * head_size)
        shape = context.shape
        gated = (context.view(*shape[:-1], gate.numel(), -1) * gate[:, None].to(context.dtype)).view(shape)
        return (gated, *rest)

    return hook


def _gate_neurons(gate: torch.Tensor):
    def hook(module, args, output):  # output: (batch, width, intermediate), after the activation
        return output * gate.to(output.dtype)

    return hook


def _normalise(scores: torch.Tensor) -> torch.Tensor:
    norm = scores.norm()
    return scores / norm if norm > 0 else scores


def keep_after_removing(scores: Sequence[torch.Tensor], count: int, *, field: str) -> list[list[int]]:
    """Kept indices per layer after removing the ``count`` lowest-scoring units across all layers.

    Ties go by (layer, index). A unit is skipped when it is the last of its layer, so every layer
    keeps at least one; ``field`` names the option in the error when ``count`` cannot be met.
    """
    sizes = [len(s) for s in scores]
    removable = sum(sizes) - len(sizes)
    if count > removable:
        raise ValueError(f"{field} asks to remove {count} of {sum(sizes)} units, but each of the {len(sizes)} "
                         f"layers keeps at least one: at most {removable} can go "
                         f"({field} <= {removable / sum(sizes):.4f})")
    ranked = sorted((float(score), layer, unit) for layer, layer_scores in enumerate(scores)
                    for unit, score in enumerate(layer_scores))
    removed: list[set[int]] = [set() for _ in sizes]
    left = list(sizes)
    done = 0
    for _, layer, unit in ranked:
        if done == count:
            break
        if left[layer] > 1:
            removed[layer].add(unit)
            left[layer] -= 1
            done += 1
    return [[u for u in range(size) if u not in gone] for size, gone in zip(sizes, removed, strict=True)]
