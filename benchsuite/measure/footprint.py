"""Size of a model: parameters (shared storage counted once), non-zeros, and bytes on disk.

Tied or shared weights (the word embedding tied to an output layer, ALBERT-style
layers that are one module used many times) are one tensor storage seen under
several names; counting by name double-counts them. Here each distinct storage is
counted once, by its data pointer and size.

Quantized weights are not parameters: torch.ao's quantized modules keep them packed
(read back through their ``weight()``/``bias()`` methods), and a module of another
format (int4 groups, an ONNX Runtime session) lists the tensors it stores through a
``compressed_weights()`` method. Both count here, as elements in their stored dtype, so
that an int8 model has as many parameters as its fp32 source; bytes are what the disk
size reports.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_model


@dataclass(frozen=True)
class Footprint:
    params: int  # elements in distinct parameter storages
    params_nonzero: int  # of those, the non-zero ones
    params_by_name: int  # the naive count, one per name: differs when storage is shared
    method: str = ("distinct parameter storages (by data pointer), each counted once, plus quantized weights "
                   "(torch.ao packed weight()/bias(), compressed_weights()); other buffers excluded")

    def to_json(self) -> dict:
        return asdict(self)


def footprint(model: torch.nn.Module) -> Footprint:
    seen: set[tuple[int, int]] = set()
    params = nonzero = by_name = 0
    tensors = [t for _, t in model.named_parameters(remove_duplicate=False)] + stored_weights(model)
    for tensor in tensors:
        by_name += tensor.numel()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        params += tensor.numel()
        nonzero += int(torch.count_nonzero(_values(tensor.detach())))
    return Footprint(params=params, params_nonzero=nonzero, params_by_name=by_name)


def stored_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """Weights held outside ``parameters()``: torch.ao packed weights and ``compressed_weights()``."""
    found: list[torch.Tensor] = []
    for module in model.modules():
        if callable(getattr(module, "compressed_weights", None)):
            found += list(module.compressed_weights())
        elif _is_torch_ao_quantized(module):
            for name in ("weight", "bias"):
                method = getattr(module, name, None)
                value = method() if callable(method) else None
                if isinstance(value, torch.Tensor):
                    found.append(value)
    return found


def _is_torch_ao_quantized(module: torch.nn.Module) -> bool:
    """A torch.ao quantized module, or a subclass of one (benchsuite's 8-bit-activation Linear)."""
    return any(cls.__module__.startswith("torch.ao.nn.quantized") for cls in type(module).__mro__)


def _values(tensor: torch.Tensor) -> torch.Tensor:
    """What the tensor stands for: a quantized tensor's zero is its zero point, so read it dequantized."""
    return tensor.dequantize() if tensor.is_quantized else tensor


@dataclass(frozen=True)
class DiskSize:
    size_bytes: int  # the serialized model file
    gzip_bytes: int  # that file gzip-compressed (level 6): what unstructured zeros really save
    format: str
    method: str = "state dict saved with safetensors.torch.save_model (shared tensors stored once), then gzip -6"

    def to_json(self) -> dict:
        return asdict(self)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx")


def disk_size(model: torch.nn.Module) -> DiskSize:
    """Bytes of the model serialized as safetensors, and of that file gzip-compressed."""
    with tempfile.TemporaryDirectory() as folder:
        save_model(model, str(Path(folder) / "model.safetensors"))
        return saved_size(Path(folder), format="safetensors")


def saved_size(folder: Path, *, format: str, method: str | None = None, extra: Sequence[Path] = ()) -> DiskSize:
    """Bytes of the weight files a compressor saved in ``folder`` (configs and tokenizer excluded), plus the
    ``extra`` files (the tokenizer of a compressor that changed it, part of what it ships)."""
    weights = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        raise ValueError(f"{folder} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    files = weights + sorted(Path(p) for p in extra)
    also = f" plus its own tokenizer's files ({', '.join(Path(p).name for p in extra)})" if extra else ""
    return DiskSize(size_bytes=sum(p.stat().st_size for p in files), gzip_bytes=sum(map(_gzip_size, files)),
                    format=format,
                    method=method or f"bytes of the saved weight files ({', '.join(p.name for p in weights)}){also}, "
                                     f"then each gzip -6")


def _gzip_size(path: Path) -> int:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    total = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            total += len(compressor.compress(chunk))
    return total + len(compressor.flush())
