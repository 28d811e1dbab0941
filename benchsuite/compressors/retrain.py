"""The pattern of seven compressors: reshape the model, then recover it by training.

``distill``, ``heads``, ``ffn``, ``low_rank``, ``factorized_embedding``, ``cross_layer`` and
``albert`` each make one structural change (``reshape``: fewer layers, fewer heads or neurons,
factorised or shared weights), record it as the layout, and then fine-tune the changed model
with the distillation loss against the original fine-tuned teacher
(:func:`benchsuite.distillation.recovery.recover`). ``restructure`` replays the change on a
skeleton without data, so a saved model, or a pipeline's model whose stages changed it one
after another, reloads tensor for tensor.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch

from benchsuite.compressors.base import CompressionResult
from benchsuite.compressors.rebuild import RebuiltCompressor
from benchsuite.distillation.recovery import RECOVERY_NEEDS, recover


class ReshapeAndRecover(RebuiltCompressor):
    NEEDS = RECOVERY_NEEDS

    @abstractmethod
    def reshape(self, model: torch.nn.Module, *, context) -> dict:
        """Change ``model``'s structure in place, from data where needed; return the layout that
        :meth:`restructure` replays."""

    @abstractmethod
    def recovery_description(self, layout: dict) -> str:
        """The progress bar's text for the recovery that follows (``recovering 6 shared layers``)."""

    def during_recovery(self, model: torch.nn.Module, layout: dict) -> Callable[[int, int], None] | None:
        """What runs after each recovery step (``after_step(step, total)``), for a change made gradually
        while the model trains rather than all at once before; by default nothing."""
        return None

    def compress(self, model: torch.nn.Module, *, context) -> CompressionResult:
        layout = self.reshape(model, context=context)
        # Hidden-state matching maps student layers evenly onto the teacher's (identity when depths agree).
        recovery = recover(model, context=context, options=self.config, desc=self.recovery_description(layout),
                           after_step=self.during_recovery(model, layout))
        return CompressionResult(model, layout=layout, recovery=recovery)
