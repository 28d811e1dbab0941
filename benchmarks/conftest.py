"""Benchmarks of the hot paths, run with pytest-benchmark (never as timed asserts in tests/).

    BENCHSUITE_DATA_DIR=../shared/data/hub pytest benchmarks --benchmark-only

They use the reference model (all-MiniLM-L6-v2, random 2-way head) on real SST-2
validation sentences.
"""

import os
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from benchsuite.models import default_model, load_model

MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hub"


@pytest.fixture(scope="session")
def sst2_features():
    root = Path(os.environ.get("BENCHSUITE_DATA_DIR") or MIRROR)
    rows = datasets.Dataset.from_parquet(str(root / "nyu-mll/glue/sst2/validation.parquet"))
    tokenizer = AutoTokenizer.from_pretrained(default_model())
    encoded = tokenizer(rows["sentence"][:256], truncation=True, max_length=128)
    return [{k: encoded[k][i] for k in encoded} for i in range(256)], tokenizer.pad_token_id


@pytest.fixture(scope="session")
def minilm():
    torch.manual_seed(0)
    return load_model(AutoModelForSequenceClassification, default_model(), num_labels=2).eval()
