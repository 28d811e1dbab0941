"""Fine-tuning: one plain, deterministic loop for every task kind.

Batches are grouped by length (shuffle, then sort inside chunks of 64 batches, then
shuffle the batches), which keeps training randomised while cutting padding about 4x
on this CPU. AdamW with linear warm-up and decay, as BERT fine-tuning does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from benchsuite.engine import collate
from benchsuite.tasks.spec import TrainConfig

# Under autocast on CPU, oneDNN compiles a kernel for each new matmul shape; padding every batch to a multiple of
# this many tokens leaves a few widths whose kernels are reused. Measured on a 3-layer MiniLM QA student in bf16
# (batch 16, no dropout) on the 2-core Sapphire Rapids machine: widths drawn from 120-256 ran 3.9-4.2k tokens/s,
# one fixed width 5.8-7.0k, the same widths padded to multiples of 32 5.1-5.3k over the first 40 steps.
AUTOCAST_PAD_MULTIPLE = 32


@dataclass(frozen=True)
class TrainStats:
    examples: int
    steps: int
    epochs: float
    seconds: float
    final_loss: float  # mean over the last 50 steps
    curve: tuple[dict, ...] = ()  # what ``checkpoint`` returned at each of ``checkpoint_steps``
    kept_step: int | None = None  # with ``keep_best``: the checkpoint whose weights the model ends with

    def to_json(self) -> dict:
        """The stats as a record holds them (no ``curve`` key without checkpoints, no ``kept_step`` without
        ``keep_best``)."""
        data = asdict(self)
        if not self.curve:
            data.pop("curve")
        if self.kept_step is None:
            data.pop("kept_step")
        return data


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(len(lengths))
    chunk = batch_size * 64
    lengths = np.asarray(lengths)
    batches = []
    for c in range(0, len(order), chunk):
        part = order[c : c + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def step_counts(n_features: int, cfg: TrainConfig) -> tuple[int, int]:
    """Optimizer steps in one epoch of ``n_features`` and in the whole run (at least one)."""
    per_epoch = math.ceil(n_features / cfg.batch_size)
    return per_epoch, max(1, math.ceil(per_epoch * cfg.epochs))


def fine_tune(
    model: torch.nn.Module,
    features: Sequence[dict],
    *,
    cfg: TrainConfig,
    seed: int,
    pad_token_id: int,
    desc: str = "fine-tuning",
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor], np.ndarray], torch.Tensor] | None = None,
    after_step: Callable[[int, int], None] | None = None,
    checkpoint_steps: Collection[int] = (),
    checkpoint: Callable[[int, int], dict] | None = None,
    autocast: torch.dtype | None = None,
    keep_best: Callable[[dict], float] | None = None,
) -> TrainStats:
    """Train ``model`` in place on ``features`` (inputs plus the labels its forward takes).

    ``loss_fn(model, batch, index)`` replaces the model's own loss (``index``: the batch's feature
    indices, for per-example targets such as a teacher's outputs); ``after_step(step, total)`` runs
    after each optimizer step (to re-apply pruning masks, say). ``checkpoint(step, seen)`` runs in eval mode
    after each of ``checkpoint_steps`` (``seen``: the features trained on so far) and returns a row of the
    learning curve; it reads the model only, so the weights are the same with or without it, and its time
    is left out of ``seconds``. ``autocast`` (a dtype) runs each forward pass and loss under autocast to it;
    backward, the optimizer and the checkpoints stay in the weights' dtype. Its batches are padded to a multiple
    of :data:`AUTOCAST_PAD_MULTIPLE` tokens (masked, as any padding is). ``keep_best(row)`` scores each learning-curve
    row (higher is better): the model then ends with the weights it had at the best checkpoint (the later one on a
    tie), not at the last step, and ``kept_step`` says which.
    """
    if not features:
        raise ValueError("no training features: the training selection is empty")
    if keep_best is not None and (checkpoint is None or not checkpoint_steps):
        raise ValueError("keep_best chooses among checkpoints, and this training has none")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    lengths = [len(f["input_ids"]) for f in features]
    per_epoch, total = step_counts(len(features), cfg)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not _no_decay(n)]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and _no_decay(n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
    )
    device_type = next(model.parameters()).device.type
    pad_multiple = 1 if autocast is None else AUTOCAST_PAD_MULTIPLE
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    paused = 0.0
    curve: list[dict] = []
    step = seen = 0
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (score, step, weights) of the best checkpoint
    with tqdm(total=total, desc=desc, unit="step", mininterval=2.0) as bar:
        while step < total:
            for index in length_grouped_batches(lengths, cfg.batch_size, rng):
                if step == total:
                    break
                batch = collate([features[i] for i in index], pad_token_id, multiple=pad_multiple)
                with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
                    loss = loss_fn(model, batch, index) if loss_fn is not None else model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                step += 1
                seen += len(index)
                if after_step is not None:
                    after_step(step, total)
                if checkpoint is not None and step in checkpoint_steps:
                    began = time.perf_counter()
                    model.eval()
                    curve.append({"step": step, "seen": seen, "train_loss": float(np.mean(losses[-50:])),
                                  **checkpoint(step, seen)})
                    if keep_best is not None and (best is None or keep_best(curve[-1]) >= best[0]):
                        best = (keep_best(curve[-1]), step,
                                {k: v.detach().clone() for k, v in model.state_dict().items()})
                    model.train()
                    paused += time.perf_counter() - began
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    if best is not None and best[1] != step:
        model.load_state_dict(best[2])
    model.eval()
    return TrainStats(
        examples=len(features),
        steps=total,
        epochs=cfg.epochs,
        seconds=time.perf_counter() - start - paused,
        final_loss=float(np.mean(losses[-50:])),
        curve=tuple(curve),
        kept_step=None if best is None else best[1],
    )


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
