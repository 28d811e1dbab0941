"""Distillation losses: what the student is pulled towards, besides the hard labels.

* ``soft_loss``: the temperature-softened KL divergence to the teacher's distribution
  (Hinton et al. 2015), scaled by T^2 so its gradients keep their size as T changes. What a
  distribution is follows the output's shape: over classes for a sequence label (GLUE), over
  positions for a span start or end (SQuAD), over classes at each real token (NER). A
  regression head (one output) is matched by mean squared error instead.
* ``hidden_loss``: hidden-state matching (MSE or cosine) over real tokens.
* ``attention_loss``: TinyBERT's MSE between attention probabilities over real positions.

Every loss is computed in fp32, whatever the dtype of what it compares (bf16 under autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG = -1e4  # logit given to padding positions, so that they take no probability


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, *,
              temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) * T^2; ``mask`` marks real positions of per-token outputs."""
    if student.shape != teacher.shape:
        raise ValueError(f"student output {tuple(student.shape)} and teacher output {tuple(teacher.shape)} differ")
    student, teacher = student.float(), teacher.float()
    if mask is None and student.shape[-1] == 1:  # a regression head
        return F.mse_loss(student, teacher)
    t = temperature
    if mask is not None and student.dim() == 2:  # a distribution over positions (a span's start or end)
        student = student.masked_fill(~mask, NEG)
        teacher = teacher.masked_fill(~mask, NEG)
        return _kl(student / t, teacher / t).mean() * t * t
    per_row = _kl(student / t, teacher / t)  # (batch,) or (batch, width) for per-token classes
    if mask is not None:
        return per_row[mask].mean() * t * t
    return per_row.mean() * t * t


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL divergence over the last dimension, one value per row."""
    log_p = F.log_softmax(student_logits, dim=-1)
    log_q = F.log_softmax(teacher_logits, dim=-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def hidden_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, *, kind: str) -> torch.Tensor:
    """Distance between hidden states (batch, width, hidden) over the real tokens of ``mask``."""
    s, t = student[mask].float(), teacher[mask].float()
    if kind == "cosine":
        return (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    return F.mse_loss(s, t)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between attention probabilities (batch, heads, width, width), rows and columns of real tokens."""
    if student.shape != teacher.shape:
        raise ValueError(f"attention matching needs the same heads: student {tuple(student.shape)}, "
                         f"teacher {tuple(teacher.shape)}")
    pair = (mask[:, None, :, None] & mask[:, None, None, :]).expand_as(student)
    return F.mse_loss(student[pair].float(), teacher[pair].float())
