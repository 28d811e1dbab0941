"""benchsuite.tasks.qa: SQuAD windows, answer labels and span decoding, with the real tokenizer."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import datasets
import pytest
import torch

from benchsuite.models import load_tokenizer, resolve_model
from benchsuite.tasks import load_task, task_kind
from benchsuite.tasks.qa import ExtractiveQA

SHORT = "In 1889 the Eiffel Tower opened in Paris, designed by Gustave Eiffel's company."
# 20 filler sentences ("Sentence number 5 talks about item 5." spans characters 190-227) and the answer.
FILLER = " ".join(f"Sentence number {i} talks about item {i}." for i in range(20))
LONG = FILLER + " The treasure is buried under the old oak tree."


def _row(qid: str, question: str, context: str, answer: str) -> dict:
    return {"id": qid, "title": qid.split("-")[0], "context": context, "question": question,
            "answers": {"text": [answer], "answer_start": [context.index(answer)]}}


def _rows(*rows: dict) -> datasets.Dataset:
    return datasets.Dataset.from_list(list(rows))


YEAR = _row("eiffel-1", "When did the Eiffel Tower open?", SHORT, "1889")
COMPANY = _row("eiffel-2", "  Who designed the tower?", SHORT, "Gustave Eiffel's company")  # leading blanks
TREASURE = _row("long-1", "Where is the treasure buried?", LONG, "under the old oak tree")
ITEM5 = _row("long-2", "What does sentence five talk about?", LONG, "item 5")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model(None), max_length=256)


@pytest.fixture(scope="module")
def squad():
    return load_task("squad")


def _small(squad, **params):
    """The squad spec with 64-token windows overlapping by 16 tokens."""
    return dataclasses.replace(squad, max_length=64, params={**squad.params, "doc_stride": 16, **params})


def _windows(tokenizer, spec, rows: datasets.Dataset):
    """The windows, tokenized here independently of qa.py (same tokenizer arguments)."""
    return tokenizer([q.lstrip() for q in rows["question"][:]], rows["context"][:], truncation="only_second",
                     max_length=spec.max_length, stride=spec.params["doc_stride"],
                     return_overflowing_tokens=True, return_offsets_mapping=True)


def _answer_tokens(enc, w: int, answer: dict) -> tuple[int, int] | None:
    """First and last context token of the answer in window ``w``, None if it is not wholly there."""
    start, end = answer["answer_start"][0], answer["answer_start"][0] + len(answer["text"][0])
    context = [i for i, s in enumerate(enc.sequence_ids(w)) if s == 1]
    offsets = enc["offset_mapping"][w]
    if offsets[context[0]][0] > start or offsets[context[-1]][1] < end:
        return None
    inside = [i for i in context if offsets[i][0] < end and offsets[i][1] > start]
    return inside[0], inside[-1]


class FakeQA(torch.nn.Module):
    """Returns, for each window, the logits listed for its token ids (padding gets -1000)."""

    def __init__(self, table: dict[tuple[int, ...], tuple[list[float], list[float]]]):
        super().__init__()
        self.table = table
        self.calls = 0

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        self.calls += 1
        start = torch.full(input_ids.shape, -1000.0)
        end = torch.full(input_ids.shape, -1000.0)
        for row in range(input_ids.shape[0]):
            n = int(attention_mask[row].sum())
            s, e = self.table[tuple(input_ids[row, :n].tolist())]
            start[row, :n] = torch.tensor(s)
            end[row, :n] = torch.tensor(e)
        return SimpleNamespace(start_logits=start, end_logits=end)


def _peaked_model(tokenizer, spec, rows, pick) -> FakeQA:
    """Logits 0 everywhere but 10 at the start and end token ``pick(example, enc, w)`` returns."""
    enc = _windows(tokenizer, spec, rows)
    table = {}
    for w, example in enumerate(enc["overflow_to_sample_mapping"]):
        n = len(enc["input_ids"][w])
        start, end = [0.0] * n, [0.0] * n
        s, e = pick(example, enc, w)
        start[s], end[e] = 10.0, 10.0
        table[tuple(enc["input_ids"][w])] = (start, end)
    return FakeQA(table)


def _gold_or_cls(rows):
    answers = rows["answers"][:]

    def pick(example, enc, w):
        return _answer_tokens(enc, w, answers[example]) or (0, 0)

    return pick


# --- training features ----------------------------------------------------------------------------


def test_kind_and_head(tokenizer, squad) -> None:
    kind = task_kind(squad, tokenizer)
    assert isinstance(kind, ExtractiveQA)
    assert kind.auto_class.__name__ == "AutoModelForQuestionAnswering"


def test_train_positions_decode_to_the_answer_or_point_to_cls(tokenizer, squad) -> None:
    spec = _small(squad)
    rows = _rows(YEAR, COMPANY, TREASURE, ITEM5)
    features = task_kind(spec, tokenizer).train_features(rows)
    enc = _windows(tokenizer, spec, rows)
    assert len(features) == len(enc["input_ids"])
    labelled = {e: 0 for e in range(len(rows))}
    for w, feature in enumerate(features):
        assert feature["input_ids"] == enc["input_ids"][w]
        assert set(feature) == {"input_ids", "token_type_ids", "attention_mask", "start_positions",
                                "end_positions"}
        example = enc["overflow_to_sample_mapping"][w]
        answer = rows[example]["answers"]
        start, end = feature["start_positions"], feature["end_positions"]
        if _answer_tokens(enc, w, answer) is None:
            assert (start, end) == (0, 0)  # [CLS]
            continue
        labelled[example] += 1
        assert enc.sequence_ids(w)[start] == 1 and enc.sequence_ids(w)[end] == 1
        offsets = enc["offset_mapping"][w]
        context = rows[example]["context"]
        assert context[offsets[start][0]: offsets[end][1]] == answer["text"][0]
    # short contexts: one window each; the treasure is only in the last of its 4 windows; "item 5"
    # lies in the overlap of two windows (its longer question leaves room for fewer context tokens: 5 windows)
    assert labelled == {0: 1, 1: 1, 2: 1, 3: 2}
    assert list(enc["overflow_to_sample_mapping"]) == [0, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3]
    assert [(f["start_positions"], f["end_positions"]) for f in features[2:5]] == [(0, 0)] * 3


def test_train_positions_by_hand(tokenizer, squad) -> None:
    features = task_kind(squad, tokenizer).train_features(_rows(YEAR, COMPANY))
    tokens = [tokenizer.convert_ids_to_tokens(f["input_ids"]) for f in features]
    # [CLS] when did the e ##iff ##el tower open ? [SEP] in 1889 ...: "1889" is token 12
    assert tokens[0][:13] == ["[CLS]", "when", "did", "the", "e", "##iff", "##el", "tower", "open", "?", "[SEP]",
                              "in", "1889"]
    assert (features[0]["start_positions"], features[0]["end_positions"]) == (12, 12)
    # the question's leading blanks are stripped: [CLS] who designed the tower ? [SEP] = 7 tokens
    start, end = features[1]["start_positions"], features[1]["end_positions"]
    assert tokens[1][:7] == ["[CLS]", "who", "designed", "the", "tower", "?", "[SEP]"]
    assert tokens[1][start: end + 1] == ["gustave", "e", "##iff", "##el", "'", "s", "company"]
    assert (start, end) == (7 + 13, 7 + 19)  # "gustave" is the 14th context token


def test_long_context_gives_overlapping_windows(tokenizer, squad) -> None:
    spec = _small(squad)
    rows = _rows(TREASURE)
    features = task_kind(spec, tokenizer).train_features(rows)
    enc = _windows(tokenizer, spec, rows)
    assert len(features) == 4
    assert all(len(f["input_ids"]) <= 64 for f in features)
    windows = [[tuple(enc["offset_mapping"][w][i]) for i, s in enumerate(enc.sequence_ids(w)) if s == 1]
               for w in range(4)]
    for before, after in zip(windows, windows[1:], strict=False):
        assert before[-16:] == after[:16]  # doc_stride 16: the last 16 context tokens come again
        assert not set(before[:-16]) & set(after)
    context_tokens = len(tokenizer(LONG, add_special_tokens=False)["input_ids"])
    assert len({t for window in windows for t in window}) == context_tokens  # every token in some window
    assert windows[0][0][0] == 0 and windows[-1][-1][1] == len(LONG)


def test_doc_stride_must_be_under_half_the_window(tokenizer, squad) -> None:
    kind = task_kind(_small(squad, doc_stride=32), tokenizer)
    with pytest.raises(ValueError, match="doc_stride 32 must be under half of max_length 64"):
        kind.train_features(_rows(YEAR))


def test_missing_column_is_a_usage_error(tokenizer, squad) -> None:
    from benchsuite.errors import UsageError

    rows = _rows(YEAR).remove_columns(["id"])
    with pytest.raises(UsageError, match=r"no column\(s\) \['id'\]"):
        task_kind(squad, tokenizer).train_features(rows)


# --- evaluation -----------------------------------------------------------------------------------


def test_evaluate_peaks_on_the_answer_give_exact_match_100(tokenizer, squad) -> None:
    spec = _small(squad)
    rows = _rows(YEAR, COMPANY, TREASURE, ITEM5)
    model = _peaked_model(tokenizer, spec, rows, _gold_or_cls(rows))
    result = task_kind(spec, tokenizer).evaluate(model, rows, batch_size=3)
    assert result.scores == {"exact_match": 100.0, "f1": 100.0}
    assert [p["prediction"] for p in result.predictions] == [
        "1889", "Gustave Eiffel's company", "under the old oak tree", "item 5"]
    assert [p["windows"] for p in result.predictions] == [1, 1, 4, 5]
    assert [p["score"] for p in result.predictions] == [20.0] * 4
    assert [p["id"] for p in result.predictions] == ["eiffel-1", "eiffel-2", "long-1", "long-2"]
    assert result.forward.examples == 11 and result.forward.batches == 4 and model.calls == 4  # 11 windows / 3


def test_evaluate_peaks_on_wrong_tokens_score_lower(tokenizer, squad) -> None:
    rows = _rows(YEAR, COMPANY)
    gold = _gold_or_cls(rows)

    def pick(example, enc, w):
        if example == 1:
            return gold(example, enc, w)
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][w])
        paris = tokens.index("paris")
        return paris, paris  # "Paris" instead of "1889"

    result = task_kind(squad, tokenizer).evaluate(_peaked_model(tokenizer, squad, rows, pick), rows, batch_size=8)
    assert [p["prediction"] for p in result.predictions] == ["Paris", "Gustave Eiffel's company"]
    # one of two right; "paris" shares no token with "1889"
    assert result.scores == {"exact_match": 50.0, "f1": 50.0}


def test_evaluate_partial_span_gets_partial_f1(tokenizer, squad) -> None:
    rows = _rows(COMPANY)
    gold = _gold_or_cls(rows)

    def pick(example, enc, w):
        start, end = gold(example, enc, w)
        return start, end - 1  # drop "company"

    result = task_kind(squad, tokenizer).evaluate(_peaked_model(tokenizer, squad, rows, pick), rows, batch_size=8)
    assert result.predictions[0]["prediction"] == "Gustave Eiffel's"
    # normalized tokens: gold {gustave, eiffels, company}, predicted {gustave, eiffels}:
    # precision 2/2, recall 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8
    assert result.scores["exact_match"] == 0.0
    assert result.scores["f1"] == pytest.approx(80.0)


def _logits_model(tokenizer, spec, rows, start: list[float], end: list[float]) -> FakeQA:
    enc = _windows(tokenizer, spec, rows)
    assert len(enc["input_ids"]) == 1
    return FakeQA({tuple(enc["input_ids"][0]): (start, end)})


def test_spans_outside_the_context_are_never_chosen(tokenizer, squad) -> None:
    rows = _rows(YEAR)
    enc = _windows(tokenizer, squad, rows)
    sequence_ids = enc.sequence_ids(0)
    n, sep = len(sequence_ids), sequence_ids.index(1) - 1  # [SEP] between question and context
    year = _answer_tokens(enc, 0, rows[0]["answers"])
    assert year == (12, 12)
    start, end = [0.0] * n, [0.0] * n
    start[0] = end[0] = 50.0  # [CLS]
    start[4], end[8] = 40.0, 40.0  # "e" .. "open" in the question
    start[sep] = end[sep] = start[n - 1] = end[n - 1] = 30.0  # both [SEP]
    start[12], end[12] = 5.0, 5.0  # "1889": the best span inside the context
    kind = task_kind(squad, tokenizer)
    result = kind.evaluate(_logits_model(tokenizer, squad, rows, start, end), rows, batch_size=8)
    assert result.predictions[0]["prediction"] == "1889"
    assert result.predictions[0]["score"] == 10.0
    assert result.scores == {"exact_match": 100.0, "f1": 100.0}


def test_no_span_inside_the_context_gives_an_empty_answer(tokenizer, squad) -> None:
    spec = dataclasses.replace(squad, params={**squad.params, "n_best": 2})
    rows = _rows(YEAR)
    n = len(_windows(tokenizer, spec, rows)["input_ids"][0])
    start, end = [0.0] * n, [0.0] * n
    start[0] = end[0] = 50.0  # [CLS]
    start[1] = end[1] = 40.0  # "when", in the question
    result = task_kind(spec, tokenizer).evaluate(_logits_model(tokenizer, spec, rows, start, end), rows,
                                                 batch_size=8)
    assert result.predictions[0]["prediction"] == ""
    assert result.predictions[0]["score"] == 0.0
    assert result.scores == {"exact_match": 0.0, "f1": 0.0}


def test_spans_longer_than_max_answer_length_or_reversed_are_never_chosen(tokenizer, squad) -> None:
    spec = dataclasses.replace(squad, params={**squad.params, "max_answer_length": 3})
    rows = _rows(COMPANY)
    enc = _windows(tokenizer, spec, rows)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    n = len(tokens)
    # context tokens from 7: in(7) 1889(8) the(9) e(10) ##iff(11) ##el(12) tower(13) opened(14) in(15) paris(16)
    assert tokens[7:17] == ["in", "1889", "the", "e", "##iff", "##el", "tower", "opened", "in", "paris"]
    start, end = [-100.0] * n, [-100.0] * n
    start[9], end[13] = 30.0, 30.0  # "the Eiffel Tower": 5 tokens > 3
    start[16], end[14] = 20.0, 20.0  # end before start: "paris" .. "opened"
    start[8], end[8] = 4.0, 4.0  # "1889": 1 token, the best allowed span (8.0)
    result = task_kind(spec, tokenizer).evaluate(_logits_model(tokenizer, spec, rows, start, end), rows,
                                                 batch_size=8)
    assert result.predictions[0]["prediction"] == "1889"
    assert result.predictions[0]["score"] == 8.0
    # with max_answer_length 5 the 5-token span wins (60.0)
    spec5 = dataclasses.replace(squad, params={**squad.params, "max_answer_length": 5})
    result = task_kind(spec5, tokenizer).evaluate(_logits_model(tokenizer, spec5, rows, start, end), rows,
                                                  batch_size=8)
    assert result.predictions[0]["prediction"] == "the Eiffel Tower"
    assert result.predictions[0]["score"] == 60.0


def test_the_best_window_wins_across_windows(tokenizer, squad) -> None:
    spec = _small(squad)
    rows = _rows(TREASURE)
    answers = rows["answers"][:]

    def pick(example, enc, w):
        found = _answer_tokens(enc, w, answers[example])
        if found:
            return found
        context = [i for i, s in enumerate(enc.sequence_ids(w)) if s == 1]
        return context[0], context[1]  # a wrong 2-token span in the windows without the answer

    model = _peaked_model(tokenizer, spec, rows, pick)
    enc = _windows(tokenizer, spec, rows)
    for w in range(3):  # the first three windows lack the answer: their peaks are lowered to 9
        start, end = model.table[tuple(enc["input_ids"][w])]
        model.table[tuple(enc["input_ids"][w])] = ([9.0 if x == 10.0 else x for x in start],
                                                   [9.0 if x == 10.0 else x for x in end])
    result = task_kind(spec, tokenizer).evaluate(model, rows, batch_size=2)
    assert result.predictions[0]["prediction"] == "under the old oak tree"
    assert result.predictions[0]["score"] == 20.0
    # raised to 11, a wrong span of the first window wins: "Sentence number"
    start, end = model.table[tuple(enc["input_ids"][0])]
    model.table[tuple(enc["input_ids"][0])] = ([11.0 if x == 9.0 else x for x in start],
                                               [11.0 if x == 9.0 else x for x in end])
    result = task_kind(spec, tokenizer).evaluate(model, rows, batch_size=2)
    assert result.predictions[0]["prediction"] == "Sentence number"
    assert result.predictions[0]["score"] == 22.0
    assert result.scores == {"exact_match": 0.0, "f1": 0.0}
