"""Weight-only quantisation with group-wise scales: int8, or int4 packed two to a byte.

Each row of a weight is cut into groups of ``group_size`` consecutive inputs; a group
stores symmetric integers ``q = round(w / s)`` with one fp32 scale ``s = max|w| / qmax``
(qmax 127 for int8, 7 for int4; zero stays exactly zero). Activations stay fp32: the
forward pass dequantises the weight (or, for an embedding, only the rows it looks up) and
runs the fp32 kernel. These layers therefore shrink the model on disk and in memory but
do not make it faster on CPU: there is no int4/int8-weight fp32-activation matmul kernel
in torch for x86, and the dequantisation costs time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QMAX = {8: 127, 4: 7}


def quantize_groups(weight: torch.Tensor, *, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [rows, cols] -> (int8 values in [-qmax, qmax] [rows, cols], fp32 scales [rows, groups])."""
    if bits not in QMAX:
        raise ValueError(f"bits must be one of {sorted(QMAX)}, got {bits}")
    rows, cols = weight.shape
    if group_size <= 0 or cols % group_size:
        raise ValueError(f"group_size {group_size} must be positive and divide the {cols} input features")
    groups = weight.detach().float().reshape(rows, cols // group_size, group_size)
    scales = groups.abs().amax(dim=-1) / QMAX[bits]
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # an all-zero group stays zero
    q = torch.round(groups / scales.unsqueeze(-1)).clamp_(-QMAX[bits], QMAX[bits]).to(torch.int8)
    return q.reshape(rows, cols), scales


def dequantize_groups(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    rows, cols = q.shape
    groups = scales.shape[-1]
    return (q.reshape(rows, groups, cols // groups).float() * scales.unsqueeze(-1)).reshape(rows, cols)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7], even column count -> uint8 with two values per byte (low nibble first)."""
    if q.shape[-1] % 2:
        raise ValueError(f"int4 packing needs an even number of columns, got {q.shape[-1]}")
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


class _GroupQuantized(nn.Module):
    """Holds one quantised [rows, cols] matrix: ``qweight`` (int8, or packed uint8 for int4) and ``scales``."""

    def __init__(self, rows: int, cols: int, *, bits: int, group_size: int):
        super().__init__()
        if bits not in QMAX:
            raise ValueError(f"bits must be one of {sorted(QMAX)}, got {bits}")
        if group_size <= 0 or cols % group_size:
            raise ValueError(f"group_size {group_size} must be positive and divide {cols}")
        self.bits, self.group_size = bits, group_size
        packed_cols = cols // 2 if bits == 4 else cols
        dtype = torch.uint8 if bits == 4 else torch.int8
        self.register_buffer("qweight", torch.zeros(rows, packed_cols, dtype=dtype))
        self.register_buffer("scales", torch.ones(rows, cols // group_size))

    def set_weight(self, weight: torch.Tensor) -> None:
        q, scales = quantize_groups(weight, bits=self.bits, group_size=self.group_size)
        self.qweight.copy_(pack_int4(q) if self.bits == 4 else q)
        self.scales.copy_(scales)

    def int_values(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        q = self.qweight if rows is None else self.qweight[rows]
        return unpack_int4(q) if self.bits == 4 else q

    def dequantized(self) -> torch.Tensor:
        return dequantize_groups(self.int_values(), self.scales)

    def compressed_weights(self) -> list[torch.Tensor]:
        """The stored integers, one element per weight (unpacked for int4), for the footprint."""
        return [self.int_values()]


class GroupQuantLinear(_GroupQuantized):
    def __init__(self, in_features: int, out_features: int, *, bias: bool, bits: int, group_size: int):
        super().__init__(out_features, in_features, bits=bits, group_size=group_size)
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, bits: int, group_size: int) -> GroupQuantLinear:
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, bits=bits,
                    group_size=group_size)
        with torch.no_grad():
            layer.set_weight(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int{self.bits}, group={self.group_size}"


class GroupQuantEmbedding(_GroupQuantized):
    """An embedding table quantised row by row; a lookup dequantises only the rows it reads."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, bits: int, group_size: int,
                 padding_idx: int | None = None):
        super().__init__(num_embeddings, embedding_dim, bits=bits, group_size=group_size)
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, *, bits: int, group_size: int) -> GroupQuantEmbedding:
        layer = cls(embedding.num_embeddings, embedding.embedding_dim, bits=bits, group_size=group_size,
                    padding_idx=embedding.padding_idx)
        with torch.no_grad():
            layer.set_weight(embedding.weight)
        return layer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        rows = dequantize_groups(self.int_values(flat), self.scales[flat])
        return rows.reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int{self.bits}, group={self.group_size}"
