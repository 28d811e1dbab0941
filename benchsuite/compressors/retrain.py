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

    def compress(self, model: torch.nn.Module, *, context) -> CompressionResult:
        layout = self.reshape(model, context=context)
        # Hidden-state matching maps student layers evenly onto the teacher's (identity when depths agree).
        recovery = recover(model, context=context, options=self.config, desc=self.recovery_description(layout))
        return CompressionResult(model, layout=layout, recovery=recovery)
