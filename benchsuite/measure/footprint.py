"""Size of a model, counted so that shared storage counts once.

Tied or shared weights (the word embedding tied to an output layer, ALBERT-style
layers that are one module used many times) are one tensor storage seen under
several names; counting by name double-counts them. Here each distinct storage is
counted once, by its data pointer and size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Footprint:
    params: int  # elements in distinct parameter storages
    params_nonzero: int  # of those, the non-zero ones
    params_by_name: int  # the naive count, one per name: differs when storage is shared
    method: str = "distinct parameter storages (by data pointer), each counted once; buffers excluded"

    def to_json(self) -> dict:
        return asdict(self)


def footprint(model: torch.nn.Module) -> Footprint:
    seen: set[tuple[int, int]] = set()
    params = nonzero = by_name = 0
    for _, tensor in model.named_parameters(remove_duplicate=False):
        by_name += tensor.numel()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        params += tensor.numel()
        nonzero += int(torch.count_nonzero(tensor.detach()))
    return Footprint(params=params, params_nonzero=nonzero, params_by_name=by_name)
