"""``soft_movement``: Sanh et al. 2020's soft movement pruning, where the sparsity is learned, not set.

Each encoder Linear weight W gets a score S (0 at the start). The Linear computes with W * M, where
M = [sigmoid(S) > tau]: a weight is kept while its score stays above a threshold, whatever the other
weights do (hard ``movement`` keeps a fixed top-k instead). The scores are trained during recovery
by their own Adam (learning rate ``score_learning_rate``) on two terms:

* the task's movement: by the straight-through estimator through the threshold, dL/dS = dL/dW' * W
  (W' = W * M), so weights moving away from zero gain score;
* an L1 penalty on the kept fraction, lambda * mean over tensors of mean(sigmoid(S)), which pushes every
  score down.

tau rises from 0 to ``threshold`` along a cubic ramp over the first ``ramp`` of the steps and lambda
with it (lambda = ``regularization`` * tau / ``threshold``), as in Sanh et al.'s code. Every tensor
keeps at least 0.5% of its weights. How many weights survive depends on ``regularization`` (and on
the task and its number of steps): the record says the sparsity reached, per tensor and overall.

To compare with ``movement`` or ``magnitude`` at a given sparsity, set ``sparsity``. The scores,
threshold and penalty stay as above, but the masks then never keep more than the gradual schedule
allows: during the ramp, where the threshold keeps more than Zhu & Gupta's cubic curve towards
``sparsity`` does, the lowest scores beyond it go too; from the ramp's end, the masks keep exactly
(1 - ``sparsity``) of the weights, the highest scores (each tensor still at least its floor), so a
run that the threshold had taken sparser gets its best-scored weights back. Without ``sparsity``, the
sparsity is the one the threshold and lambda reach, as in Sanh et al. At the end the masks are folded
in, and the zeros stored sparsely as ``movement`` stores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn.utils import parametrize

from benchsuite.compressors.base import CompressionResult
from benchsuite.compressors.prune.magnitude import cubic_sparsity, encoder_linears
from benchsuite.compressors.prune.movement import MovementMask, top_scores
from benchsuite.compressors.rebuild import RebuiltCompressor
from benchsuite.distillation.recovery import RECOVERY_NEEDS, RecoveryConfig, recover

MIN_KEPT = 0.005  # every tensor keeps at least this fraction of its weights (Sanh et al.'s floor)
BETAS, EPS = (0.9, 0.999), 1e-8  # the scores' Adam


@dataclass(frozen=True)
class SoftMovementConfig(RecoveryConfig):
    threshold: float = 0.1  # final tau: a weight is kept while sigmoid(score) > tau
    regularization: float = 400.0  # final lambda of the L1 penalty on sigmoid(score): more lambda, more zeros
    score_learning_rate: float = 0.01  # the scores' own Adam learning rate
    ramp: float = 0.7  # fraction of the recovery steps over which tau and lambda rise to their final values
    sparsity: float | None = None  # None: what tau and lambda leave; a value: exactly this fraction from the ramp's end
    LATE_OPTIONS: ClassVar[tuple[str, ...]] = ("sparsity",)

    def validate(self) -> None:
        super().validate()
        if self.sparsity is not None and not 0 < self.sparsity <= 1 - MIN_KEPT:
            raise ValueError(f"sparsity must be in (0, {1 - MIN_KEPT}] (every tensor keeps at least {MIN_KEPT:.1%} of "
                             f"its weights), or null to let the threshold and lambda decide; got {self.sparsity}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1) (it is compared with sigmoid(score)), got {self.threshold}")
        if not (math.isfinite(self.regularization) and self.regularization >= 0):
            raise ValueError(f"regularization must be finite and >= 0, got {self.regularization}")
        if not self.score_learning_rate > 0:
            raise ValueError(f"score_learning_rate must be > 0, got {self.score_learning_rate}")
        if not 0 < self.ramp <= 1:
            raise ValueError(f"ramp must be in (0, 1], got {self.ramp}")
        if self.epochs == 0:
            raise ValueError("soft movement scores are learned during recovery fine-tuning, which epochs=0 turns "
                             "off: set epochs > 0")


def threshold_at(step: int, total: int, *, final: float, ramp: float) -> float:
    """tau after ``step`` of ``total``: 0 at step 0, ``final`` from step round(ramp * total) on, cubic between
    (the curve gradual pruning's sparsity follows)."""
    return cubic_sparsity(step, max(1, round(ramp * total)), final)


def floors(scores: list[torch.Tensor]) -> int:
    """How many weights the tensors keep at least, together: :data:`MIN_KEPT` of each, plus one."""
    return sum(int(MIN_KEPT * s.numel()) + 1 for s in scores)


def soft_masks(scores: list[torch.Tensor], tau: float) -> list[torch.Tensor]:
    """[sigmoid(S) > tau] per tensor, each keeping at least :data:`MIN_KEPT` of its weights (its highest scores)."""
    masks = []
    for score in scores:
        mask = torch.sigmoid(score) > tau
        floor = floors([score])
        if int(mask.sum()) < floor:
            mask = torch.zeros_like(mask)
            mask.view(-1)[torch.topk(score.flatten(), floor).indices] = True
        masks.append(mask)
    return masks


def floored_top(scores: list[torch.Tensor], keep: int) -> list[torch.Tensor]:
    """Masks keeping exactly max(``keep``, the floors) weights, the highest scores across all tensors (ties by
    position), except that a tensor left under its :data:`MIN_KEPT` floor keeps its floor's best scores first."""
    minimum = [floors([s]) for s in scores]
    keep = max(keep, sum(minimum))
    ranked = list(scores)
    while True:
        masks = top_scores(ranked, keep)
        short = [i for i, m in enumerate(masks) if int(torch.count_nonzero(m)) < minimum[i]]
        if not short:
            return masks
        for i in short:  # only these are copied: the scores themselves stay as they are
            ranked[i] = ranked[i].clone()
            ranked[i].view(-1)[torch.topk(ranked[i].flatten(), minimum[i]).indices] = math.inf


def scheduled_masks(scores: list[torch.Tensor], tau: float, *, step: int, ramp_steps: int,
                    sparsity: float) -> list[torch.Tensor]:
    """The threshold's masks (:func:`soft_masks`), cut to the cubic schedule towards ``sparsity`` where they keep
    more than it allows (during the ramp), and exactly at ``sparsity`` from ``ramp_steps`` on."""
    size = sum(s.numel() for s in scores)
    keep = size - round(cubic_sparsity(step, ramp_steps, sparsity) * size)
    if step >= ramp_steps:  # the threshold no longer matters: no need to compute its masks
        return floored_top(scores, keep)
    soft = soft_masks(scores, tau)
    if sum(int(torch.count_nonzero(m)) for m in soft) > keep:
        return floored_top(scores, keep)
    return soft


class ScoreAdam:
    """Adam (bias-corrected, no weight decay) on the score tensors, stepped by hand with a given gradient."""

    def __init__(self, scores: list[torch.Tensor], lr: float):
        self.scores, self.lr, self.t = scores, lr, 0
        self.m = [torch.zeros_like(s) for s in scores]
        self.v = [torch.zeros_like(s) for s in scores]

    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        (b1, b2), t = BETAS, self.t
        for score, m, v, g in zip(self.scores, self.m, self.v, grads, strict=True):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            score.sub_(self.lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + EPS))


def penalty_gradients(scores: list[torch.Tensor], weight: float) -> list[torch.Tensor]:
    """d/dS of ``weight`` * mean over tensors of mean(sigmoid(S))."""
    grads = []
    for score in scores:
        s = torch.sigmoid(score)
        grads.append(s * (1 - s) * (weight / (len(scores) * score.numel())))
    return grads


class SoftMovement(RebuiltCompressor):
    family = "pruning"
    name = "soft_movement"
    config_class = SoftMovementConfig
    NEEDS = RECOVERY_NEEDS
    state_format = "sparse"

    def restructure(self, model: torch.nn.Module, layout: dict) -> torch.nn.Module:
        return model  # only values are zero

    def compress(self, model: torch.nn.Module, *, context) -> CompressionResult:
        cfg = self.config
        linears = encoder_linears(model, method="soft movement")
        # each mask accumulates -sum dL/dW' * W between steps: the task's movement, the negated score gradient
        moved = [MovementMask(torch.zeros_like(m.weight)) for m in linears]
        scores = [torch.zeros_like(m.weight) for m in linears]
        adam = ScoreAdam(scores, cfg.score_learning_rate)
        for linear, mask in zip(linears, moved, strict=True):
            parametrize.register_parametrization(linear, "weight", mask)
        size = sum(s.numel() for s in scores)
        curve: list[list] = []  # [step, tau, lambda, sparsity] about 20 times a run

        def after_step(step: int, total: int) -> None:
            tau = threshold_at(step, total, final=cfg.threshold, ramp=cfg.ramp)
            weight = cfg.regularization * tau / cfg.threshold
            penalty = penalty_gradients(scores, weight)
            adam.step([p - m.score for p, m in zip(penalty, moved, strict=True)])
            masks = (soft_masks(scores, tau) if cfg.sparsity is None else
                     scheduled_masks(scores, tau, step=step, ramp_steps=max(1, round(cfg.ramp * total)),
                                     sparsity=cfg.sparsity))
            for mask, new in zip(moved, masks, strict=True):
                mask.score.zero_()
                mask.mask.copy_(new)
            if step == total or step % max(1, total // 20) == 0:
                kept = sum(int(m.mask.sum()) for m in moved)
                curve.append([step, round(tau, 6), round(weight, 6), round(1 - kept / size, 6)])

        try:
            recovery = recover(model, context=context, options=cfg, after_step=after_step,
                               desc="soft movement pruning")
        finally:
            for linear in linears:
                parametrize.remove_parametrizations(linear, "weight", leave_parametrized=True)
        zeros = [int((m.weight == 0).sum()) for m in linears]
        if cfg.sparsity is not None and sum(zeros) < size - max(size - round(cfg.sparsity * size), floors(scores)):
            raise RuntimeError(f"soft movement left {sum(zeros)} of {size} encoder weights zero, fewer than "
                               f"sparsity={cfg.sparsity} asks: the masks never reached the end of their ramp")
        layout = {"importance": "soft movement", "threshold": cfg.threshold, "regularization": cfg.regularization,
                  "target_sparsity": cfg.sparsity,
                  "sets": {"encoder_linear": {"tensors": len(linears), "weights": size, "pruned": sum(zeros),
                                              "sparsity": round(sum(zeros) / size, 6)}},
                  "tensor_sparsity": [round(z / m.weight.numel(), 6) for z, m in zip(zeros, linears, strict=True)],
                  "pruned_weights": sum(zeros), "sparsity": round(sum(zeros) / size, 6), "steps": curve,
                  "sparse_storage": True, "sparse_kernel": False}
        return CompressionResult(model, layout=layout, recovery=recovery)
