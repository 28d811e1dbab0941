"""``cross_layer``: ALBERT's cross-layer parameter sharing, one encoder layer reused at several depths.

The encoder's layers are split into ``groups`` runs of consecutive layers (layer i of L joins
group ``i * groups // L``: 6 layers in 3 groups are pairs; 1 group is ALBERT, every depth runs the
same layer). Each group keeps one layer, placed at each of its depths: the encoder's
``ModuleList`` holds that one module object several times. Compute is unchanged (every depth
still runs); storage shrinks by the group size, and the footprint and the saved file count the
shared layer once.

The shared layer starts from one of its group's layers as it is (``first``, the default; ``middle``:
the lower middle of an even group; ``last``) or from their ``average`` (every parameter, LayerNorm
included), then the model recovers with the distillation loss of
:mod:`benchsuite.distillation.recovery`; hidden-state matching, if asked, pairs depth j with the
teacher's layer j. Saving writes each shared layer once; loading rebuilds the tying from the
layout's ``groups`` before reading the weights, so a reloaded model shares as the saved one did.

``first`` became the default after a measurement (README, "Where a shared layer starts"): pairs of
layers started from the ``first`` of each pair kept 99.5-101.3% of the teacher on sst2, mrpc and
conll2003 (4 epochs, hidden-state matching), against 91.3-95.3% from the ``average``; +7.9 F1
[+4.9, +11.1] paired on mrpc. Each Linear of all-MiniLM-L6-v2 lies 0.63-0.83 of its norm from its
pair's average (``benchmarks/layer_distance.py``), so the average is none of the layers it replaces;
the first of each pair is a trained layer, and layers 0, 2 and 4 are also the 3-layer student's start.
Records from before the change hold ``init: "average"`` in their params, and their labels do not
name it; records written since name ``init`` whichever it is (``FORMER_DEFAULTS``).

``norms="own"`` shares only the Linears (the weights and biases of attention and FFN): each depth
keeps its own layer object with its own two LayerNorms, started from that depth's trained ones,
so each depth can rescale and shift what the shared weights compute (2 x 2 x hidden parameters a
depth, 4,608 for all-MiniLM-L6-v2's three shared pairs). Per-layer relaxations of the tying are
what Bae et al. 2024 ("Relaxed Recursive Transformers") add to recover a shared model; the
LayerNorms are the cheapest such relaxation.

``tie="gradual"`` does not tie the layers before recovery: each group's layers are pulled together
step by step while the model recovers and tied in place once equal, after ``tie_at`` of the
recovery steps (:mod:`~benchsuite.compressors.share.tying`); the saved model is the same.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from benchsuite.compressors.layers import encoder_layers
from benchsuite.compressors.retrain import ReshapeAndRecover
from benchsuite.compressors.share.tying import PICKED, check_tying, gradual_tying, tie_layers, tie_linears
from benchsuite.distillation.recovery import RecoveryConfig

INITS = ("average", "first", "middle", "last")
NORMS = ("shared", "own")  # "own": each depth keeps its LayerNorms, only the Linears are shared


def check_sharing(groups: int, init: str, norms: str) -> None:
    """Validation shared by every config that shares layers."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1 (1: every layer shares one), got {groups}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if norms not in NORMS:
        raise ValueError(f"norms must be one of {', '.join(NORMS)} (own: each depth keeps its LayerNorms), "
                         f"got {norms!r}")


@dataclass(frozen=True)
class CrossLayerConfig(RecoveryConfig):
    groups: int = 1  # runs of consecutive layers sharing one layer each; 1: all layers share one (ALBERT)
    init: str = "first"  # each shared layer's start: its group's "first", "middle" or "last" layer, or "average"
    norms: str = "shared"  # "own": each depth keeps its own LayerNorms and shares only the Linears
    tie: str = "now"  # "gradual": pull each group's layers together during recovery and tie them at tie_at
    tie_at: float = 0.5  # with tie=gradual: the fraction of recovery steps after which the layers are one

    LATE_OPTIONS: ClassVar[tuple[str, ...]] = ("norms", "tie", "tie_at")
    FORMER_DEFAULTS: ClassVar[dict[str, Any]] = {"init": "average"}

    def validate(self) -> None:
        super().validate()
        check_sharing(self.groups, self.init, self.norms)
        check_tying(self.tie, self.tie_at, self.epochs)


def layer_groups(depth: int, groups: int) -> list[list[int]]:
    """Layers 0..depth-1 in ``groups`` runs of consecutive layers, as even as can be:
    ``layer_groups(6, 4) == [[0, 1], [2], [3, 4], [5]]``."""
    if not 1 <= groups <= depth:
        raise ValueError(f"groups must be in 1..{depth} for an encoder of {depth} layers, got {groups}")
    return [[i for i in range(depth) if i * groups // depth == g] for g in range(groups)]


def check_shapes(model: nn.Module, groups: list[list[int]]) -> None:
    """Refuse groups whose layers differ in shape: one layer cannot stand for them all."""
    layers = encoder_layers(model)
    for group in groups:
        shapes = [{k: tuple(v.shape) for k, v in layers[i].state_dict().items()} for i in group]
        if any(shape != shapes[0] for shape in shapes[1:]):
            raise ValueError(f"layers {group} have different shapes (an earlier stage pruned them unevenly: heads or "
                             "ffn), so one layer cannot stand for them all; share the layers first (cross_layer or "
                             "albert before the pruning stage)")


def share_now_or_later(model: nn.Module, groups: list[list[int]], config) -> None:
    """Tie the groups now (``config.tie == "now"``), or only check that they can be tied during recovery."""
    if config.tie == "now":
        share_layers(model, groups, init=config.init, norms=config.norms)
    else:
        check_shapes(model, groups)


def share_layers(model: nn.Module, groups: list[list[int]], *, init: str, norms: str = "shared") -> None:
    """Make each group's depths run one layer, started as ``init`` says, in place; with ``norms="own"``,
    one layer's Linears, each depth keeping its own LayerNorms."""
    check_shapes(model, groups)
    layers = encoder_layers(model)
    for group in groups:
        members = [layers[i] for i in group]
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
            shared = members[PICKED[init](len(members))]
        for i in group:
            if norms == "own":
                tie_linears(layers[i], shared)
            else:
                layers[i] = shared


def tying_during_recovery(model: nn.Module, layout: dict, config):
    """The recovery hook of ``config.tie == "gradual"`` (:func:`~benchsuite.compressors.share.tying.gradual_tying`);
    None when the layers were tied before recovery."""
    return gradual_tying(model, layout, init=config.init, tie_at=config.tie_at) if config.tie == "gradual" else None


def sharing_layout(groups: list[list[int]], norms: str) -> dict:
    """The layout's description of the sharing; ``norms`` only where it is not the default."""
    return {"groups": groups} | ({"norms": norms} if norms != "shared" else {})


class CrossLayer(ReshapeAndRecover):
    family = "sharing"
    name = "cross_layer"
    config_class = CrossLayerConfig
    search_space = {"groups": (1, 3)}  # all layers shared (ALBERT) or three shared groups

    def reshape(self, model: nn.Module, *, context) -> dict:
        groups = layer_groups(len(encoder_layers(model)), self.config.groups)
        share_now_or_later(model, groups, self.config)
        return sharing_layout(groups, self.config.norms)

    def during_recovery(self, model: nn.Module, layout: dict):
        return tying_during_recovery(model, layout, self.config)

    def recovery_description(self, layout: dict) -> str:
        groups = layout["groups"]
        shared = sum(len(group) > 1 for group in groups)
        kind = "gradually tied" if self.config.tie == "gradual" else "shared"
        if shared == len(groups):
            return f"recovering {shared} {kind} layer(s)"
        return f"recovering {len(groups)} layer(s), {shared} of them {kind}"  # groups=6: none shared

    def restructure(self, model: nn.Module, layout: dict) -> nn.Module:
        tie_layers(model, layout["groups"], layout.get("norms", "shared"))
        return model.eval()
