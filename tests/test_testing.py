"""The plugin authors' helpers work on their own, without the real data mirror."""

import json

from benchsuite.cli import main
from benchsuite.testing import tiny_mirror


def test_tiny_mirror_runs_every_smoke_task(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("BENCHSUITE_DATA_DIR", str(tiny_mirror(tmp_path / "data")))
    assert main(["run", "--preset", "smoke", "--model", str(tiny_model), "--results-dir", str(tmp_path / "r"),
                 "--cache-dir", str(tmp_path / "c"), "--threads", "1"]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "r").rglob("*.json")]
    assert sorted(r["task"]["name"] for r in records) == ["conll2003", "mrpc", "squad", "sst2"]
    assert all(r["status"] == "ok" and str(tmp_path / "data") in r["data"]["eval"]["source"] for r in records)
