import pytest
import torch

from benchsuite.measure.speed import NOISY, Timing, interleaved, noise, shrank, verdict


def test_timing_summary_by_hand():
    # 1..100 ms: median 50.5, p90 90.1, IQR 75.25 - 25.75 = 49.5 (numpy's linear interpolation)
    timing = Timing.from_seconds([i / 1000 for i in range(1, 101)])
    assert timing.n == 100
    assert timing.p50_ms == pytest.approx(50.5)
    assert timing.p90_ms == pytest.approx(90.1)
    assert timing.iqr_ms == pytest.approx(49.5)


class Clock:
    """A clock that only the models move: timings exact whatever else the machine is doing."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sleeper(torch.nn.Module):
    def __init__(self, seconds: float, log: list, name: str, clock: Clock):
        super().__init__()
        self.seconds, self.log, self.name, self.clock = seconds, log, name, clock

    def forward(self, **batch):
        self.log.append(self.name)
        self.clock.now += self.seconds


def test_interleaved_alternates_and_times_each_model(monkeypatch):
    from benchsuite.measure import speed

    clock, log = Clock(), []
    monkeypatch.setattr(speed.time, "perf_counter", clock)
    models = {"a": Sleeper(0.002, log, "a", clock), "b": Sleeper(0.006, log, "b", clock)}
    times = interleaved(models, [{}, {}], warmup=1, rounds=2)
    # after warm-up (a, b): round 0 runs a then b per input, round 1 b then a
    assert log[2:] == ["a", "b", "a", "b", "b", "a", "b", "a"]
    # each pass is charged to the model that ran it, and only its own time
    assert times == {"a": [pytest.approx(0.002)] * 4, "b": [pytest.approx(0.006)] * 4}


def speed_of(q25: float, q75: float, *, baseline_cv: float = 0.2) -> dict:
    return {"speedup_throughput": {"median": (q25 + q75) / 2, "q25": q25, "q75": q75},
            "latency_batch1": {"baseline": {"cv": baseline_cv}}}


@pytest.mark.parametrize(
    ("q25", "q75", "shrank", "expected"),
    [
        (1.10, 1.18, False, "faster"),
        (1.02, 1.08, True, "smaller, not faster"),  # the IQR does not clear 1.05
        (0.80, 0.84, True, "slower"),
        (0.97, 1.03, False, "no measurable change"),
    ],
)
def test_verdict(q25, q75, shrank, expected):
    assert noise(speed_of(q25, q75)) is None
    assert verdict(speed_of(q25, q75), shrank=shrank) == expected


def test_a_busy_machine_gets_no_verdict():
    """The issue's case: a latency CV of about 1.0 and a wide ratio; and each sign of noise alone."""
    busy = speed_of(1.30, 1.32, baseline_cv=1.0)
    assert "latency CV was 1.00" in noise(busy)
    assert verdict(busy, shrank=True) == NOISY
    wide = speed_of(0.76, 1.50)
    assert "IQR was" in noise(wide) and verdict(wide, shrank=False) == NOISY


def test_the_baseline_against_itself_must_read_one():
    assert verdict(speed_of(0.99, 1.01), shrank=False, reference=True) == "reference"
    # a baseline "faster than itself" means the two copies ran under different load
    assert verdict(speed_of(1.07, 1.09), shrank=False, reference=True) == NOISY
    assert verdict(speed_of(0.99, 1.01, baseline_cv=0.9), shrank=False, reference=True) == NOISY


def test_shrank_by_any_size():
    same = {"params": 100, "params_nonzero": 100, "disk_bytes": 400, "before_params": 100, "before_params_nonzero": 100}
    assert not shrank(**same)
    assert shrank(**{**same, "params": 90})
    assert shrank(**{**same, "params_nonzero": 90})
    assert shrank(**{**same, "disk_bytes": 200})
