"""benchmarks/layer_distance.py's arithmetic: distances between the layers a shared group merges."""

from __future__ import annotations

import pytest
import torch

from benchmarks.layer_distance import distances


def test_a_rank_one_difference_is_measured_exactly():
    torch.manual_seed(0)
    weight = torch.randn(16, 8)
    u, v = torch.randn(16, 1), torch.randn(1, 8)
    other = weight + u @ v  # the two members differ by a rank-1 matrix; their average is weight + uv/2
    rows = distances([{"dense": weight}, {"dense": other}])["dense"]
    half = float((u @ v).norm() / 2)
    assert rows[0]["from_average"] == pytest.approx(half / float(weight.norm()), abs=1e-4)
    assert rows[1]["from_average"] == pytest.approx(half / float(other.norm()), abs=1e-4)
    assert rows[0]["from_first"] == 0.0
    assert rows[1]["from_first"] == pytest.approx(2 * half / float(other.norm()), abs=1e-4)
    assert all(row[f"rank{r}_energy"] == pytest.approx(1.0) for row in rows for r in (8, 16, 32, 64))


def test_equal_members_are_at_distance_zero_and_a_full_rank_difference_is_spread():
    torch.manual_seed(1)
    weight = torch.randn(64, 64)
    assert distances([{"w": weight}, {"w": weight.clone()}])["w"][0] == {
        "from_average": 0.0, "from_first": 0.0, "rank8_energy": 1.0, "rank16_energy": 1.0, "rank32_energy": 1.0,
        "rank64_energy": 1.0}
    spread = distances([{"w": weight}, {"w": torch.randn(64, 64)}])["w"][1]
    assert spread["rank8_energy"] < 0.5 < spread["rank32_energy"] < spread["rank64_energy"] == pytest.approx(1.0)
