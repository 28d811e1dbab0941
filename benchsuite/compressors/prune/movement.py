"""``movement``: movement pruning (Sanh et al. 2020), scores learned during recovery fine-tuning.

Which weights: every ``nn.Linear`` weight inside the encoder, ranked together as ``magnitude`` ranks
them (``ranking=global``), or each matrix keeping its own top (1 - s) share (``ranking=matrix``, Sanh et
al.'s per-matrix top-k). Each weight W gets a score S. During recovery the Linear computes with W * M, M the
current mask; by the straight-through estimator through the top-k mask, the gradient of the loss
with respect to S is dL/dW' * W (W' = W * M), so S accumulates -dL/dW' * W at every step: weights
moving away from zero gain score, weights shrinking towards it lose it, whatever their size. This is
Sanh et al.'s hard movement pruning with scores trained by plain gradient accumulation (their
first-order form, S = -sum_t dL/dW' * W); their soft variant (a threshold on sigmoid(S) with an L1
penalty, which does not fix the sparsity in advance) is ``soft_movement``. Pruned weights keep their
dense values and their scores keep moving, so a pruned weight can come back at the next mask update.

Schedule: Zhu & Gupta's cubic ramp, as ``magnitude:schedule=gradual``: after step t <= T = round(ramp x
total steps), every ``prune_every`` steps and at T, M keeps the top (1 - s_t) share of the scores,
s_t = sparsity * (1 - (1 - t/T)^3); after T it stays fixed. ``warmup`` > 0 first lets the scores
accumulate over that share of the steps with every weight kept (Sanh et al.'s initial warm-up), and the
ramp then runs from there to T. ``start=pretrained`` prunes while fine-tuning the pretrained model, the
fine-tuned one as teacher (Sanh et al.'s setting; see ``magnitude``). At the end the masks are folded into the
weights (pruned weights become exact zeros) and the model is a plain one, saved with its zeros stored
sparsely (:mod:`~benchsuite.compressors.sparse_storage`) and run with dense kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchsuite.compressors.base import CompressionResult
from benchsuite.compressors.prune.magnitude import (
    PRUNING_NEEDS,
    check_schedule,
    check_start,
    encoder_linears,
    scheduled_sparsity,
    starting_point,
)
from benchsuite.compressors.rebuild import RebuiltCompressor
from benchsuite.distillation.recovery import RecoveryConfig, recover

RANKINGS = ("global", "matrix")


@dataclass(frozen=True)
class MovementConfig(RecoveryConfig):
    version: ClassVar[int] = 1
    sparsity: float = 0.9  # fraction of the encoder's Linear weights set to zero
    ramp: float = 0.7  # fraction of the recovery steps over which sparsity rises to its target
    prune_every: int | None = None  # steps between mask updates; None: total steps // 20 (at least 1)
    ranking: str = "global"  # "global": one top-k over all the encoder's Linears; "matrix": each its own top-k
    warmup: float = 0.0  # fraction of the recovery steps over which scores accumulate before the first mask update
    start: str = "finetuned"  # or "pretrained": prune while fine-tuning the pretrained model (Sanh et al.'s setting)
    LATE_OPTIONS: ClassVar[tuple[str, ...]] = ("ranking", "warmup", "start")

    def validate(self) -> None:
        super().validate()
        check_schedule(self.sparsity, self.ramp, self.prune_every)
        check_start(self.start, self.epochs)
        if self.ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, got {self.ranking!r}")
        if not 0 <= self.warmup < self.ramp:
            raise ValueError(f"warmup must be in [0, ramp={self.ramp}): the ramp runs from the warm-up's end to "
                             f"its own, got {self.warmup}")
        if self.epochs == 0:
            raise ValueError("movement scores are learned during recovery fine-tuning, which epochs=0 turns off: "
                             "set epochs > 0, or use magnitude:schedule=oneshot for pruning without training")


class MovementMask(nn.Module):
    """The parametrization W -> W * mask; each backward adds -dL/dW' * W to ``score`` (the movement)."""

    def __init__(self, score: torch.Tensor):
        super().__init__()
        self.score = score
        self.register_buffer("mask", torch.ones_like(score, dtype=torch.bool), persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        out = weight * self.mask
        if out.requires_grad:
            dense = weight.detach()

            def move(grad: torch.Tensor) -> None:
                self.score.sub_(grad * dense)

            out.register_hook(move)
        return out


def top_scores(scores: list[torch.Tensor], keep: int) -> list[torch.Tensor]:
    """Masks (True: kept) keeping exactly the ``keep`` highest scores across all tensors, ties broken by position;
    by a partition, not a sort, since soft movement calls it after every step on millions of scores."""
    flat = torch.cat([s.flatten() for s in scores])
    drop = flat.numel() - keep
    if drop <= 0:
        kept = torch.ones_like(flat, dtype=torch.bool)
    else:
        values = flat.detach().cpu().numpy()
        cut = np.partition(values, drop - 1)[drop - 1]  # the drop-th smallest value
        mask = values > cut
        missing = keep - np.count_nonzero(mask)
        if missing:
            mask[np.flatnonzero(values == cut)[:missing]] = True
        kept = torch.from_numpy(mask).to(flat.device)
    return [k.view_as(s) for k, s in zip(kept.split([s.numel() for s in scores]), scores, strict=True)]


def kept_masks(scores: list[torch.Tensor], sparsity: float, ranking: str) -> list[torch.Tensor]:
    """Masks at ``sparsity``: one top-k over all the tensors (``global``), or each tensor's own (``matrix``)."""
    if ranking == "matrix":
        return [top_scores([s], s.numel() - round(sparsity * s.numel()))[0] for s in scores]
    size = sum(s.numel() for s in scores)
    return top_scores(scores, size - round(sparsity * size))


class Movement(RebuiltCompressor):
    family = "pruning"
    name = "movement"
    config_class = MovementConfig
    search_space = {"sparsity": (0.5, 0.7, 0.9)}  # light to heavy sparsity: the accuracy/zeros trade
    NEEDS = PRUNING_NEEDS
    state_format = "sparse"  # the zeros are not stored: the file shrinks with the sparsity

    def restructure(self, model: torch.nn.Module, layout: dict) -> torch.nn.Module:
        return model  # the architecture is unchanged: only values are zero

    def compress(self, model: torch.nn.Module, *, context) -> CompressionResult:
        model = starting_point(model, context=context, start=self.config.start)
        linears = encoder_linears(model, method="movement")
        masks = [MovementMask(torch.zeros_like(m.weight, requires_grad=False)) for m in linears]
        for linear, mask in zip(linears, masks, strict=True):
            parametrize.register_parametrization(linear, "weight", mask)
        size = sum(m.score.numel() for m in masks)
        target = self.config.sparsity
        steps: list[list] = []  # [step, target sparsity, achieved sparsity, kept weights that were pruned before]

        def after_step(step: int, total: int) -> None:
            sparsity = scheduled_sparsity(step, total, final=target, ramp=self.config.ramp,
                                          prune_every=self.config.prune_every, warmup=self.config.warmup)
            if sparsity is not None:
                before = [m.mask.clone() for m in masks]
                for mask, new in zip(masks, kept_masks([m.score for m in masks], sparsity, self.config.ranking),
                                     strict=True):
                    mask.mask.copy_(new)
                revived = sum(int((m.mask & ~b).sum()) for m, b in zip(masks, before, strict=True))
                achieved = 1 - sum(int(m.mask.sum()) for m in masks) / size
                steps.append([step, round(sparsity, 6), round(achieved, 6), revived])

        try:
            recovery = recover(model, context=context, options=self.config, after_step=after_step,
                               desc=f"movement pruning to {target:.0%}")
        finally:
            for linear in linears:  # fold the masks in: pruned weights become exact zeros
                parametrize.remove_parametrizations(linear, "weight", leave_parametrized=True)
        return CompressionResult(model, layout=self._check(linears, steps), recovery=recovery)

    def _check(self, linears: list[nn.Linear], steps: list) -> dict:
        size = sum(m.weight.numel() for m in linears)
        pruned = sum(int((m.weight == 0).sum()) for m in linears)
        expected = (sum(round(self.config.sparsity * m.weight.numel()) for m in linears)
                    if self.config.ranking == "matrix" else round(self.config.sparsity * size))
        if pruned < expected or not steps or steps[-1][1] != round(self.config.sparsity, 6):
            raise RuntimeError(f"movement pruning left {pruned} of {size} encoder weights zero, expected {expected}: "
                               f"the schedule did not reach its target (too few recovery steps?)")
        return {"importance": "movement", "ranking": self.config.ranking, "target_sparsity": self.config.sparsity,
                "sets": {"encoder_linear": {"tensors": len(linears), "weights": size, "pruned": pruned,
                                            "sparsity": round(pruned / size, 6)}},
                "pruned_weights": pruned, "sparsity": round(pruned / size, 6), "steps": steps,
                "sparse_storage": True, "sparse_kernel": False}
