"""Mixed-precision decomposition of outlier input channels (LLM.int8(), Dettmers et al. 2022).

A few input channels of some Linears carry values an order of magnitude above the rest
(MiniLM's FFN layers: one channel near 25-30 against a median near 2). Quantising the
activation per tensor then spends the int8 range on them. Here the ``k`` channels with
the largest calibrated |x| are taken out: the int8 product sees the input with those
channels zeroed, and a small fp32 product of the ``k`` channels with their weight
columns is added back. The cost is one elementwise multiply and an [N, k] x [k, out]
matmul per Linear, so only Linears whose largest channel exceeds ``ratio`` times the
median channel are split (``select``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchsuite.quant.surgery import replace_modules


class OutlierSplitLinear(nn.Module):
    """``linear(x * keep) + x[..., outliers] @ outlier_weight^T``; ``linear`` has the outlier columns zeroed."""

    def __init__(self, linear: nn.Module, *, in_features: int, out_features: int, k: int):
        super().__init__()
        self.linear = linear
        self.register_buffer("outliers", torch.arange(k))
        self.register_buffer("keep", torch.ones(in_features))
        self.outlier_weight = nn.Parameter(torch.zeros(out_features, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.keep) + F.linear(x.index_select(-1, self.outliers), self.outlier_weight)


def select(absmax: dict[str, torch.Tensor], *, ratio: float) -> list[str]:
    """The Linears whose largest calibrated input channel is at least ``ratio`` times their median one."""
    return [name for name, x in absmax.items() if x.max() >= ratio * x.median().clamp(min=1e-12)]


def wrap(model: nn.Module, names: list[str], *, k: int) -> list[str]:
    """Wrap each named Linear (outliers unset); returns the inner Linears' names."""
    def build(linear: nn.Linear) -> nn.Module:
        if k >= linear.in_features:
            raise ValueError(f"outlier_channels {k} must be below the layer's {linear.in_features} inputs")
        return OutlierSplitLinear(linear, in_features=linear.in_features, out_features=linear.out_features, k=k)

    replace_modules(model, names, build)
    return [f"{name}.linear" for name in names]


@torch.no_grad()
def split(model: nn.Module, names: list[str], absmax: dict[str, torch.Tensor]) -> None:
    """Choose each wrapper's outliers by calibrated input |x| and move their weight columns to fp32."""
    for name in names:
        wrapper = model.get_submodule(name)
        k = wrapper.outliers.numel()
        top = torch.topk(absmax[name], k).indices.sort().values
        weight = wrapper.linear.weight
        wrapper.outliers.copy_(top)
        wrapper.outlier_weight.copy_(weight[:, top])
        wrapper.keep.fill_(1.0)
        wrapper.keep[top] = 0.0
        weight[:, top] = 0.0
