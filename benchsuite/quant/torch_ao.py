"""torch.ao eager-mode int8: the quantized engine, and silence for its deprecation notices.

torch.ao's eager ``quantize_dynamic`` and ``prepare``/``convert`` print a migration notice
(to torchao) on every call. Measured here (``benchmarks/quant_backends.py``), torchao's int8
path ran far slower than torch.ao's fbgemm kernels on CPU, so torch.ao stays the backend and
the notice is silenced where these helpers call it.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.ao.nn.quantized.dynamic as nnqd
from torch import nn
from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings

ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


def set_engine(engine: str) -> None:
    """Select the quantized kernel library (process-wide: packed weights belong to the engine that packed them)."""
    supported = torch.backends.quantized.supported_engines
    if engine not in supported:
        raise ValueError(f"quantized engine {engine!r} is not available in this torch build (available: "
                         f"{', '.join(e for e in supported if e != 'none')})")
    torch.backends.quantized.engine = engine


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*(torchao|deprecat|migrat)")
        warnings.filterwarnings("ignore", message=r"(?s).*must run observer before calling calculate_qparams")
        warnings.filterwarnings("ignore", message=r"(?s).*_aminmax is deprecated")
        yield


VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# Engines whose x86 int8 kernels accumulate in int16 without VNNI (torch's reason for 7-bit activations).
INT16_ACCUMULATING_ENGINES = ("x86", "fbgemm")


def check_full_range(engine: str, cpu_flags: list[str]) -> None:
    """8-bit activations (``reduce_range=False``) are exact only where the int8 GEMM accumulates in int32.

    Without VNNI, fbgemm's x86 kernels sum pairs of u8 x s8 products in int16 (``vpmaddubsw``), which
    saturates for 8-bit activations; torch therefore quantises activations to 7 bits by default.
    """
    if engine in INT16_ACCUMULATING_ENGINES and not VNNI_FLAGS & set(cpu_flags):
        raise ValueError(f"reduce_range=False needs a CPU with VNNI (avx512_vnni or avx_vnni) for the {engine} "
                         "engine: without it the int8 kernel saturates; keep reduce_range=True on this machine")


class FullRangeDynamicLinear(nnqd.Linear):
    """torch.ao's dynamic int8 Linear with 8-bit activations (it hard-codes ``reduce_range=True``: 7 bits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                  reduce_range=False).to(x.dtype)

    def _get_name(self) -> str:
        return "DynamicQuantizedLinear(8-bit activations)"


def dynamic_mapping(*, reduce_range: bool) -> dict:
    """torch.ao's float -> dynamic-quantized module mapping, with 8-bit-activation Linears when asked."""
    mapping = dict(get_default_dynamic_quant_module_mappings())
    if not reduce_range:
        mapping[nn.Linear] = FullRangeDynamicLinear
    return mapping
