"""``heads`` and ``ffn``: structured pruning of attention heads and feed-forward neurons.

One implementation, registered twice with different defaults: ``heads`` removes half the
attention heads (``heads=0.5, ffn=0.0``), ``ffn`` half the feed-forward neurons
(``heads=0.0, ffn=0.5``); ``heads:ffn=0.5`` does both. Steps:

1. Score every head and neuron on ``importance_examples`` labelled training features (a seeded
   sample) by Michel et al.'s gate gradients, normalised per layer (:mod:`.importance`).
2. Remove ``round(heads * all heads)`` heads and ``round(ffn * all neurons)`` neurons, each by one
   global ranking over all layers (so layers may lose different numbers), every layer keeping at
   least one head and one neuron.
3. Cut them out of the weights (:mod:`.surgery`): the matmuls, the file and the memory shrink.
4. Recovery fine-tuning with the distillation loss (:func:`benchsuite.distillation.recovery.recover`;
   depth is unchanged, so hidden states match layer for layer). Attention matching
   (``attention_weight > 0``) compares per-head attention maps and is refused when heads are removed.

The layout records the kept head indices and the kept neuron count of each layer: ``restructure``
rebuilds those shapes on a fresh skeleton and the saved state dict fills them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchsuite.compressors.base import take_exactly
from benchsuite.compressors.layers import encoder_layers
from benchsuite.compressors.prune.importance import importance, keep_after_removing
from benchsuite.compressors.prune.surgery import check_layer, head_count, keep_heads, keep_neurons, neuron_count
from benchsuite.compressors.retrain import ReshapeAndRecover
from benchsuite.distillation.recovery import RecoveryConfig

IMPORTANCE_BATCH = 32


@dataclass(frozen=True)
class StructuredConfig(RecoveryConfig):
    heads: float = 0.0  # fraction of all attention heads removed (one global ranking; each layer keeps >= 1)
    ffn: float = 0.0  # fraction of all feed-forward neurons removed (one global ranking; each layer keeps >= 1)
    importance_examples: int = 256  # labelled training features the importance is scored on

    def validate(self) -> None:
        super().validate()
        for name in ("heads", "ffn"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be a fraction in [0, 1), got {getattr(self, name)}")
        if self.heads == 0 and self.ffn == 0:
            raise ValueError("heads and ffn are both 0: nothing to prune; set heads or ffn in (0, 1)")
        if self.importance_examples < 1:
            raise ValueError(f"importance_examples must be >= 1, got {self.importance_examples}")
        if self.heads > 0 and self.attention_weight > 0:
            raise ValueError(f"attention_weight={self.attention_weight} matches the teacher's attention maps head "
                             f"for head, but heads={self.heads} removes heads: set attention_weight=0")


@dataclass(frozen=True)
class HeadsConfig(StructuredConfig):
    heads: float = 0.5


@dataclass(frozen=True)
class FfnConfig(StructuredConfig):
    ffn: float = 0.5


class StructuredPrune(ReshapeAndRecover):
    """Removes heads and feed-forward neurons; subclasses choose the name and the defaults."""
    family = "pruning"

    config_class = StructuredConfig

    def reshape(self, model: torch.nn.Module, *, context) -> dict:
        layers = encoder_layers(model)
        for index, layer in enumerate(layers):
            check_layer(layer, index)
        heads_before = [head_count(layer) for layer in layers]
        neurons_before = [neuron_count(layer) for layer in layers]
        scores = importance(model, _sample(context.train_data, self.config.importance_examples, context.seed),
                            pad_token_id=context.tokenizer.pad_token_id, batch_size=IMPORTANCE_BATCH)
        heads_kept = keep_after_removing(scores.heads, round(self.config.heads * sum(heads_before)), field="heads")
        neurons_kept = keep_after_removing(scores.neurons, round(self.config.ffn * sum(neurons_before)), field="ffn")
        for layer, heads, neurons in zip(layers, heads_kept, neurons_kept, strict=True):
            keep_heads(layer, heads)
            keep_neurons(layer, neurons)
        return {
            "heads_kept": heads_kept,
            "ffn_kept": [len(n) for n in neurons_kept],
            "heads_before": heads_before,
            "ffn_before": neurons_before,
            "heads_removed": sum(heads_before) - sum(map(len, heads_kept)),
            "ffn_removed": sum(neurons_before) - sum(map(len, neurons_kept)),
            "head_importance": [[round(float(s), 4) for s in layer] for layer in scores.heads],
            "importance": f"Michel et al. 2019: |d task loss / d gate| summed over {scores.examples} labelled "
                          "training features, L2-normalised per layer; one global ranking, >= 1 unit per layer",
        }

    def recovery_description(self, layout: dict) -> str:
        return f"recovering from removing {layout['heads_removed']} heads and {layout['ffn_removed']} neurons"

    def restructure(self, model: torch.nn.Module, layout: dict) -> torch.nn.Module:
        """The pruned shapes on a full-size skeleton: kept head indices, and the first ``ffn_kept`` neurons
        (which neurons does not matter here: the saved state dict fills the values)."""
        layers = encoder_layers(model)
        heads, neurons = layout.get("heads_kept"), layout.get("ffn_kept")
        if heads is None or neurons is None or not len(heads) == len(neurons) == len(layers):
            raise ValueError(f"the layout must give heads_kept and ffn_kept for each of the {len(layers)} layers; "
                             f"got {sorted(layout)}")
        for index, (layer, kept, count) in enumerate(zip(layers, heads, neurons, strict=True)):
            check_layer(layer, index)
            keep_heads(layer, kept)
            keep_neurons(layer, range(count))
        return model


class HeadPrune(StructuredPrune):
    name = "heads"
    config_class = HeadsConfig
    search_space = {"heads": (0.25, 0.5), "ffn": (0.0, 0.5)}  # moderate head pruning, with or without FFN pruning


class FfnPrune(StructuredPrune):
    name = "ffn"
    config_class = FfnConfig
    search_space = {"ffn": (0.25, 0.5)}  # moderate fractions: beyond half, recovery rarely catches up


def _sample(features: list[dict], count: int, seed: int) -> list[dict]:
    """``count`` features drawn with ``seed``, in their original order; fewer available is refused."""
    take_exactly(features, count, option="importance_examples", what="labelled training features")
    if count == len(features):
        return list(features)
    chosen = np.sort(np.random.default_rng(seed).choice(len(features), size=count, replace=False))
    return [features[i] for i in chosen]
