"""Recovery fine-tuning with an optional distillation loss: one loop for every method that trains.

A compressor whose config subclasses :class:`RecoveryConfig` calls :func:`recover` on the model
it produced. The loss is ``(1 - alpha) * hard + alpha * soft`` plus optional hidden-state and
attention matching terms, where ``hard`` is the task's own loss on the gold labels and ``soft``
the temperature-softened KL to the teacher's cached outputs (``benchsuite.distillation.loss``).
``alpha = 0`` trains on the hard labels alone: the ablation that shows what the teacher bought.
Epochs and learning rate default to the baseline's, so a recovered model has seen as much data
as the model it came from. Where the task holds dev rows out (SQuAD), recovery scores them every
half epoch as the baseline's training does, and the record keeps that curve under ``recovery.curve``.

``train_precision=bf16`` runs the forward passes of recovery under bf16 autocast: the weights, the
optimizer and the losses stay fp32, and the model that is saved and scored is fp32. On a CPU with
AMX or AVX512-BF16 the matmuls run natively; without them bf16 is emulated and far slower, so it is
never the default, and the run warns.

``attention_dropout`` replaces the model's dropout on attention probabilities during recovery (the saved
model keeps its own). With dropout there, torch's CPU attention runs its unfused path; at 0 its fused
kernel runs. ``benchmarks/recovery_step.py`` times both options on this machine.

``transfer=stsb,rte`` adds those tasks' training rows, unlabelled, to the training features (a transfer set,
:mod:`benchsuite.distillation.transfer`): on them only the teacher's outputs and hidden states teach, and a
batch of them alone has no hard loss. Epochs then count passes over both.

``keep_best=true``, where the task holds dev rows out, ends recovery with the weights of the half-epoch checkpoint
whose dev score (the task's primary metric) is best, rather than the last step's; ``recovery.kept_step`` says which.
The evaluated rows play no part in the choice. A compressor that acts after each step (pruning, gradual tying) rules
it out: an earlier checkpoint could hold less of its change.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from benchsuite.compressors.base import CompressorConfig
from benchsuite.distillation.loss import attention_loss, hidden_loss, soft_loss
from benchsuite.engine import IGNORED_LABEL, model_inputs
from benchsuite.machine import cpu_vector_flags
from benchsuite.train import fine_tune

RECOVERY_NEEDS = frozenset({"train_data", "teacher", "teacher_outputs", "transfer_data"})


@dataclass(frozen=True)
class RecoveryConfig(CompressorConfig):
    """Options of recovery fine-tuning, shared by every compressor that trains."""

    alpha: float = 0.5  # weight of the distillation loss; 0: hard labels only (the ablation)
    temperature: float = 2.0  # softmax temperature of the distillation loss (soft targets)
    hidden_weight: float = 0.0  # hidden-state matching, off by default
    hidden_distance: str = "mse"  # or "cosine"
    attention_weight: float = 0.0  # TinyBERT attention matching, off by default (runs eager attention)
    epochs: float | None = None  # None: the baseline's; 0: no recovery
    learning_rate: float | None = None  # None: the baseline's
    train_precision: str = "fp32"  # or "bf16": forward passes under bf16 autocast (fp32 weights and losses)
    attention_dropout: float | None = None  # dropout on attention probabilities; None: the model's own (BERT: 0.1)
    transfer: tuple[str, ...] = ()  # tasks whose training rows join recovery unlabelled (a transfer set)
    keep_best: bool = False  # end with the checkpoint of the best dev score (tasks with dev rows only)

    LATE_OPTIONS: ClassVar[tuple[str, ...]] = ("train_precision", "attention_dropout", "transfer", "keep_best")

    def validate(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("hidden_weight", "attention_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.hidden_distance not in ("mse", "cosine"):
            raise ValueError(f"hidden_distance must be 'mse' or 'cosine', got {self.hidden_distance!r}")
        if self.epochs is not None and not self.epochs >= 0:
            raise ValueError(f"epochs must be >= 0 (0: no recovery), got {self.epochs}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.attention_dropout is not None and not 0 <= self.attention_dropout < 1:
            raise ValueError(f"attention_dropout must be in [0, 1), got {self.attention_dropout}")
        if len(set(self.transfer)) != len(self.transfer) or not all(self.transfer):
            raise ValueError(f"transfer must name distinct tasks, got {list(self.transfer)}")
        if self.transfer and self.alpha == 0 and self.hidden_weight == 0 and self.attention_weight == 0:
            raise ValueError("transfer rows have no labels, so they teach only through the teacher: set alpha > 0 "
                             "or hidden_weight/attention_weight > 0 with transfer")
        if self.train_precision not in TRAIN_PRECISIONS:
            raise ValueError(f"train_precision must be one of {sorted(TRAIN_PRECISIONS)}, got {self.train_precision!r}")


TRAIN_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # the autocast dtype of each (None: no autocast)
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # CPU flags under which bf16 matmuls run natively


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher hidden-state index (0: embeddings) matched to each student layer's output, evenly spread:
    3 of 6 layers -> [2, 4, 6], as DistilBERT and TinyBERT map them."""
    return [round((j + 1) * teacher_layers / student_layers) for j in range(student_layers)]


def recover(model: torch.nn.Module, *, context, options: RecoveryConfig, desc: str,
            layer_map: Sequence[int] | None = None,
            after_step: Callable[[int, int], None] | None = None) -> dict:
    """Fine-tune ``model`` in place on the task's training data; returns what the record keeps."""
    cfg = context.train_config
    if cfg is None:
        raise ValueError("recovery needs the baseline's training configuration (context.train_config)")
    if options.epochs == 0:
        return {"epochs": 0, "note": "no recovery fine-tuning (epochs=0)"}
    cfg = replace(cfg, epochs=cfg.epochs if options.epochs is None else options.epochs,
                  learning_rate=options.learning_rate or cfg.learning_rate)
    if options.keep_best and context.learning_curve is None:
        raise ValueError(f"keep_best picks recovery's checkpoint by its dev score, and {context.task.name} holds no "
                         "dev rows out (its spec's dataset.train_from_eval.dev_fraction): drop keep_best for this task")
    if options.keep_best and after_step is not None:
        raise ValueError("keep_best cannot be used with a compressor that acts on the model after each recovery "
                         "step (pruning, gradual tying): a past checkpoint holds less of its change; drop keep_best")
    transfer = context.transfer_data(options.transfer) if options.transfer else None
    features = context.train_data if transfer is None else transfer.features
    if options.alpha == 0:
        targets = None
    else:
        targets = context.teacher_outputs if transfer is None else transfer.teacher_outputs
    matching = options.hidden_weight > 0 or options.attention_weight > 0
    teacher = context.teacher if matching else None
    if matching and layer_map is None:
        layer_map = uniform_layer_map(model.config.num_hidden_layers, teacher.config.num_hidden_layers)
    implementations = _use_eager([model, teacher]) if options.attention_weight > 0 else []
    autocast = TRAIN_PRECISIONS[options.train_precision]
    if autocast is not None and not set(BF16_FLAGS) & set(cpu_vector_flags()):
        warnings.warn(f"train_precision={options.train_precision}: this CPU has none of {', '.join(BF16_FLAGS)}, "
                      "so bf16 is emulated and recovery will be slower than in fp32; drop the option here",
                      stacklevel=2)

    def loss_fn(student: torch.nn.Module, batch: dict[str, torch.Tensor], index) -> torch.Tensor:
        labelled = transfer is None or bool((batch["labels"] != IGNORED_LABEL).any())  # a batch of transfer rows alone
        out = student(**(batch if labelled else model_inputs(batch)), output_hidden_states=options.hidden_weight > 0,
                      output_attentions=options.attention_weight > 0)
        loss = out.loss * (1 - options.alpha) if options.alpha < 1 and labelled else 0.0
        if targets is not None:
            width = batch["input_ids"].shape[1]
            soft = [soft_loss(getattr(out, name), *targets.batch(name, index, width), temperature=options.temperature)
                    for name in targets.names]
            loss = loss + options.alpha * sum(soft) / len(soft)
        if teacher is not None:
            mask = batch["attention_mask"].bool()
            with torch.no_grad():
                ref = teacher(**model_inputs(batch),
                              output_hidden_states=options.hidden_weight > 0,
                              output_attentions=options.attention_weight > 0)
            if options.hidden_weight > 0:
                terms = [hidden_loss(out.hidden_states[j + 1], ref.hidden_states[t], mask,
                                     kind=options.hidden_distance) for j, t in enumerate(layer_map)]
                loss = loss + options.hidden_weight * sum(terms) / len(terms)
            if options.attention_weight > 0:
                terms = [attention_loss(out.attentions[j], ref.attentions[t - 1], mask)
                         for j, t in enumerate(layer_map)]
                loss = loss + options.attention_weight * sum(terms) / len(terms)
        return loss

    steps, score_dev = (context.learning_curve(model, len(features), cfg) if context.learning_curve is not None
                        else ((), None))
    dropouts = set_attention_dropout(model, options.attention_dropout)
    try:
        stats = fine_tune(model, features, cfg=cfg, seed=context.seed, pad_token_id=context.tokenizer.pad_token_id,
                          desc=desc, loss_fn=loss_fn, after_step=after_step,
                          checkpoint_steps=steps, checkpoint=score_dev, autocast=autocast,
                          keep_best=_dev_score(context.task.primary_metric) if options.keep_best else None)
    finally:
        for module, implementation in implementations:
            module.set_attn_implementation(implementation)
        for dropout, p in dropouts:
            dropout.p = p
    result = {**stats.to_json(), "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
              "train_precision": options.train_precision}
    if dropouts:
        result["attention_dropout"] = options.attention_dropout
    if transfer is not None:
        result["transfer"] = transfer.facts
    result["final_loss"] = round(result["final_loss"], 5) if math.isfinite(result["final_loss"]) else None
    result["seconds"] = round(result["seconds"], 1)
    return result


def _dev_score(metric: str) -> Callable[[dict], float]:
    """A learning-curve row's dev score on ``metric``: what ``keep_best`` ranks checkpoints by."""
    return lambda row: row["dev_scores"][metric]


def _use_eager(models: list) -> list[tuple[torch.nn.Module, str]]:
    """Switch models to eager attention (the only one that returns attention probabilities)."""
    previous = []
    for module in models:
        if module is not None:
            previous.append((module, module.config._attn_implementation))
            module.set_attn_implementation("eager")
    return previous


ATTENTION_DROPOUT = "attention.self.dropout"  # where BERT-style encoders (BERT, RoBERTa, ELECTRA...) keep it


def set_attention_dropout(model: torch.nn.Module, p: float | None) -> list[tuple[torch.nn.Dropout, float]]:
    """Set the dropout on attention probabilities to ``p`` for recovery; returns each module with its own value,
    to be put back (the saved model keeps its config)."""
    if p is None:
        return []
    found = [(m, m.p) for name, m in model.named_modules()
             if name.endswith(ATTENTION_DROPOUT) and isinstance(m, torch.nn.Dropout)]
    if not found:
        raise ValueError(f"attention_dropout: this model has no BERT-style attention dropout (a module named "
                         f"...{ATTENTION_DROPOUT}); leave the option unset for it")
    for module, _ in found:
        module.p = p
    return found
