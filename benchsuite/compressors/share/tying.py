"""How a group's layers are tied: the tying itself, and gradual tying during recovery.

``tie_layers`` puts a group's first layer object at each of its depths (or, with ``norms="own"``, only
its Linears, each depth keeping its LayerNorms): the architecture of shared layers, for sharing and
for loading.

With ``tie="gradual"``, ``cross_layer`` and ``albert`` do not tie the layers before recovery. Each
depth keeps its own layer while the model trains, and after every optimizer step each tensor that
will be shared (every parameter of the layer; only the Linears' with ``norms="own"``) is moved
towards its group's target: the members' mean for ``init="average"``, else the picked member. The
move keeps what is left of each member's distance to the target on Zhu & Gupta's cubic ramp, a
fraction (1 - t/T)^3 of the distance at step 0, where T = max(1, round(tie_at x recovery steps)).
At step T that fraction is 0: the members are equal, and they are tied in place, the group's
first (or picked) layer object put at its other depths, so the optimizer goes on training the
shared layer for the remaining steps. The result is the same architecture as tying at once
(``tie="now"``), saved and reloaded the same way.

It is to tying what gradual magnitude pruning is to one-shot pruning: the function changes a
little at each step and the training between steps repairs it, instead of recovering from one
large change. The motive was mrpc: its 3,668 training pairs never recovered from tying at once,
while soft movement pruning, which also changes the model gradually, kept 101% on the same budget.
Measured there (pairs of layers, 8 epochs with hidden-state matching), gradual tying ends at the
majority-class floor too, within noise of tying at once, while the same recovery with nothing
shared keeps 100%: on mrpc the sharing itself is what costs, not its abruptness.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from benchsuite.compressors.layers import encoder_layers
from benchsuite.compressors.prune.magnitude import cubic_sparsity
from benchsuite.quant.surgery import replace_modules

# the member a group's shared layer starts from, by init, given the group's size ("average" starts from all)
PICKED: dict[str, Callable[[int], int]] = {"first": lambda n: 0, "middle": lambda n: (n - 1) // 2,
                                            "last": lambda n: n - 1}
TIES = ("now", "gradual")  # "now": tie before recovery; "gradual": pull together during it, tie at tie_at


def check_tying(tie: str, tie_at: float, epochs: float | None) -> None:
    """Validation of the tying options, shared by every config that shares layers."""
    if tie not in TIES:
        raise ValueError(f"tie must be one of {', '.join(TIES)} (gradual: pull the layers together while the "
                         f"model recovers), got {tie!r}")
    if not 0 < tie_at <= 1:
        raise ValueError(f"tie_at must be in (0, 1], the fraction of recovery steps after which the layers are "
                         f"tied, got {tie_at}")
    if tie == "now" and tie_at != 0.5:
        raise ValueError("tie_at applies to tie=gradual only; add tie=gradual or drop tie_at")
    if tie == "gradual" and epochs == 0:
        raise ValueError("tie=gradual ties the layers during recovery, and epochs=0 runs none; "
                         "use tie=now, or give recovery epochs")


def tie_linears(target: nn.Module, source: nn.Module) -> None:
    """Put ``source``'s Linear modules in ``target`` at the same names; everything else stays ``target``'s."""
    for name, module in [(n, m) for n, m in source.named_modules() if isinstance(m, nn.Linear)]:
        replace_modules(target, [name], lambda _old, module=module: module)


def tie_layers(model: nn.Module, groups: list[list[int]], norms: str = "shared") -> None:
    """The architecture of :func:`share_layers` (each group's first layer at all its depths, or its Linears
    with ``norms="own"``), for loading."""
    layers = encoder_layers(model)
    for group in groups:
        for i in group:
            if norms == "own":
                tie_linears(layers[i], layers[group[0]])
            else:
                layers[i] = layers[group[0]]


def _shared_parameters(layer: nn.Module, norms: str) -> list[str]:
    """The names of ``layer``'s parameters that its group will share."""
    if norms == "own":
        return [f"{name}.{p}" for name, module in layer.named_modules() if isinstance(module, nn.Linear)
                for p, _ in module.named_parameters(recurse=False)]
    return [name for name, _ in layer.named_parameters()]


def _target_first(group: list[int], init: str) -> list[int]:
    """``group`` with the member its shared layer starts from first (the first member for "average")."""
    k = 0 if init == "average" else PICKED[init](len(group))
    return [group[k], *group[:k], *group[k + 1:]]


def gradual_tying(model: nn.Module, layout: dict, *, init: str, tie_at: float) -> Callable[[int, int], None]:
    """``after_step(step, total)`` for recovery: the pull of each step, and the tying at step T.

    It records T in ``layout["tied_at_step"]`` when it ties."""
    groups, norms = layout["groups"], layout.get("norms", "shared")
    layers = encoder_layers(model)
    ordered = [_target_first(group, init) for group in groups]
    # per group of more than one, per shared name: its members' tensors, the target's first
    pulled = [[[layers[i].get_parameter(name) for i in group] for name in _shared_parameters(layers[group[0]], norms)]
              for group in ordered if len(group) > 1]

    def after_step(step: int, total: int) -> None:
        end = max(1, round(tie_at * total))
        if step > end:
            return
        left = [1 - cubic_sparsity(s, end, 1.0) for s in (step - 1, step)]  # distance left on the cubic ramp
        kept = left[1] / left[0]  # of the distance left after the previous step
        with torch.no_grad():
            for tensors in (t for group in pulled for t in group):
                target = torch.stack(tensors).mean(0) if init == "average" else tensors[0].clone()
                for tensor in tensors:
                    tensor.copy_(target + kept * (tensor - target))
        if step == end:
            tie_layers(model, ordered, norms)
            layout["tied_at_step"] = step

    return after_step
