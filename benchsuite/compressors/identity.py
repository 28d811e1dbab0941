"""The uncompressed baseline: the fine-tuned model as it is. Every retention figure divides by it."""

from __future__ import annotations

from dataclasses import dataclass

from benchsuite.compressors.base import CompressionResult, Compressor, CompressorConfig


@dataclass(frozen=True)
class BaselineConfig(CompressorConfig):
    """No options: the baseline is the fine-tuned model itself."""


class Baseline(Compressor):
    family = "baseline"
    name = "baseline"
    config_class = BaselineConfig

    def compress(self, model, *, context):
        return CompressionResult(model)
