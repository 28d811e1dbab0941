import sys
import textwrap

import numpy as np
import pytest

from benchsuite.measure.memory import measure_model_memory, sample_peak_rss
from benchsuite.testing import tiny_model_dir

MiB = 2**20

# Allocates ``n`` MiB and touches every page, so all of it is resident.
ALLOC = """
import time
def alloc(n):
    b = bytearray(n * 2**20)
    b[::4096] = b"x" * len(range(0, len(b), 4096))
    time.sleep(0.5)  # long enough for the 2 ms sampler to see it even on a loaded machine
    return b
"""


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(ALLOC) + textwrap.dedent(code)]


def test_500_mib_allocation_is_measured_within_ten_percent():
    run = sample_peak_rss(python("""
        print("BENCHSUITE_PHASE alloc", flush=True)
        b = alloc(500)
        print("BENCHSUITE_PHASE done", flush=True)
        print('BENCHSUITE_RESULT {"ok": true}')
    """), timeout_s=60)
    grown = run.phase_peak_rss_bytes["alloc"] - run.baseline_rss_bytes
    print(f"baseline {run.baseline_rss_bytes / MiB:.1f} MiB, alloc peak {run.phase_peak_rss_bytes['alloc'] / MiB:.1f} "
          f"MiB (+{grown / MiB:.1f}), ru_maxrss {run.ru_maxrss_bytes / MiB:.1f} MiB, {run.samples} samples")
    assert abs(grown - 500 * MiB) < 0.1 * 500 * MiB
    assert run.peak_rss_bytes == run.phase_peak_rss_bytes["alloc"]
    assert abs(run.ru_maxrss_bytes - run.peak_rss_bytes) < 0.1 * run.peak_rss_bytes
    assert run.result == {"ok": True}
    assert run.samples > 10 and run.to_json()["interval_s"] == 0.002


def test_phases_are_separated():
    run = sample_peak_rss(python("""
        from benchsuite.measure.memory import announce_phase
        announce_phase("a")
        b = alloc(100)
        del b
        announce_phase("b")
        b = alloc(300)
        del b
        announce_phase("c")
    """), timeout_s=60)
    base, peaks = run.baseline_rss_bytes, run.phase_peak_rss_bytes
    assert abs(peaks["a"] - base - 100 * MiB) < 10 * MiB
    assert abs(peaks["b"] - base - 300 * MiB) < 30 * MiB
    assert peaks["c"] - base < 10 * MiB


def test_failing_child_raises_with_its_stderr():
    with pytest.raises(RuntimeError, match="boom: bad input"):
        sample_peak_rss([sys.executable, "-c", "import sys; sys.stderr.write('boom: bad input\\n'); sys.exit(3)"],
                        timeout_s=60)


def test_child_past_its_timeout_is_killed():
    with pytest.raises(TimeoutError):
        sample_peak_rss([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)


def test_ru_maxrss_does_not_inherit_the_parents_memory():
    held = np.ones(256 * MiB // 8)  # the measuring process is large; the child is not
    run = sample_peak_rss([sys.executable, "-c", "pass"], timeout_s=60)
    assert run.ru_maxrss_bytes < 100 * MiB
    del held


def test_model_memory_of_a_tiny_bert(tmp_path):
    model_dir = tiny_model_dir(tmp_path / "m")
    rng = np.random.default_rng(0)
    inputs = [{"input_ids": rng.integers(1000, 2000, n).tolist(), "attention_mask": [1] * n,
               "token_type_ids": [0] * n} for n in rng.integers(8, 64, size=24)]
    mem = measure_model_memory(model_dir, inputs, batch_size=8, threads=1)
    record = mem.to_json()
    for key in ("load_peak_rss_bytes", "inference_peak_rss_bytes", "load_delta_rss_bytes",
                "process_baseline_rss_bytes", "ru_maxrss_bytes", "weight_bytes"):
        assert record[key] > 0, key
    assert mem.load_peak_rss_bytes >= mem.process_baseline_rss_bytes
    assert mem.inference_peak_rss_bytes >= mem.process_baseline_rss_bytes + mem.load_delta_rss_bytes * 0.9
    assert mem.ru_maxrss_bytes >= 0.99 * max(mem.load_peak_rss_bytes, mem.inference_peak_rss_bytes)
    assert mem.weight_bytes == (model_dir / "model.safetensors").stat().st_size
    assert mem.examples == 24 and "a process of its own" in mem.method
