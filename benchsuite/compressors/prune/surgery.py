"""Cutting heads and feed-forward neurons out of a BERT-like encoder layer, in place.

A layer is reached as BERT, RoBERTa and ELECTRA name it: ``attention.self.{query,key,value}``,
``attention.output.dense``, ``intermediate.dense`` and ``output.dense``. Removing head h removes
rows ``h*d .. (h+1)*d - 1`` (d: the head size) of the query, key and value projections and the
same columns of ``attention.output.dense``; removing neuron j removes row j of
``intermediate.dense`` and column j of ``output.dense``. The model then computes exactly what it
computed with those heads' context vectors or those neurons' activations set to zero.

Layers may end with different numbers of heads and neurons: the model config's
``num_attention_heads`` and ``intermediate_size`` stay as they were (they are global), and the
per-layer sizes live on the modules (``num_attention_heads``, ``all_head_size``, the Linears).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def check_layer(layer: nn.Module, index: int) -> None:
    """Fail clearly on a layer that is not laid out as BERT's."""
    for path in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "intermediate.dense", "output.dense"):
        try:
            module = layer.get_submodule(path)
        except AttributeError:
            module = None
        if not isinstance(module, nn.Linear):
            raise ValueError(f"encoder layer {index} has no nn.Linear at {path}: structured pruning handles "
                             f"BERT-like layers ({type(layer).__name__} is not one)")


def head_count(layer: nn.Module) -> int:
    return layer.attention.self.num_attention_heads


def neuron_count(layer: nn.Module) -> int:
    return layer.intermediate.dense.out_features


def keep_heads(layer: nn.Module, kept: Sequence[int]) -> None:
    """Keep the attention heads ``kept`` (indices into the layer's current heads, at least one)."""
    attention = layer.attention.self
    if not kept or len(set(kept)) != len(kept) or not all(0 <= h < attention.num_attention_heads for h in kept):
        raise ValueError(f"kept heads must be distinct indices in 0..{attention.num_attention_heads - 1}, "
                         f"at least one; got {list(kept)}")
    size = attention.attention_head_size
    rows = torch.cat([torch.arange(h * size, (h + 1) * size) for h in sorted(kept)])
    for name in ("query", "key", "value"):
        _slice_linear(getattr(attention, name), rows, dim=0)
    _slice_linear(layer.attention.output.dense, rows, dim=1)
    # BertSelfAttention reshapes with -1 heads of attention_head_size each, so these two are bookkeeping.
    attention.num_attention_heads = len(kept)
    attention.all_head_size = len(kept) * size


def keep_neurons(layer: nn.Module, kept: Sequence[int]) -> None:
    """Keep the feed-forward neurons ``kept`` (indices into the layer's current neurons, at least one)."""
    count = neuron_count(layer)
    if not kept or len(set(kept)) != len(kept) or not all(0 <= j < count for j in kept):
        raise ValueError(f"kept neurons must be distinct indices in 0..{count - 1}, at least one; "
                         f"got {len(kept)} indices")
    index = torch.tensor(sorted(kept))
    _slice_linear(layer.intermediate.dense, index, dim=0)
    _slice_linear(layer.output.dense, index, dim=1)


def _slice_linear(linear: nn.Linear, index: torch.Tensor, *, dim: int) -> None:
    """Keep output rows (dim 0, with their biases) or input columns (dim 1) ``index`` of ``linear``."""
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight.index_select(dim, index.to(linear.weight.device)))
        if dim == 0:
            if linear.bias is not None:
                linear.bias = nn.Parameter(linear.bias.index_select(0, index.to(linear.bias.device)))
            linear.out_features = len(index)
        else:
            linear.in_features = len(index)
