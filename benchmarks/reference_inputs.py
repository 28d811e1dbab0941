"""What the benchmarks run: the reference model (random 2-way head) and real SST-2 validation sentences."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from benchsuite.models import default_model, load_model

MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hub"


def sst2_features(n: int = 256) -> tuple[list[dict], int]:
    """The first ``n`` SST-2 validation sentences tokenized for the reference model, and its pad id."""
    root = Path(os.environ.get("BENCHSUITE_DATA_DIR") or MIRROR)
    rows = datasets.Dataset.from_parquet(str(root / "nyu-mll/glue/sst2/validation.parquet"))
    tokenizer = AutoTokenizer.from_pretrained(default_model())
    encoded = tokenizer(rows["sentence"][:n], truncation=True, max_length=128)
    return [{k: encoded[k][i] for k in encoded} for i in range(n)], tokenizer.pad_token_id


def minilm() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_model(AutoModelForSequenceClassification, default_model(), num_labels=2).eval()
