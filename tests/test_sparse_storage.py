"""Sparse storage: mostly-zero tensors saved as bitmask + values, rebuilt exactly, and a smaller file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import BertForSequenceClassification

from benchsuite.compressors import sparse_storage
from benchsuite.compressors.base import CompressionResult
from benchsuite.compressors.prune.magnitude import Magnitude, MagnitudeConfig
from benchsuite.compressors.rebuild import SPARSE_FILE, load_state, save_state
from benchsuite.testing import tiny_config


def _sparse(shape: tuple[int, ...], zeros: float, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tensor = torch.randn(shape, generator=g).to(dtype)
    tensor[torch.rand(shape, generator=g) < zeros] = 0
    return tensor


def test_pack_keeps_exactly_the_tensors_worth_packing_and_unpack_rebuilds_them() -> None:
    tensors = {"w90": _sparse((64, 48), 0.9), "w97_half": _sparse((33, 7), 0.97, torch.float16, seed=1),
               "dense": _sparse((64, 48), 0.0, seed=2), "barely": _sparse((64, 64), 0.01, seed=3),
               "ids": torch.arange(10), "empty": torch.zeros(0)}
    packed, metadata = sparse_storage.pack(tensors)
    assert set(packed) == {"w90.__sparse_mask", "w90.__sparse_values", "w97_half.__sparse_mask",
                           "w97_half.__sparse_values", "dense", "barely", "ids", "empty"}
    w90 = tensors["w90"]
    assert packed["w90.__sparse_mask"].dtype == torch.uint8 and packed["w90.__sparse_mask"].numel() == 64 * 48 // 8
    assert torch.equal(packed["w90.__sparse_values"], w90[w90 != 0])
    assert packed["w97_half.__sparse_values"].dtype == torch.float16
    assert packed["w97_half.__sparse_mask"].numel() == math.ceil(33 * 7 / 8)  # not a whole number of bytes
    rebuilt = sparse_storage.unpack(packed, metadata)
    assert set(rebuilt) == set(tensors)
    for name, tensor in tensors.items():
        assert rebuilt[name].dtype == tensor.dtype and torch.equal(rebuilt[name], tensor), name
    # 90% zeros: a mask bit and 10% of the values, about 0.525 bytes an fp32 element instead of 4
    assert sparse_storage.packed_bytes(w90) == 64 * 48 // 8 + int((w90 != 0).sum()) * 4
    assert sparse_storage.packed_bytes(w90) < 0.6 * w90.numel()


def test_a_damaged_mask_or_a_clashing_name_is_refused() -> None:
    packed, metadata = sparse_storage.pack({"w": _sparse((16, 16), 0.9)})
    packed["w.__sparse_mask"][0] ^= 0xFF  # eight positions flipped
    with pytest.raises(ValueError, match="w: its mask marks .* values are stored: the file is damaged"):
        sparse_storage.unpack(packed, metadata)
    with pytest.raises(ValueError, match="ends like a packed tensor's"):
        sparse_storage.pack({"x.__sparse_mask": torch.zeros(3)})


def test_a_magnitude_pruned_model_saves_a_smaller_file_that_reloads_to_the_same_predictions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(500, num_labels=2)).eval()
    with torch.no_grad():  # prune the encoder's Linears to 90%, as magnitude leaves them
        for module in model.bert.encoder.modules():
            if isinstance(module, torch.nn.Linear):
                weight = module.weight
                weight[weight.abs() < weight.abs().flatten().kthvalue(int(0.9 * weight.numel())).values] = 0
    compressor = Magnitude(MagnitudeConfig(sparsity=0.9))
    compressor.save(CompressionResult(model, layout={"sparsity": 0.9}), tmp_path / "sparse")
    save_state(model.state_dict(), tmp_path, "safetensors")
    dense_size, sparse_size = (tmp_path / "model.safetensors").stat().st_size, \
        (tmp_path / "sparse" / SPARSE_FILE).stat().st_size
    encoder = [p for n, p in model.named_parameters() if n.startswith("bert.encoder") and p.dim() == 2]
    saved_bytes = sum(4 * p.numel() - sparse_storage.packed_bytes(p) for p in encoder)
    # what packing saves, less a longer header: two named entries per packed tensor, and the shapes
    assert 0 < saved_bytes - (dense_size - sparse_size) < 300 * len(encoder)
    assert not (tmp_path / "sparse" / "model.safetensors").exists()

    loaded = Magnitude.load(tmp_path / "sparse")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(1, 500, (3, 12))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    # the generic loader reads the same file
    again = BertForSequenceClassification(tiny_config(500, num_labels=2)).eval()
    load_state(again, tmp_path / "sparse", "sparse")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                 strict=True))


def test_nothing_worth_packing_writes_the_plain_file_byte_for_byte(tmp_path: Path) -> None:
    """A model that pruning left (nearly) dense costs no header entry: not one byte over the baseline's file."""
    tensors = {"dense": _sparse((64, 48), 0.0), "barely": _sparse((64, 64), 0.01, seed=3)}
    assert sparse_storage.pack(tensors) == (tensors, {})
    save_state(tensors, tmp_path, "sparse")
    save_state(tensors, tmp_path, "safetensors")
    assert (tmp_path / SPARSE_FILE).read_bytes() == (tmp_path / "model.safetensors").read_bytes()
