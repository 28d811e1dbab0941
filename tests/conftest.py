from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from benchsuite.testing import tiny_model_dir

# One thread: on a 2-core machine that also runs other work, multi-threaded forward passes of the
# speed measurements slow the suite several-fold, and tests assert no timings.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "data" / "hub"


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = Path(os.environ.get("BENCHSUITE_DATA_DIR") or MIRROR)
    if not path.is_dir():
        pytest.fail(f"the data mirror {path} is missing: set BENCHSUITE_DATA_DIR to ../shared/data/hub")
    return path


@pytest.fixture()
def data_env(mirror, monkeypatch) -> Path:
    monkeypatch.setenv("BENCHSUITE_DATA_DIR", str(mirror))
    return mirror


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for the session's end-to-end runs: each task's baseline is fine-tuned and the machine's
    matmul peak measured once, then reused (only where a test does not check the cache itself)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def plugins(monkeypatch):
    """The compressors of tests/plugins.py, registered through the entry-point machinery for one test."""
    from benchsuite.compressors import registry
    from tests.plugins import register

    monkeypatch.setattr(registry, "entry_points", registry.entry_points)  # restored after the test
    register(registry)
