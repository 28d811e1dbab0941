"""Half-precision casts: ``fp16`` and ``bf16``. Every floating-point weight and activation in that dtype.

Halves the size on disk and in memory. Whether it is faster depends on the CPU's support:
without native half-precision matmul (AVX512-FP16, AMX-BF16) torch converts on the fly
and it is usually slower than fp32; the verdict column reports what was measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from benchsuite.compressors.base import CompressionResult, CompressorConfig
from benchsuite.compressors.rebuild import RebuiltCompressor


@dataclass(frozen=True)
class CastConfig(CompressorConfig):
    """No options: the dtype is the compressor's."""


class _Cast(RebuiltCompressor):
    family = "quantisation"
    dtype: ClassVar[torch.dtype]
    config_class = CastConfig
    search_space = {}  # fp16 and bf16 have no options: the defaults only

    trainable_output = False  # half-precision weights: recovery training runs in fp32

    def compress(self, model, *, context):
        return CompressionResult(self.restructure(model, {}))

    def restructure(self, model: nn.Module, layout: dict) -> nn.Module:
        return model.to(self.dtype).eval()


class Fp16(_Cast):
    name = "fp16"
    dtype = torch.float16
    compute = "fp16"


class Bf16(_Cast):
    name = "bf16"
    dtype = torch.bfloat16
    compute = "bf16"
