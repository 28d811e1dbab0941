"""Runs that are killed, run twice at once, time out, or meet bad input: nothing computed is lost."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchsuite.cli import main
from benchsuite.testing import tiny_model_dir

REPO = Path(__file__).resolve().parents[1]
CELLS = "baseline,sleepy:tag=1,sleepy:tag=2,sleepy:tag=3,sleepy:tag=4"
N_CELLS = 5


def command(tiny_model: Path, results: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.plugin_cli", "run", "--preset", "smoke", "--model", str(tiny_model),
            "--tasks", "sst2", "--compressors", CELLS, "--results-dir", str(results), "--cache-dir", str(cache),
            "--threads", "1", *extra]


def record_files(results: Path) -> list[Path]:
    return sorted(results.rglob("*.json"))


def wait_for_first_record(proc: subprocess.Popen, results: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not record_files(results):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before writing a record: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no record after 300 s")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_run_resumes_with_no_record_lost_or_duplicated(sig, tiny_model, data_env, shared_cache, tmp_path):
    results = tmp_path / "results"
    # As from a terminal: a job started in the background (CI) inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler; restore the default so that SIGINT is a Ctrl-C.
    proc = subprocess.Popen(command(tiny_model, results, shared_cache), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_first_record(proc, results)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "rerun the same command to resume" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    kept = {path: path.read_bytes() for path in record_files(results)}
    assert 1 <= len(kept) < N_CELLS, "the run was not interrupted mid-way"
    assert all(json.loads(data)["status"] == "ok" for data in kept.values())  # whole records only

    rerun = subprocess.run(command(tiny_model, results, shared_cache), cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{N_CELLS - len(kept)} written, {len(kept)} already done, 0 failed" in rerun.stdout
    final = record_files(results)
    assert len(final) == N_CELLS  # one record per cell: none lost, none twice
    assert all(path.read_bytes() == data for path, data in kept.items())  # finished cells were not redone
    assert {json.loads(p.read_text())["status"] for p in final} == {"ok"}
    assert not list(results.rglob("*.lock"))


def test_two_runs_at_once_share_the_cells(tiny_model, data_env, shared_cache, tmp_path):
    results = tmp_path / "results"
    main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", "sst2", "--results-dir",
          str(tmp_path / "warm"), "--cache-dir", str(shared_cache), "--threads", "1"])  # the baseline is cached
    procs = [subprocess.Popen(command(tiny_model, results, shared_cache), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    written = [int(out.split(" written")[0].split()[-1]) for out, _ in outputs]
    assert sum(written) == N_CELLS  # each cell computed by exactly one of the two runs
    final = record_files(results)
    assert len(final) == N_CELLS
    assert {json.loads(p.read_text())["status"] for p in final} == {"ok"}
    assert not list(results.rglob("*.lock"))


def test_a_cell_past_its_time_limit_fails_and_the_run_goes_on(tiny_model, data_env, shared_cache, tmp_path,
                                                                plugins, capsys):
    results = tmp_path / "results"
    code = main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", "sst2", "--compressors",
                 "sleepy:seconds=600", "--results-dir", str(results), "--cache-dir", str(shared_cache),
                 "--threads", "1", "--cell-timeout", "2"])
    assert code == 1
    (record,) = [json.loads(p.read_text()) for p in record_files(results)]
    assert record["status"] == "failed" and record["error"]["type"] == "CellTimeout"
    assert "time limit of 2 s" in record["error"]["message"]
    assert "1 failed" in capsys.readouterr().out


def test_cell_timeout_must_be_positive(tiny_model, data_env, capsys):
    assert main(["run", "--model", str(tiny_model), "--tasks", "sst2", "--cell-timeout", "0"]) == 2
    assert "--cell-timeout must be > 0" in capsys.readouterr().err


def test_a_model_without_a_tokenizer_is_named(tiny_model, data_env, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    for path in bare.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "special_tokens")):
            path.unlink()
    assert main(["run", "--preset", "smoke", "--model", str(bare), "--tasks", "sst2", "--results-dir",
                 str(tmp_path / "results")]) == 2
    assert "has no usable tokenizer" in capsys.readouterr().err


def test_a_max_length_beyond_the_model_is_named(data_env, tmp_path, capsys):
    short = tiny_model_dir(tmp_path / "short", max_position_embeddings=64)
    assert main(["run", "--preset", "smoke", "--model", str(short), "--tasks", "sst2", "--results-dir",
                 str(tmp_path / "results")]) == 2
    assert "max_length 128 exceeds" in capsys.readouterr().err


def test_a_tokenizer_larger_than_the_embedding_is_named(data_env, tmp_path, capsys):
    small = tiny_model_dir(tmp_path / "small", vocab_size=1000)
    assert main(["run", "--preset", "smoke", "--model", str(small), "--tasks", "sst2", "--results-dir",
                 str(tmp_path / "results")]) == 2
    assert "its tokenizer has 30522 tokens but the model's embedding only 1000 rows" in capsys.readouterr().err


@pytest.fixture()
def mirror_copy(mirror, tmp_path, monkeypatch) -> Path:
    """A mirror holding the real sst2 files and the real MANIFEST.json, to damage."""
    root = tmp_path / "mirror" / "hub"
    shutil.copytree(mirror / "nyu-mll" / "glue" / "sst2", root / "nyu-mll" / "glue" / "sst2")
    shutil.copy(mirror.parent / "MANIFEST.json", root.parent / "MANIFEST.json")
    monkeypatch.setenv("BENCHSUITE_DATA_DIR", str(root))
    return root / "nyu-mll" / "glue" / "sst2"


def test_a_corrupt_data_file_is_named(mirror_copy, tiny_model, tmp_path, capsys):
    target = mirror_copy / "validation.parquet"
    target.write_bytes(target.read_bytes()[:-100])
    assert main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", "sst2", "--results-dir",
                 str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "does not match the sha256 its MANIFEST.json lists" in err


def test_an_unreadable_data_file_without_a_checksum_is_named(mirror_copy, tiny_model, tmp_path, capsys):
    (mirror_copy.parents[2].parent / "MANIFEST.json").unlink()
    target = mirror_copy / "validation.parquet"
    target.write_bytes(b"not a parquet file")
    assert main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", "sst2", "--results-dir",
                 str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "is not a readable parquet file" in err
