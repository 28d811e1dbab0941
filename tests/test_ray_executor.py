"""The Ray executor on a local Ray instance started here: the records of a serial run, a killed worker's
cell failed while the others finish, resume, and baselines shipped to a node whose cache lacks them."""

import json
import os
import signal
from pathlib import Path

import pytest

from benchsuite import cache
from benchsuite.cli import main

ray = pytest.importorskip("ray", reason='the Ray executor needs ray: pip install -e ".[ray]"')

pytestmark = pytest.mark.xdist_group("ray")  # one worker holds the Ray instance

TASKS = "sst2,conll2003"  # two task kinds
CELLS = "baseline,dynamic_int8,distill:layers=1"  # distill needs the teacher's outputs: the shared-outputs path


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, logging_level="WARNING",
             log_to_driver=False)
    yield
    ray.shutdown()


def run(tiny_model: Path, results: Path, cache_dir: Path, *extra: str) -> int:
    return main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", TASKS, "--compressors", CELLS,
                 "--results-dir", str(results), "--cache-dir", str(cache_dir), "--threads", "1", *extra])


def records(results: Path) -> dict[str, dict]:
    return {str(p.relative_to(results)): json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))}


def predictions(results: Path) -> dict[str, str]:
    return {str(p.relative_to(results)): p.read_text() for p in sorted(results.rglob("*.predictions.jsonl"))}


def test_ray_writes_the_serial_records_and_a_killed_worker_fails_only_its_cell(
        local_ray, tiny_model, data_env, tmp_path, capsys, monkeypatch):
    serial, on_ray = tmp_path / "serial", tmp_path / "ray"
    assert run(tiny_model, serial, tmp_path / "serial-cache") == 0
    expected = records(serial)
    assert len(expected) == 6

    # Kill the worker of one cell as it starts; the run writes its failed record and finishes the others.
    from benchsuite import ray_executor

    victim = {"task": "sst2", "compressor": "dynamic_int8"}
    killed = []

    def kill_one(key, pid):
        if {"task": key.task, "compressor": key.compressor} == victim and not killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(key.digest())

    real = ray_executor.run_on_ray
    monkeypatch.setattr(ray_executor, "run_on_ray", lambda opts, ray_opts: real(opts, ray_opts, on_start=kill_one))
    capsys.readouterr()
    assert run(tiny_model, on_ray, tmp_path / "ray-cache", "--executor", "ray") == 1
    assert "5 written, 0 already done, 1 failed" in capsys.readouterr().out
    got = records(on_ray)
    assert sorted(got) == sorted(expected)  # the same cell keys: the same file names
    failed = {name: r for name, r in got.items() if r["status"] == "failed"}
    assert [r["key"] for r in failed.values()] == killed
    assert next(iter(failed.values()))["error"]["type"] == "WorkerCrashedError"
    for name, record in got.items():
        assert record["provenance"]["executor"] == {"name": "ray", "node": record["provenance"]["executor"]["node"],
                                                    "node_cpus": 2, "cell_cpus": 1}
        if name not in failed:
            assert record["status"] == "ok" and record["scores"] == expected[name]["scores"], name
            assert record["measurements"]["speed"] and record["measurements"]["memory"], name
    expected_predictions = predictions(serial)
    assert {k: v for k, v in predictions(on_ray).items() if k.replace(".predictions.jsonl", ".json") not in failed} \
        == {k: v for k, v in expected_predictions.items() if k.replace(".predictions.jsonl", ".json") not in failed}
    assert not list(on_ray.rglob("*.lock"))

    # Resume: only the failed cell is computed again, and now every record matches the serial run's.
    monkeypatch.setattr(ray_executor, "run_on_ray", real)
    assert run(tiny_model, on_ray, tmp_path / "ray-cache", "--executor", "ray") == 0
    assert "1 written, 5 already done, 0 failed" in capsys.readouterr().out
    got = records(on_ray)
    assert {n: r["scores"] for n, r in got.items()} == {n: r["scores"] for n, r in expected.items()}
    assert predictions(on_ray) == expected_predictions
    # The teacher's outputs were computed once for each task, in the cache the workers share.
    assert len(list((tmp_path / "ray-cache" / "teacher_outputs").iterdir())) == 2


def test_xdist_keeps_a_group_on_one_worker(request):
    """The suite's time depends on --dist loadgroup: each compressor's conformance run and this file's Ray
    instance are built once per group. pytest 9.2 with pytest-xdist 3.8 silently drops the groups
    (pytest-dev/pytest-xdist#1386); pyproject.toml keeps pytest below 9.2 for that."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not a pytest-xdist worker under --dist loadgroup (e.g. -n 0): nothing to check")
    assert request.node.nodeid.endswith("@ray"), f"xdist_group ignored: {request.node.nodeid}"


def test_ray_tasks_run_in_the_main_thread_so_the_cell_time_limit_applies(local_ray):
    from benchsuite.isolation import CellTimeout, time_limit

    @ray.remote(num_cpus=1, max_retries=0)
    def slow():
        import time

        with time_limit(0.3):
            time.sleep(20)

    with pytest.raises(ray.exceptions.RayTaskError) as caught:
        ray.get(slow.remote(), timeout=60)
    assert isinstance(caught.value.as_instanceof_cause(), CellTimeout)


def test_a_packed_entry_installs_on_a_node_without_it_and_refuses_damage(tmp_path):
    def build(folder: Path) -> dict:
        (folder / cache.WEIGHTS).write_bytes(b"weights" * 100)
        (folder / "config.json").write_text("{}")
        return {"seconds": 1.0}

    entry = cache.build_entry(tmp_path / "a", "finetuned", "k1", {"x": 1}, build)
    packed = cache.pack_entry(entry["path"])
    installed = cache.install_entry(tmp_path / "b", packed)
    assert installed["weights_sha256"] == entry["weights_sha256"] and installed["stats"] == {"seconds": 1.0}
    assert (Path(installed["path"]) / "config.json").read_text() == "{}"
    assert cache.install_entry(tmp_path / "b", packed)["path"] == installed["path"]  # already there: kept

    damaged = {**packed, "files": {**packed["files"], cache.WEIGHTS: b"other"}}
    with pytest.raises(RuntimeError, match="arrived damaged"):
        cache.install_entry(tmp_path / "c", damaged)
    assert cache.cached_entry(tmp_path / "c", "finetuned", "k1") is None


def test_a_cell_on_a_node_without_the_baseline_installs_it_from_the_object_store(local_ray, tmp_path):
    from benchsuite.presets import get_preset
    from benchsuite.ray_executor import _local_baseline
    from benchsuite.runner import RunOptions

    def build(folder: Path) -> dict:
        (folder / cache.WEIGHTS).write_bytes(b"fine-tuned" * 50)
        return {"seconds": 2.0}

    entry = cache.build_entry(tmp_path / "head", "finetuned", "k2", {"y": 2}, build)
    baseline = {"cache_key": "k2", "reused_from_cache": False}
    opts = RunOptions(tasks=("sst2",), compressors=("baseline",), preset=get_preset("smoke"),
                      results_dir=tmp_path / "r", cache_dir=tmp_path / "node")
    local = _local_baseline(opts, baseline, [ray.put(cache.pack_entry(entry["path"]))])
    assert Path(local["path"]) == tmp_path / "node" / "finetuned" / "k2"
    assert (Path(local["path"]) / cache.WEIGHTS).read_bytes() == b"fine-tuned" * 50
    # Where the node has it, the object store is not read.
    assert _local_baseline(opts, baseline, [None])["path"] == local["path"]


def test_ray_address_needs_the_ray_executor(tiny_model, data_env, capsys):
    assert main(["run", "--preset", "smoke", "--model", str(tiny_model), "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err
