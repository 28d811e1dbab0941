"""``cross_layer``: ALBERT's cross-layer parameter sharing, one encoder layer reused at several depths.

The encoder's layers are split into ``groups`` runs of consecutive layers (layer i of L joins
group ``i * groups // L``: 6 layers in 3 groups are pairs; 1 group is ALBERT, every depth runs the
same layer). Each group keeps one layer, placed at each of its depths: the encoder's
``ModuleList`` holds that one module object several times. Compute is unchanged (every depth
still runs); storage shrinks by the group size, and the footprint and the saved file count the
shared layer once.

The shared layer starts from the ``average`` of its group's layers (every parameter, LayerNorm
included) or one of them as it is (``first``, ``middle``: the lower middle of an even group,
``last``), then the model recovers with the distillation loss of
:mod:`benchsuite.distillation.recovery`; hidden-state matching, if asked, pairs depth j with the
teacher's layer j. Saving writes each shared layer once; loading rebuilds the tying from the
layout's ``groups`` before reading the weights, so a reloaded model shares as the saved one did.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from benchsuite.compressors.layers import encoder_layers
from benchsuite.compressors.retrain import ReshapeAndRecover
from benchsuite.distillation.recovery import RecoveryConfig

INITS = ("average", "first", "middle", "last")


def check_sharing(groups: int, init: str) -> None:
    """Validation shared by every config that shares layers."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1 (1: every layer shares one), got {groups}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")


@dataclass(frozen=True)
class CrossLayerConfig(RecoveryConfig):
    groups: int = 1  # runs of consecutive layers sharing one layer each; 1: all layers share one (ALBERT)
    init: str = "average"  # each shared layer's start: "average" of its group, or its "first", "middle", "last"

    def validate(self) -> None:
        super().validate()
        check_sharing(self.groups, self.init)


def layer_groups(depth: int, groups: int) -> list[list[int]]:
    """Layers 0..depth-1 in ``groups`` runs of consecutive layers, as even as can be:
    ``layer_groups(6, 4) == [[0, 1], [2], [3, 4], [5]]``."""
    if not 1 <= groups <= depth:
        raise ValueError(f"groups must be in 1..{depth} for an encoder of {depth} layers, got {groups}")
    return [[i for i in range(depth) if i * groups // depth == g] for g in range(groups)]


def share_layers(model: nn.Module, groups: list[list[int]], *, init: str) -> None:
    """Make each group's depths run one layer, started as ``init`` says, in place."""
    layers = encoder_layers(model)
    for group in groups:
        members = [layers[i] for i in group]
        shapes = [{k: tuple(v.shape) for k, v in member.state_dict().items()} for member in members]
        if any(shape != shapes[0] for shape in shapes[1:]):
            raise ValueError(f"layers {group} have different shapes (an earlier stage pruned them unevenly: heads or "
                             "ffn), so one layer cannot stand for them all; share the layers first (cross_layer or "
                             "albert before the pruning stage)")
        if init == "average":
            # the copy keeps reading the model's config (not a copy of it): switching the model to eager
            # attention, as attention matching does, must reach the shared layer too
            shared = copy.deepcopy(members[0], memo={id(model.config): model.config})
            states = [member.state_dict() for member in members]
            with torch.no_grad():
                for key, tensor in shared.state_dict().items():
                    if tensor.is_floating_point():
                        tensor.copy_(torch.stack([state[key] for state in states]).mean(0))
        else:
            shared = members[{"first": 0, "middle": (len(members) - 1) // 2, "last": -1}[init]]
        for i in group:
            layers[i] = shared


def tie_layers(model: nn.Module, groups: list[list[int]]) -> None:
    """The architecture of :func:`share_layers` (each group's first layer at all its depths), for loading."""
    layers = encoder_layers(model)
    for group in groups:
        for i in group:
            layers[i] = layers[group[0]]


class CrossLayer(ReshapeAndRecover):
    family = "sharing"
    name = "cross_layer"
    config_class = CrossLayerConfig
    search_space = {"groups": (1, 3)}  # all layers shared (ALBERT) or three shared groups

    def reshape(self, model: nn.Module, *, context) -> dict:
        groups = layer_groups(len(encoder_layers(model)), self.config.groups)
        share_layers(model, groups, init=self.config.init)
        return {"groups": groups}

    def recovery_description(self, layout: dict) -> str:
        return f"recovering {len(layout['groups'])} shared layer(s)"

    def restructure(self, model: nn.Module, layout: dict) -> nn.Module:
        tie_layers(model, layout["groups"])
        return model.eval()
