"""benchsuite.tasks.tagging: a tag per word, labelled and predicted on the word's first sub-word."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import datasets
import pytest
import torch

from benchsuite.errors import UsageError
from benchsuite.metrics.seqeval import ENTITY_MODE_NOTE
from benchsuite.models import load_tokenizer, resolve_model
from benchsuite.tasks import load_task, task_kind
from benchsuite.tasks.tagging import TokenClassification

NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
OUT, B_PER, I_PER, B_ORG, I_ORG, B_LOC, I_LOC, B_MISC, I_MISC = range(9)

# word-pieces of the reference (uncased) tokenizer:
#   Zbigniew -> z ##bi ##gni ##ew, Brzezinski -> br ##ze ##zin ##ski, visited, Reykjavik, .
#   Schwarzenegger -> schwarz ##ene ##gger, joined, the, Kowalczyk -> ko ##wal ##cz ##yk, Group, .
SENTENCES = [
    (["Zbigniew", "Brzezinski", "visited", "Reykjavik", "."], [B_PER, I_PER, OUT, B_LOC, OUT]),
    (["Schwarzenegger", "joined", "the", "Kowalczyk", "Group", "."], [B_PER, OUT, OUT, B_ORG, I_ORG, OUT]),
]


def _rows(sentences=SENTENCES, names=NAMES) -> datasets.Dataset:
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    return datasets.Dataset.from_dict({"tokens": [s[0] for s in sentences], "ner_tags": [s[1] for s in sentences]},
                                      features=features)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model(None), max_length=256)


@pytest.fixture(scope="module")
def conll():
    return load_task("conll2003")


class FakeTagger(torch.nn.Module):
    """Logits for the token ids of each sentence, looked up in a table (padding gets zeros)."""

    def __init__(self, table: dict[tuple[int, ...], list[int]], num_labels: int = 9):
        super().__init__()
        self.table, self.num_labels = table, num_labels

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        logits = torch.zeros((*input_ids.shape, self.num_labels))
        for row in range(input_ids.shape[0]):
            n = int(attention_mask[row].sum())
            for position, tag in enumerate(self.table[tuple(input_ids[row, :n].tolist())]):
                logits[row, position, tag] = 5.0
        return SimpleNamespace(logits=logits)


def _tagger(tokenizer, spec, rows, predict) -> FakeTagger:
    """``predict(sentence, word, first)`` gives the tag index for each sub-word (special tokens: I-MISC)."""
    enc = tokenizer(rows["tokens"][:], is_split_into_words=True, truncation=True, max_length=spec.max_length)
    table = {}
    for i in range(len(rows)):
        tags, previous = [], None
        for word in enc.word_ids(i):
            tags.append(I_MISC if word is None else predict(i, word, word != previous))
            previous = word
        table[tuple(enc["input_ids"][i])] = tags
    return FakeTagger(table)


def test_kind_head_and_label_maps(tokenizer, conll) -> None:
    kind = task_kind(conll, tokenizer)
    assert isinstance(kind, TokenClassification)
    assert kind.auto_class.__name__ == "AutoModelForTokenClassification"
    kwargs = kind.model_kwargs()
    assert kwargs["num_labels"] == 9
    assert kwargs["id2label"][5] == "B-LOC" and kwargs["label2id"]["I-MISC"] == 8


def test_labels_only_on_first_sub_words(tokenizer, conll) -> None:
    features = task_kind(conll, tokenizer).train_features(_rows())
    first, second = features
    assert tokenizer.convert_ids_to_tokens(first["input_ids"]) == [
        "[CLS]", "z", "##bi", "##gni", "##ew", "br", "##ze", "##zin", "##ski", "visited", "reykjavik", ".", "[SEP]"]
    assert first["labels"] == [-100, B_PER, -100, -100, -100, I_PER, -100, -100, -100, OUT, B_LOC, OUT, -100]
    assert tokenizer.convert_ids_to_tokens(second["input_ids"]) == [
        "[CLS]", "schwarz", "##ene", "##gger", "joined", "the", "ko", "##wal", "##cz", "##yk", "group", ".", "[SEP]"]
    assert second["labels"] == [-100, B_PER, -100, -100, OUT, OUT, B_ORG, -100, -100, -100, I_ORG, OUT, -100]
    assert set(first) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert all(len(f["labels"]) == len(f["input_ids"]) for f in features)


def test_first_sub_word_predictions_give_f1_100(tokenizer, conll) -> None:
    rows = _rows()
    gold = [s[1] for s in SENTENCES]
    # gold on first sub-words, I-MISC on continuations and special tokens: those must be ignored
    model = _tagger(tokenizer, conll, rows, lambda i, word, first: gold[i][word] if first else I_MISC)
    result = task_kind(conll, tokenizer).evaluate(model, rows, batch_size=1)
    assert result.scores["f1"] == 100.0
    assert result.scores["precision"] == 100.0 and result.scores["recall"] == 100.0
    assert result.scores["accuracy"] == 100.0
    assert result.notes == (ENTITY_MODE_NOTE,)
    assert result.predictions[0] == {"row": 0, "reference": ["B-PER", "I-PER", "O", "B-LOC", "O"],
                                     "prediction": ["B-PER", "I-PER", "O", "B-LOC", "O"]}
    assert result.forward.examples == 2 and result.forward.batches == 2


def test_continuation_sub_words_never_decide(tokenizer, conll) -> None:
    rows = _rows()
    gold = [s[1] for s in SENTENCES]

    # right on continuations only, "O" on every first sub-word: no entity found
    model = _tagger(tokenizer, conll, rows, lambda i, word, first: OUT if first else gold[i][word])
    result = task_kind(conll, tokenizer).evaluate(model, rows, batch_size=4)
    assert result.scores["f1"] == 0.0 and result.scores["recall"] == 0.0
    # 11 words, 5 gold "O" (visited, ., joined, the, .) predicted right: accuracy 5/11
    assert result.scores["accuracy"] == pytest.approx(100 * 5 / 11)


def test_one_entity_missed(tokenizer, conll) -> None:
    rows = _rows()
    gold = [s[1] for s in SENTENCES]

    def predict(i, word, first):
        return OUT if (i, word) == (0, 3) else gold[i][word]  # Reykjavik missed

    result = task_kind(conll, tokenizer).evaluate(_tagger(tokenizer, conll, rows, predict), rows, batch_size=4)
    # gold entities: PER, LOC, PER, ORG (4); found 3, all right: P = 1, R = 3/4, F1 = 2 * 0.75 / 1.75
    assert result.scores["precision"] == 100.0
    assert result.scores["recall"] == 75.0
    assert result.scores["f1"] == pytest.approx(100 * 6 / 7)
    assert result.scores["accuracy"] == pytest.approx(100 * 10 / 11)


def test_words_beyond_max_length_are_predicted_o_and_counted(tokenizer, conll) -> None:
    spec = dataclasses.replace(conll, max_length=8)
    rows = _rows()
    gold = [s[1] for s in SENTENCES]
    features = task_kind(spec, tokenizer).train_features(rows)
    # 8 tokens: [CLS] z ##bi ##gni ##ew br ##ze [SEP]; [CLS] schwarz ##ene ##gger joined the ko [SEP]
    assert [len(f["input_ids"]) for f in features] == [8, 8]
    assert features[0]["labels"] == [-100, B_PER, -100, -100, -100, I_PER, -100, -100]
    assert features[1]["labels"] == [-100, B_PER, -100, -100, OUT, OUT, B_ORG, -100]
    model = _tagger(tokenizer, spec, rows, lambda i, word, first: gold[i][word] if first else I_MISC)
    result = task_kind(spec, tokenizer).evaluate(model, rows, batch_size=4)
    # sentence 1 keeps 2 of 5 words, sentence 2 keeps 4 of 6: 3 + 2 = 5 words cut off
    assert result.notes == (ENTITY_MODE_NOTE, "5 words beyond max_length 8 were predicted 'O'")
    assert result.predictions[0]["prediction"] == ["B-PER", "I-PER", "O", "O", "O"]
    assert result.predictions[1]["prediction"] == ["B-PER", "O", "O", "B-ORG", "O", "O"]
    assert len(result.predictions[1]["prediction"]) == len(result.predictions[1]["reference"]) == 6
    # gold entities PER, LOC, PER, ORG (Kowalczyk Group); predicted PER, PER and ORG (Kowalczyk alone):
    # 2 right of 3 predicted, of 4 gold: P = 2/3, R = 1/2, F1 = 2 * (1/3) / (7/6) = 4/7
    assert result.scores["precision"] == pytest.approx(100 * 2 / 3)
    assert result.scores["recall"] == 50.0
    assert result.scores["f1"] == pytest.approx(100 * 4 / 7)


def test_dataset_label_names_must_match_the_spec(tokenizer, conll) -> None:
    swapped = ["O", "B-ORG", "I-ORG", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    rows = _rows(names=swapped)
    kind = task_kind(conll, tokenizer)
    with pytest.raises(UsageError) as excinfo:
        kind.train_features(rows)
    message = str(excinfo.value)
    assert "task conll2003" in message and "label names" in message
    assert str(swapped) in message and str(NAMES) in message
    assert conll.source in message
    with pytest.raises(UsageError, match="differ from the spec's labels"):
        kind.evaluate(FakeTagger({}), rows, batch_size=2)
    # the same names in the same order pass
    assert len(kind.train_features(_rows())) == 2


def test_missing_column_is_a_usage_error(tokenizer, conll) -> None:
    rows = _rows().rename_column("ner_tags", "tags")
    with pytest.raises(UsageError, match=r"no column\(s\) \['ner_tags'\]"):
        task_kind(conll, tokenizer).train_features(rows)


def test_the_mirrors_conll_label_names_match_the_spec(tokenizer, conll, data_env) -> None:
    from benchsuite.data import load_task_data

    data = load_task_data(conll, max_train=4, max_eval=4, seed=0)
    assert data.eval.features["ner_tags"].feature.names == NAMES
    features = task_kind(conll, tokenizer).train_features(data.eval)
    for feature, tags in zip(features, data.eval["ner_tags"][:], strict=True):
        assert [label for label in feature["labels"] if label != -100] == tags
