"""The outside example plugin (examples/benchsuite-zero-small) works once installed, with no change to benchsuite."""

import importlib
import importlib.util
import json
import subprocess
import sys
from importlib.metadata import distribution

import pytest
import torch

from benchsuite.cli import main
from benchsuite.compressors.registry import get_compressor_class, registered
from benchsuite.report import write_reports

DIST = "benchsuite-zero-small"


def installed_plugin():
    if importlib.util.find_spec("benchsuite_zero_small") is None:
        pytest.fail(f"the example plugin is not installed: run `pip install -e examples/{DIST}`", pytrace=False)
    return importlib.import_module("benchsuite_zero_small")


def test_registers_from_its_own_distribution():
    plugin = installed_plugin()
    entry_point = registered()["zero_small"].entry_point
    assert entry_point.dist.name == DIST
    assert get_compressor_class("zero_small") is plugin.ZeroSmall
    assert "zero_small" not in {ep.name for ep in distribution("benchsuite").entry_points}


def test_listed_with_its_distribution_and_version():
    installed_plugin()
    listing = subprocess.run([sys.executable, "-m", "benchsuite.cli", "list", "compressors"],
                             capture_output=True, text=True, check=True, timeout=120).stdout
    (line,) = [line for line in listing.splitlines() if line.split()[0] == "zero_small"]
    assert f"{DIST} {distribution(DIST).version}" in line and "needs=-" in line


def test_runs_and_is_reported(tiny_model, data_env, shared_cache, tmp_path):
    installed_plugin()
    results = tmp_path / "results"
    threads = torch.get_num_threads()
    try:  # one thread: checked, not timed, and a busy machine slows threads down a lot
        code = main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", "sst2",
                     "--compressors", "zero_small:threshold=0.05", "--results-dir", str(results),
                     "--cache-dir", str(shared_cache), "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    (record,) = [json.loads(p.read_text()) for p in results.rglob("*.json")]
    assert record["status"] == "ok" and record["compressor"]["config"]["params"] == {"threshold": 0.05}
    footprint, before = record["measurements"]["footprint"], record["measurements"]["footprint_before"]
    assert footprint["params_nonzero"] < before["params_nonzero"]

    report = write_reports(results, tmp_path / "reports")[0].read_text()
    assert record["compressor"]["provider"] == "benchsuite-zero-small 0.1.0"
    assert record["cell"]["provider"] == "benchsuite-zero-small 0.1.0"  # a newer plugin version: a new cell
    row = f"| zero_small:threshold=0.05 `{record['key'][:8]}`"
    assert any(row in line for line in report.splitlines()), report
