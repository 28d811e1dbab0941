"""Benchmarks of the hot paths, run with pytest-benchmark (never as timed asserts in tests/).

    BENCHSUITE_DATA_DIR=../shared/data/hub pytest benchmarks --benchmark-only

They use the reference model (all-MiniLM-L6-v2, random 2-way head) on real SST-2
validation sentences.
"""

import pytest
from reference_inputs import minilm as _minilm
from reference_inputs import sst2_features as _sst2_features


@pytest.fixture(scope="session")
def sst2_features():
    return _sst2_features()


@pytest.fixture(scope="session")
def minilm():
    return _minilm()
