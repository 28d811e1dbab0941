"""``magnitude``: unstructured global magnitude pruning, one-shot or gradual, then recovery.

Which weights: every ``nn.Linear`` weight inside the encoder (``base_model.encoder``: the
attention projections and feed-forward layers of every layer), ranked together by |w|, so that
layers lose different fractions. Biases, LayerNorms, the embeddings, the pooler and the task head
stay dense. With ``embeddings=True`` the word-embedding table is pruned too, to the same sparsity
but ranked on its own: its magnitudes are on another scale, and one shared ranking would empty it
or spare it. MiniLM's word embedding holds 52% of its parameters, so at ``sparsity=0.9`` without
it only about 40% of the model's weights are zero; a gzip file ~4x smaller needs ``embeddings=True``.

Schedules (``schedule``):

* ``oneshot``: prune to ``sparsity`` once, then recovery fine-tuning with the masks fixed.
* ``gradual``: Zhu & Gupta 2017 ("To prune, or not to prune") during the recovery fine-tuning:
  after step t <= T = round(ramp * total steps), every ``prune_every`` steps and at T, the masks
  are recomputed by global magnitude to s_t = sparsity * (1 - (1 - t/T)^3); after T they stay fixed.
  Needs recovery (epochs > 0).

Start (``start``): ``finetuned`` (default) prunes the task's fine-tuned model; ``pretrained`` starts from
the model it was fine-tuned from, the task head freshly initialised as the baseline's was, and learns the
task during the pruning run, with the fine-tuned model as teacher: Sanh et al. 2020's setting, in which
movement pruning beats magnitude pruning at high sparsity (``movement`` takes the same option). The
recovery epochs are then all the task training the model gets.

Masks are re-applied after every optimizer step, so AdamW's update and weight decay cannot
revive a pruned weight; the final model is checked to hold exactly round(sparsity * n) zeros in
each pruned set.

What it buys: the saved file stores each mostly-zero tensor as a bitmask plus its nonzero values
(:mod:`~benchsuite.compressors.sparse_storage`: 0.525 bytes a weight at 90% zeros instead of 4), so
the file itself shrinks, by how much depends on how many of the model's weights were pruned (the
dense word-embedding table is half of MiniLM's). Loading rebuilds the dense tensors and inference
runs the same dense kernels (no sparse kernel), so speed and peak memory are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from benchsuite.compressors.base import CompressionResult
from benchsuite.compressors.rebuild import RebuiltCompressor
from benchsuite.distillation.recovery import RECOVERY_NEEDS, RecoveryConfig, recover

SCHEDULES = ("oneshot", "gradual")
STARTS = ("finetuned", "pretrained")
PRUNING_NEEDS = RECOVERY_NEEDS | {"pretrained"}  # the pretrained model for start=pretrained


@dataclass(frozen=True)
class MagnitudeConfig(RecoveryConfig):
    version: ClassVar[int] = 2  # 2: the file stores the zeros sparsely (its size changed; old cells stop matching)
    sparsity: float = 0.9  # fraction of each pruned set's weights set to zero
    embeddings: bool = False  # also prune the word-embedding table (ranked on its own)
    schedule: str = "oneshot"  # or "gradual": Zhu & Gupta's cubic schedule during recovery
    ramp: float = 0.7  # gradual: fraction of the recovery steps over which sparsity rises to its target
    prune_every: int | None = None  # gradual: steps between mask updates; None: total steps // 20 (at least 1)
    start: str = "finetuned"  # or "pretrained": prune while fine-tuning the pretrained model (Sanh et al.'s setting)
    LATE_OPTIONS: ClassVar[tuple[str, ...]] = ("start",)

    def validate(self) -> None:
        super().validate()
        check_schedule(self.sparsity, self.ramp, self.prune_every)
        check_start(self.start, self.epochs)
        if not isinstance(self.embeddings, bool):
            raise ValueError(f"embeddings must be true or false, got {self.embeddings!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.schedule == "gradual" and self.epochs == 0:
            raise ValueError("schedule 'gradual' prunes during recovery fine-tuning, which epochs=0 turns off: "
                             "set epochs > 0 or schedule='oneshot'")


def check_schedule(sparsity: float, ramp: float, prune_every: int | None) -> None:
    """The options unstructured pruning schedules share (magnitude, movement), each refused by name."""
    if not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
    if not 0 < ramp <= 1:
        raise ValueError(f"ramp must be in (0, 1], got {ramp}")
    if prune_every is not None and prune_every < 1:
        raise ValueError(f"prune_every must be >= 1 (or unset), got {prune_every}")


def check_start(start: str, epochs: float | None) -> None:
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    if start == "pretrained" and epochs == 0:
        raise ValueError("start=pretrained learns the task during recovery fine-tuning, which epochs=0 turns off: "
                         "set epochs > 0")


def starting_point(model: nn.Module, *, context, start: str) -> nn.Module:
    """``model`` itself (``finetuned``), or with the pretrained weights and a fresh head loaded into it."""
    if start == "pretrained":
        model.load_state_dict(context.pretrained.state_dict())
    return model


def cubic_sparsity(step: int, ramp_steps: int, final: float) -> float:
    """Zhu & Gupta's target after ``step`` of ``ramp_steps`` (from 0 at step 0 to ``final`` from ``ramp_steps``)."""
    return final * (1 - (1 - min(step, ramp_steps) / ramp_steps) ** 3)


def scheduled_sparsity(step: int, total: int, *, final: float, ramp: float, prune_every: int | None,
                       warmup: float = 0.0) -> float | None:
    """The gradual schedule's target at ``step`` of ``total`` when the masks are updated then, else None: none
    up to W = round(warmup * total), then every ``prune_every`` steps after W (default total // 20, at least 1)
    and at T = round(ramp * total), the cubic ramp running from W to T; none after T."""
    start = round(warmup * total)
    ramp_steps = max(1, round(ramp * total) - start)
    every = prune_every or max(1, total // 20)
    step -= start
    if 0 < step <= ramp_steps and (step % every == 0 or step == ramp_steps):
        return cubic_sparsity(step, ramp_steps, final)
    return None


def smallest(tensors: list[torch.Tensor], count: int) -> list[torch.Tensor]:
    """Masks (True: kept) that drop exactly ``count`` weights of smallest |w| across all ``tensors``,
    ties at the threshold broken by position."""
    flat = torch.cat([t.detach().abs().flatten() for t in tensors])
    drop = torch.zeros_like(flat, dtype=torch.bool)
    if count > 0:
        threshold = flat.kthvalue(count).values
        drop = flat < threshold
        ties = (flat == threshold).nonzero().flatten()
        drop[ties[: count - int(drop.sum())]] = True
    return [keep.view_as(t) for keep, t in zip((~drop).split([t.numel() for t in tensors]), tensors, strict=True)]


class PrunedSet:
    """Weights ranked together, with their current masks."""

    def __init__(self, weights: list[nn.Parameter]):
        self.weights = weights
        self.size = sum(w.numel() for w in weights)
        self.masks = [torch.ones_like(w, dtype=torch.bool) for w in weights]
        self.pruned = 0

    def prune_to(self, sparsity: float) -> None:
        self.pruned = round(sparsity * self.size)
        self.masks = smallest(self.weights, self.pruned)
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for weight, mask in zip(self.weights, self.masks, strict=True):
            weight.mul_(mask)

    def zeros(self) -> int:
        return sum(int((w == 0).sum()) for w in self.weights)


class Magnitude(RebuiltCompressor):
    family = "pruning"
    name = "magnitude"
    config_class = MagnitudeConfig
    search_space = {"sparsity": (0.5, 0.7, 0.9)}  # light to heavy sparsity: the accuracy/zeros trade
    NEEDS = PRUNING_NEEDS
    state_format = "sparse"  # the zeros are not stored: the file shrinks with the sparsity

    def restructure(self, model: torch.nn.Module, layout: dict) -> torch.nn.Module:
        return model  # the architecture is unchanged: only values are zero
    def compress(self, model: torch.nn.Module, *, context) -> CompressionResult:
        model = starting_point(model, context=context, start=self.config.start)
        sets = pruned_sets(model, embeddings=self.config.embeddings)
        target = self.config.sparsity
        steps: list[list] = []  # gradual: [step, target sparsity, achieved sparsity] at each mask update

        def after_step(step: int, total: int) -> None:
            if self.config.schedule == "gradual":
                sparsity = scheduled_sparsity(step, total, final=target, ramp=self.config.ramp,
                                              prune_every=self.config.prune_every)
                if sparsity is not None:
                    for pruned in sets.values():
                        pruned.prune_to(sparsity)
                    achieved = sum(p.zeros() for p in sets.values()) / sum(p.size for p in sets.values())
                    steps.append([step, round(sparsity, 6), round(achieved, 6)])
                    return
            for pruned in sets.values():
                pruned.apply()

        if self.config.schedule == "oneshot":
            for pruned in sets.values():
                pruned.prune_to(target)
        recovery = recover(model, context=context, options=self.config, after_step=after_step,
                           desc=f"recovering at {target:.0%} sparsity ({self.config.schedule})")
        return CompressionResult(model, layout=self._check(sets, model, steps), recovery=recovery)

    def _check(self, sets: dict[str, PrunedSet], model: torch.nn.Module, steps: list) -> dict:
        """The achieved sparsity, after checking that every set holds exactly its target's zeros."""
        report = {}
        for name, pruned in sets.items():
            expected = round(self.config.sparsity * pruned.size)
            if pruned.pruned != expected or any(bool(w[~m].any()) for w, m in zip(pruned.weights, pruned.masks,
                                                                                     strict=True)):
                raise RuntimeError(f"{name}: {pruned.pruned} weights masked and {pruned.zeros()} zero, expected "
                                   f"{expected} of {pruned.size}: the pruning schedule did not finish")
            report[name] = {"tensors": len(pruned.weights), "weights": pruned.size, "pruned": pruned.pruned,
                            "sparsity": round(pruned.pruned / pruned.size, 6)}
        pruned_total = sum(r["pruned"] for r in report.values())
        size = sum(r["weights"] for r in report.values())
        parameters = sum(p.numel() for p in model.parameters())
        layout = {"schedule": self.config.schedule, "target_sparsity": self.config.sparsity, "sets": report,
                  "pruned_weights": pruned_total, "sparsity": round(pruned_total / size, 6),
                  "share_of_all_parameters_pruned": round(pruned_total / parameters, 6),
                  # facts for the report: the file stores the zeros sparsely; they are multiplied densely
                  "sparse_storage": True, "sparse_kernel": False}
        if steps:
            layout["steps"] = steps
        return layout


def pruned_sets(model: torch.nn.Module, *, embeddings: bool) -> dict[str, PrunedSet]:
    """The encoder's Linear weights as one set and, with ``embeddings``, the word-embedding table as another."""
    sets = {"encoder_linear": PrunedSet([m.weight for m in encoder_linears(model, method="magnitude")])}
    if embeddings:
        sets["word_embeddings"] = PrunedSet([model.get_input_embeddings().weight])
    return sets


def encoder_linears(model: torch.nn.Module, *, method: str) -> list[nn.Linear]:
    """The ``nn.Linear`` layers inside ``base_model.encoder``, the weights unstructured pruning ranks; a clear
    error naming ``method`` for a model without them."""
    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    linears = [m for m in encoder.modules() if isinstance(m, nn.Linear)] if encoder is not None else []
    if not linears:
        raise ValueError(f"{type(model).__name__} has no base_model.encoder with nn.Linear layers: {method} "
                         "pruning handles BERT-like encoders")
    return linears
