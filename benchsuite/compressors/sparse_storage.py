"""Sparse storage: a state dict whose tensors are mostly zeros, saved so that the file itself is small.

A floating-point tensor is stored as a bitmask of its nonzero positions (``np.packbits``, one bit an
element) plus its nonzero values in order, whenever that is smaller than the dense tensor: for fp32,
when more than 1/32 of it is zero. At 90% zeros that is 0.1 x 4 + 1/8 = 0.525 bytes an element
instead of 4 (7.6x smaller). Other tensors stay as they are. The shapes of the packed tensors travel
in the safetensors header's metadata. Unpacking rebuilds the dense tensors exactly (a negative zero
comes back as +0.0, which compares equal), so a reloaded model computes what the saved one did: this
is storage only, inference still runs dense kernels.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

MASK, VALUES = ".__sparse_mask", ".__sparse_values"
METADATA_KEY = "benchsuite_sparse"  # {name: shape} of the tensors stored packed


def packed_bytes(tensor: torch.Tensor) -> int:
    """The bytes ``tensor`` takes packed: its bitmask plus its nonzero values."""
    return math.ceil(tensor.numel() / 8) + int(torch.count_nonzero(tensor)) * tensor.element_size()


def pack(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors to write (mostly-zero ones as mask + values) and the header metadata that names them."""
    out: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, tensor in tensors.items():
        if name.endswith((MASK, VALUES)):
            raise ValueError(f"state dict name {name!r} ends like a packed tensor's; rename it")
        if tensor.is_floating_point() and packed_bytes(tensor) < tensor.numel() * tensor.element_size():
            flat = tensor.detach().reshape(-1)
            mask = flat != 0
            out[name + MASK] = torch.from_numpy(np.packbits(mask.numpy()))
            out[name + VALUES] = flat[mask].contiguous()
            shapes[name] = list(tensor.shape)
        else:
            out[name] = tensor
    # nothing packed, no header entry: the file is then byte for byte the plain safetensors one
    return out, ({METADATA_KEY: json.dumps(shapes, sort_keys=True)} if shapes else {})


def unpack(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> dict[str, torch.Tensor]:
    """The dense state dict :func:`pack` was given."""
    shapes = json.loads((metadata or {}).get(METADATA_KEY, "{}"))
    out = {name: t for name, t in tensors.items() if not name.endswith((MASK, VALUES))}
    for name, shape in shapes.items():
        values, bits = tensors[name + VALUES], tensors[name + MASK]
        count = math.prod(shape)
        mask = torch.from_numpy(np.unpackbits(bits.numpy(), count=count).astype(bool))
        if int(mask.sum()) != values.numel():
            raise ValueError(f"{name}: its mask marks {int(mask.sum())} nonzeros but {values.numel()} values are "
                             f"stored: the file is damaged")
        dense = torch.zeros(count, dtype=values.dtype)
        dense[mask] = values
        out[name] = dense.view(shape)
    return out
