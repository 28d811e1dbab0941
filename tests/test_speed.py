import time

import pytest
import torch

from benchsuite.measure.speed import Timing, interleaved, verdict


def test_timing_summary_by_hand():
    # 1..100 ms: median 50.5, p90 90.1, IQR 75.25 - 25.75 = 49.5 (numpy's linear interpolation)
    timing = Timing.from_seconds([i / 1000 for i in range(1, 101)])
    assert timing.n == 100
    assert timing.p50_ms == pytest.approx(50.5)
    assert timing.p90_ms == pytest.approx(90.1)
    assert timing.iqr_ms == pytest.approx(49.5)


class Sleeper(torch.nn.Module):
    def __init__(self, seconds: float, log: list, name: str):
        super().__init__()
        self.seconds, self.log, self.name = seconds, log, name

    def forward(self, **batch):
        self.log.append(self.name)
        time.sleep(self.seconds)


def test_interleaved_alternates_and_times_each_model():
    log: list[str] = []
    models = {"a": Sleeper(0.002, log, "a"), "b": Sleeper(0.006, log, "b")}
    times = interleaved(models, [{}, {}], warmup=1, rounds=2)
    assert len(times["a"]) == len(times["b"]) == 4
    # after warm-up (a, b): round 0 runs a then b per input, round 1 b then a
    assert log[2:] == ["a", "b", "a", "b", "b", "a", "b", "a"]
    assert min(times["b"]) > max(times["a"])


@pytest.mark.parametrize(
    ("q25", "q75", "shrank", "expected"),
    [
        (1.10, 1.30, False, "faster"),
        (1.02, 1.30, True, "smaller, not faster"),  # the IQR does not clear 1.05
        (0.80, 0.90, True, "slower"),
        (0.97, 1.03, False, "no measurable change"),
    ],
)
def test_verdict(q25, q75, shrank, expected):
    speed = {"speedup_throughput": {"median": (q25 + q75) / 2, "q25": q25, "q75": q75}}
    assert verdict(speed, shrank=shrank) == expected
