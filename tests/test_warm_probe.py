"""Memory probes forked from the warm process: the figures of a fresh process, its errors, and recovery."""

import os
import sys

import numpy as np
import pytest

from benchsuite.measure import warm_probe
from benchsuite.measure.memory import measure_model_memory
from benchsuite.testing import tiny_model_dir

MiB = 2**20
pytestmark = pytest.mark.skipif(sys.platform != "linux" or not hasattr(os, "fork"),
                                reason="the warm process forks and maps pages through /proc/self/pagemap")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("warm") / "m")


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    return [{"input_ids": rng.integers(1000, 2000, n).tolist(), "attention_mask": [1] * n, "token_type_ids": [0] * n}
            for n in rng.integers(8, 64, size=16)]


@pytest.fixture()
def fresh(monkeypatch):
    """Probes start fresh for one test, as where the warm process cannot be used."""
    monkeypatch.setattr(warm_probe, "_unavailable", "this test compares with a fresh process")


def test_a_forked_probe_measures_what_a_fresh_process_does(model, inputs, monkeypatch):
    # Without mapping the warm process's file pages ahead, the forked probe starts ~90 MB lower and counts
    # ~10 MB of library pages again inside the load phase (measured on this tiny model).
    warm = measure_model_memory(model, inputs, batch_size=8, threads=1)
    assert "forked from a warm process" in warm.method
    monkeypatch.setattr(warm_probe, "_unavailable", "compare")
    fresh = measure_model_memory(model, inputs, batch_size=8, threads=1)
    assert "a fresh python -m" in fresh.method
    assert abs(warm.process_baseline_rss_bytes - fresh.process_baseline_rss_bytes) < 8 * MiB
    assert abs(warm.load_delta_rss_bytes - fresh.load_delta_rss_bytes) < 2 * MiB
    assert abs(warm.load_peak_rss_bytes - fresh.load_peak_rss_bytes) < 8 * MiB
    assert abs(warm.inference_peak_rss_bytes - fresh.inference_peak_rss_bytes) < 16 * MiB


def test_the_warm_process_serves_every_probe_until_its_environment_changes(model, inputs, monkeypatch):
    measure_model_memory(model, inputs, batch_size=8, threads=1)
    first = warm_probe._warm
    measure_model_memory(model, inputs, batch_size=8, threads=2)  # the thread count is set per probe
    assert warm_probe._warm is first and first.alive
    monkeypatch.setenv("BENCHSUITE_WARM_PROBE_TEST", "1")
    measure_model_memory(model, inputs, batch_size=8, threads=1)
    assert warm_probe._warm is not first and not first.alive


def test_ru_maxrss_does_not_inherit_the_memory_of_the_process_that_started_the_warm_one(model, inputs, monkeypatch):
    held = np.ones(1024 * MiB // 8)  # the runner is large when it starts the warm process (exec keeps its peak)
    monkeypatch.setenv("BENCHSUITE_WARM_PROBE_TEST", "large parent")
    mem = measure_model_memory(model, inputs, batch_size=8, threads=1)
    del held
    assert "forked from a warm process" in mem.method
    assert mem.ru_maxrss_bytes < 900 * MiB  # the tiny model's probe peaks near 410 MiB


def test_a_failing_probe_raises_its_error_and_the_next_one_runs(model, inputs, tmp_path):
    with pytest.raises(RuntimeError, match="ModuleNotFoundError: No module named 'no_such_module'"):
        measure_model_memory(model, inputs, batch_size=8, threads=1, loader="no_such_module:load")
    served = warm_probe._warm
    assert served.alive  # the probe's own failure leaves the warm process serving
    assert measure_model_memory(model, inputs, batch_size=8, threads=1).load_delta_rss_bytes > 0
    assert warm_probe._warm is served


def test_a_probe_past_its_timeout_is_killed_with_the_warm_process(model, inputs):
    measure_model_memory(model, inputs, batch_size=8, threads=1)
    served = warm_probe._warm
    with pytest.raises(TimeoutError, match="the memory probe ran longer than"):
        measure_model_memory(model, inputs, batch_size=8, threads=1, timeout_s=0.01)
    assert not served.alive
    assert measure_model_memory(model, inputs, batch_size=8, threads=1).load_delta_rss_bytes > 0
    assert warm_probe._warm is not served and warm_probe._warm.alive


def test_resident_file_pages_are_mapped_pages_of_files():
    runs = warm_probe.resident_file_pages()
    assert runs and all(length > 0 and length % 4096 == 0 for _, length in runs)
    assert sum(length for _, length in runs) > 10 * MiB  # python and torch's libraries, at least
    warm_probe.populate(runs[:10])  # mapping what is already mapped changes nothing and raises nothing


def test_the_probes_fall_back_to_a_fresh_process(model, inputs, fresh):
    mem = measure_model_memory(model, inputs, batch_size=8, threads=1)
    assert "a fresh python -m" in mem.method and mem.load_delta_rss_bytes > 0
