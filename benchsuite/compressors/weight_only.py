"""Weight-only quantisation: ``weight_only_int8``, ``weight_only_int4`` and ``embedding_int8``, with group-wise scales.

Every ``nn.Linear`` (and, with ``embeddings``, the word-embedding table) stores symmetric
integers with one fp32 scale per ``group_size`` consecutive weights of a row
(``benchsuite.quant.groupwise``); activations stay fp32. Saved as safetensors (int8, or
uint8 holding two int4 values). This shrinks storage and resident weights, not compute:
the forward pass dequantises each weight before an fp32 matmul, so on CPU it is slower
than fp32, and the records say so.

``embedding_int8`` quantises the word-embedding table alone (half of MiniLM's parameters) and
leaves the Linears as they are: the last stage after unstructured pruning
(``movement+embedding_int8``), whose sparse fp32 Linears keep their sparse storage and dense
fp32 kernels while the table shrinks 4x. A lookup dequantises only the rows it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from benchsuite.compressors.base import CompressionResult, CompressorConfig
from benchsuite.compressors.rebuild import RebuiltCompressor
from benchsuite.quant.groupwise import GroupQuantEmbedding, GroupQuantLinear
from benchsuite.quant.surgery import embedding_table_name, linear_names, replace_modules


@dataclass(frozen=True)
class GroupQuantConfig(CompressorConfig):
    group_size: int = 64  # weights per scale along a row (a shorter row is one group); must divide each row

    def validate(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")


@dataclass(frozen=True)
class WeightOnlyConfig(GroupQuantConfig):
    embeddings: bool = True  # also store the word-embedding table in groups of the same bits


class _WeightOnly(RebuiltCompressor):
    family = "quantisation"
    bits: ClassVar[int]
    config_class = WeightOnlyConfig
    quantises_linears: ClassVar[bool] = True

    trainable_output = False  # packed integer weights

    def _quantises_table(self) -> bool:
        return self.config.embeddings

    def compress(self, model, *, context):
        return CompressionResult(self._replace(model, quantize=True))

    def restructure(self, model: nn.Module, layout: dict) -> nn.Module:
        return self._replace(model, quantize=False)  # empty layers: the saved state fills them

    def _replace(self, model: nn.Module, *, quantize: bool) -> nn.Module:
        bits = self.bits
        names = linear_names(model) if self.quantises_linears else []
        for name in names:  # fail before changing anything
            self._group(model.get_submodule(name).in_features, name)
        if self._quantises_table():  # after factorized_embedding: its V x E table
            self._group(model.get_submodule(embedding_table_name(model)).embedding_dim, "the word embeddings")

        def linear(old: nn.Linear) -> GroupQuantLinear:
            group = self._group(old.in_features)
            if quantize:
                return GroupQuantLinear.from_linear(old, bits=bits, group_size=group)
            return GroupQuantLinear(old.in_features, old.out_features, bias=old.bias is not None, bits=bits,
                                    group_size=group)

        def embedding(old: nn.Embedding) -> GroupQuantEmbedding:
            group = self._group(old.embedding_dim, "the word embeddings")
            if quantize:
                return GroupQuantEmbedding.from_embedding(old, bits=bits, group_size=group)
            return GroupQuantEmbedding(old.num_embeddings, old.embedding_dim, bits=bits, group_size=group,
                                       padding_idx=old.padding_idx)

        replace_modules(model, names, linear)
        if self._quantises_table():
            replace_modules(model, [embedding_table_name(model)], embedding)
        return model.eval()

    def _group(self, width: int, name: str = "") -> int:
        group = min(self.config.group_size, width)
        if width % group:
            raise ValueError(f"group_size {group} does not divide the {width} inputs of {name}; "
                             f"choose a divisor of {width}")
        return group


class WeightOnlyInt8(_WeightOnly):
    name = "weight_only_int8"
    bits = 8
    search_space = {}  # 8 bits lose little at the default group size: the defaults only


class WeightOnlyInt4(_WeightOnly):
    name = "weight_only_int4"
    bits = 4
    search_space = {"group_size": (32, 64, 128)}  # at 4 bits the group size trades accuracy for size


class EmbeddingInt8(_WeightOnly):
    """The word-embedding table in int8 groups; every Linear (dense or sparse) stays fp32."""

    name = "embedding_int8"
    bits = 8
    config_class = GroupQuantConfig
    quantises_linears = False
    # every Linear is still fp32 (csr can follow it); a stage that trains after it leaves the int8 table frozen
    trainable_output = True
    # not searched: the quantisers the optimiser may end on store the table in int8 already
    search_space = None

    def _quantises_table(self) -> bool:
        return True
