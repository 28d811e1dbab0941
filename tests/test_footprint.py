import pytest
import torch
from torch import nn

from benchsuite.measure.footprint import disk_size, footprint


def test_untied_model_counts_every_parameter():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))  # 4*3+3 + 3*2+2 = 23
    fp = footprint(model)
    assert fp.params == 23
    assert fp.params_by_name == 23


def test_tied_weights_count_once():
    embed = nn.Embedding(10, 4)  # 40
    head = nn.Linear(4, 10, bias=False)
    head.weight = embed.weight  # tied, as BERT's decoder is to its word embedding
    model = nn.ModuleDict({"embed": embed, "head": head})
    fp = footprint(model)
    assert fp.params == 40
    assert fp.params_by_name == 80


def test_one_layer_shared_across_depth_counts_once():
    layer = nn.Linear(8, 8)  # 72
    model = nn.ModuleList([layer] * 6)  # ALBERT-style sharing: one module used six times
    assert footprint(model).params == 72


def test_nonzero_parameters():
    model = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, :3] = 1.0
    fp = footprint(model)
    assert (fp.params, fp.params_nonzero) == (100, 3)


def test_disk_size_counts_tied_storage_once_and_gzip_sees_zeros():
    embed = nn.Embedding(1000, 64)  # 64,000 floats: 256,000 bytes
    head = nn.Linear(64, 1000, bias=False)
    head.weight = embed.weight
    model = nn.ModuleDict({"embed": embed, "head": head})
    dense = disk_size(model)
    assert 256_000 <= dense.size_bytes < 256_000 + 1_000  # one copy plus the safetensors header
    assert dense.gzip_bytes > 0.85 * dense.size_bytes  # random floats barely compress

    with torch.no_grad():
        mask = torch.rand_like(embed.weight) < 0.9
        embed.weight[mask] = 0  # 90% zeros
    sparse = disk_size(model)
    assert footprint(model).params_nonzero / footprint(model).params == pytest.approx(0.10, abs=0.01)
    assert sparse.size_bytes == dense.size_bytes  # dense storage: zeros still take 4 bytes each
    assert sparse.gzip_bytes < 0.3 * dense.gzip_bytes
