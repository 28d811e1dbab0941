"""``csr``: mostly-zero Linears run by a sparse kernel, the last stage after unstructured pruning.

``magnitude`` and ``movement`` leave exact zeros in dense tensors: their files are small (sparse
storage), but the dense kernels still multiply every zero. ``csr`` turns each ``nn.Linear`` with at
least ``min_sparsity`` zero weights into a :class:`CsrLinear`: its nonzero weights in compressed sparse
row form (fp32 values, int32 column indices and row offsets) multiplied by ``torch.sparse.mm`` (MKL's
sparse kernel on x86). Outputs equal the dense ones up to summation order.

Whether it is faster depends on the sparsity, the batch and the CPU, and is measured, not assumed:
``benchmarks/sparse_kernels.py`` times it against dense on this machine, and a ``movement+csr`` cell's
record has its speed at batch 1 and batch 32 like any other. On the 2-core AVX2 machine of
``benchmarks/results/sparse_kernels.json``, at 90% zeros it was 1.49x dense at batch 1 and 0.85x at
batch 32; at 97%, 1.86x and 1.33x. On disk, a CSR weight takes 8 bytes a nonzero (value and int32
column), against the bitmask storage's 4 bytes a nonzero plus 1 bit an element.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from benchsuite.compressors.base import CompressionResult, CompressorConfig
from benchsuite.compressors.rebuild import RebuiltCompressor
from benchsuite.quant.surgery import replace_modules


@dataclass(frozen=True)
class CsrConfig(CompressorConfig):
    min_sparsity: float = 0.5  # a Linear with at least this fraction of zero weights runs the sparse kernel

    def validate(self) -> None:
        if not 0 < self.min_sparsity < 1:
            raise ValueError(f"min_sparsity must be in (0, 1), got {self.min_sparsity}")


class CsrLinear(nn.Module):
    """y = x W^T + b with W in CSR: ``values`` (fp32), ``col_indices`` and ``crow_indices`` (int32) buffers."""

    def __init__(self, in_features: int, out_features: int, nonzeros: int, *, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("crow_indices", torch.zeros(out_features + 1, dtype=torch.int32))
        self.register_buffer("col_indices", torch.zeros(nonzeros, dtype=torch.int32))
        self.register_buffer("values", torch.zeros(nonzeros))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        # a loaded file is checked once (row offsets, column bounds), so that a damaged one fails here, not in MKL
        self.register_load_state_dict_post_hook(_check_loaded)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> CsrLinear:
        with _beta_quiet():
            csr = linear.weight.detach().to_sparse_csr()
        layer = cls(linear.in_features, linear.out_features, csr.values().numel(), bias=linear.bias is not None)
        with torch.no_grad():
            layer.crow_indices.copy_(csr.crow_indices())
            layer.col_indices.copy_(csr.col_indices())
            layer.values.copy_(csr.values())
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def weight_csr(self, *, check: bool = False) -> torch.Tensor:
        """The CSR tensor over the buffers (no copy; built per call, which costs microseconds)."""
        with _beta_quiet():
            return torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.values,
                                           size=(self.out_features, self.in_features), check_invariants=check)

    def dense_weight(self) -> torch.Tensor:
        return self.weight_csr().to_dense()

    def compressed_weights(self) -> list[torch.Tensor]:
        """The weight as the dense matrix it stands for, so that the footprint counts its zeros as parameters."""
        return [self.dense_weight()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.sparse.mm(self.weight_csr(), flat.t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        density = self.values.numel() / (self.in_features * self.out_features)
        return f"in={self.in_features}, out={self.out_features}, csr, density={density:.3f}"


@contextlib.contextmanager
def _beta_quiet() -> Iterator[None]:
    """Without torch's notices that CSR support is in beta and that invariant checks are off by default: the
    kernel is what this module measures, and loading checks the invariants once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        yield


def _check_loaded(module: CsrLinear, _incompatible_keys) -> None:
    module.weight_csr(check=True)


class Csr(RebuiltCompressor):
    family = "pruning"
    name = "csr"
    config_class = CsrConfig
    trainable_output = False  # CSR buffers: nothing left to train
    follows = "magnitude:epochs=0"  # it needs zeros to run: pruning first (conformance runs it after this)

    def compress(self, model: nn.Module, *, context) -> CompressionResult:
        converted: dict[str, int] = {}
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                nonzeros = int(torch.count_nonzero(module.weight))
                if 1 - nonzeros / module.weight.numel() >= self.config.min_sparsity:
                    converted[name] = nonzeros
        if not converted:
            raise ValueError(f"no Linear has at least {self.config.min_sparsity:.0%} zero weights: csr runs the "
                             f"zeros that unstructured pruning left, so put it after it (movement+csr, "
                             f"magnitude+csr), or lower min_sparsity")
        replace_modules(model, list(converted), CsrLinear.from_linear)
        return CompressionResult(model.eval(), layout={"converted": converted, "sparse_kernel": True,
                                                       "kernel": "torch.sparse.mm, CSR weight (int32 indices)"})

    def restructure(self, model: nn.Module, layout: dict) -> nn.Module:
        for name, nonzeros in layout["converted"].items():
            replace_modules(model, [name], lambda old, n=nonzeros: CsrLinear(old.in_features, old.out_features, n,
                                                                             bias=old.bias is not None))
        return model.eval()
