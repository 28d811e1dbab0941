"""Hand-computed cases for benchsuite.metrics; every expected number is worked out beside it."""

from __future__ import annotations

import math
import socket

import evaluate
import pytest

from benchsuite.metrics import METRIC_NAMES, load_metric
from benchsuite.metrics.seqeval import get_entities


def _score(name: str, predictions: list, references: list) -> dict[str, float]:
    return load_metric(name).compute(predictions=predictions, references=references)


# --- registry -------------------------------------------------------------------------------------


def test_every_name_loads_an_evaluate_metric_named_like_it() -> None:
    assert METRIC_NAMES == (
        "accuracy", "f1", "matthews_correlation", "pearson", "spearmanr", "squad", "seqeval")
    for name in METRIC_NAMES:
        metric = load_metric(name)
        assert isinstance(metric, evaluate.Metric)
        assert metric.name == name


def test_unknown_name_raises_key_error_with_closest_match() -> None:
    with pytest.raises(KeyError, match="did you mean 'accuracy'") as excinfo:
        load_metric("acuracy")
    assert "seqeval" in str(excinfo.value)  # the known names are listed too


def test_metrics_run_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert _score("accuracy", [1, 0], [1, 1]) == {"accuracy": 50.0}
    assert _score("squad", [{"id": "q", "prediction_text": "x"}],
                  [{"id": "q", "answers": {"text": ["x"], "answer_start": [0]}}]) == {"exact_match": 100.0,
                                                                                     "f1": 100.0}
    assert _score("seqeval", [["B-PER"]], [["B-PER"]])["f1"] == 100.0


# --- GLUE -----------------------------------------------------------------------------------------


def test_accuracy() -> None:
    # 4 of 5 equal (only index 2 differs) -> 4/5 = 80.0
    assert _score("accuracy", [0, 1, 1, 0, 1], [0, 1, 0, 0, 1]) == {"accuracy": 80.0}
    assert isinstance(_score("accuracy", [1], [1])["accuracy"], float)


def test_binary_f1() -> None:
    # tp = 2 (idx 0, 1), fp = 1 (idx 2), fn = 1 (idx 3): p = r = 2/3, f1 = 2/3 -> 66.67
    assert _score("f1", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])["f1"] == pytest.approx(200 / 3)
    # no predicted positives and no positives at all: defined as 0.0
    assert _score("f1", [0, 0], [0, 0]) == {"f1": 0.0}
    with pytest.raises(ValueError, match=r"\[2\]"):
        _score("f1", [0, 2], [0, 1])


def test_matthews_correlation() -> None:
    # tp = 2, tn = 1, fp = 1, fn = 1: (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1/6 -> 16.67
    assert _score("matthews_correlation", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])["matthews_correlation"] == (
        pytest.approx(100 / 6))
    # every prediction wrong on a balanced set: (0*0 - 2*2) / sqrt(2 * 2 * 2 * 2) = -1 -> -100
    assert _score("matthews_correlation", [0, 1, 0, 1], [1, 0, 1, 0])["matthews_correlation"] == (
        pytest.approx(-100.0))
    # constant predictor: the prediction variance is 0, MCC defined as 0.0 (as scikit-learn)
    assert _score("matthews_correlation", [1, 1, 1, 1], [1, 0, 1, 0]) == {"matthews_correlation": 0.0}


def test_pearson() -> None:
    # x = [1, 2, 3], y = [1, 2, 4]: dx = [-1, 0, 1], dy = [-4/3, -1/3, 5/3]
    # sum dx*dy = 3, sum dx^2 = 2, sum dy^2 = 14/3 -> r = 3 / sqrt(28/3) = sqrt(27/28) = 0.98198
    assert _score("pearson", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])["pearson"] == pytest.approx(
        100 * math.sqrt(27 / 28), abs=1e-6)
    # a constant side has zero variance: undefined, reported as NaN
    assert math.isnan(_score("pearson", [2.0, 2.0, 2.0], [1.0, 2.0, 4.0])["pearson"])


def test_spearman() -> None:
    # monotone but not linear: ranks identical -> 100
    result = _score("spearmanr", [1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 16.0])
    assert result["spearmanr"] == pytest.approx(100.0)
    # ranks x = [3, 1, 2], y = [1, 2, 3]: dx = [1, -1, 0], dy = [-1, 0, 1] -> -1 / sqrt(2 * 2) = -0.5
    assert _score("spearmanr", [3.0, 1.0, 2.0], [10.0, 20.0, 30.0])["spearmanr"] == pytest.approx(-50.0)
    # tie: x = [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4]; y = [1, 3, 2, 4] -> ranks [1, 3, 2, 4]
    # dx = [-1.5, 0, 0, 1.5], dy = [-1.5, 0.5, -0.5, 1.5]: sum dx*dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5
    # rho = 4.5 / sqrt(22.5) = sqrt(0.9) = 0.94868
    assert _score("spearmanr", [1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0])["spearmanr"] == pytest.approx(
        100 * math.sqrt(0.9))
    assert math.isnan(_score("spearmanr", [1.0, 2.0, 3.0], [5.0, 5.0, 5.0])["spearmanr"])


# --- SQuAD ----------------------------------------------------------------------------------------


def _squad(prediction: str, golds: list[str]) -> dict[str, float]:
    return _score("squad", [{"id": "q1", "prediction_text": prediction}],
                  [{"id": "q1", "answers": {"text": golds, "answer_start": [0] * len(golds)}}])


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [
        ("The  Cat!", "cat"),  # lower-case, "!" dropped, "the" dropped, spaces collapsed -> "cat"
        ("an apple", "apple"),  # article "an" dropped -> "apple"
        ("U.S.A.", "usa"),  # punctuation inside a word is dropped -> "usa"
        ("the anthem", "Anthem"),  # "an" inside "anthem" is not an article -> "anthem"
    ],
)
def test_squad_normalisation_gives_exact_match(prediction: str, gold: str) -> None:
    assert _squad(prediction, [gold]) == {"exact_match": 100.0, "f1": 100.0}


def test_squad_partial_overlap_f1() -> None:
    # [big, red, dog] vs [red, dog, barked]: common 2, p = r = 2/3, f1 = 2/3 -> 66.67; EM 0
    result = _squad("the big red dog", ["red dog barked"])
    assert result["exact_match"] == 0.0
    assert result["f1"] == pytest.approx(200 / 3)


def test_squad_takes_the_best_gold_answer() -> None:
    # the third gold answer matches exactly -> EM 100, F1 100
    assert _squad("Paris", ["London", "paris, France", "Paris"]) == {"exact_match": 100.0, "f1": 100.0}
    # [paris, france] vs [paris]: p = 1/2, r = 1, f1 = 2/3; vs [london]: 0 -> max 66.67, EM 0
    result = _squad("paris france", ["London", "Paris"])
    assert result == {"exact_match": 0.0, "f1": pytest.approx(200 / 3)}


def test_squad_averages_over_questions() -> None:
    references = [{"id": i, "answers": {"text": [t], "answer_start": [0]}}
                  for i, t in (("a", "red dog"), ("b", "big red dog barked"), ("c", "cat"))]
    predictions = [{"id": i, "prediction_text": t}
                   for i, t in (("c", "dog"), ("a", "Red dog."), ("b", "red dog"))]
    # a: EM 1, F1 1; b: [red, dog] vs [big, red, dog, barked]: p = 1, r = 1/2, f1 = 2/3; c: EM 0, F1 0
    # EM = 1/3 -> 33.33; F1 = (1 + 2/3 + 0) / 3 = 5/9 -> 55.56 (predictions are matched by id, not order)
    result = _score("squad", predictions, references)
    assert result == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(500 / 9)}


def test_squad_prediction_without_reference_raises() -> None:
    with pytest.raises(ValueError, match="'q9'"):
        _score("squad", [{"id": "q9", "prediction_text": "x"}],
               [{"id": "q1", "answers": {"text": ["x"], "answer_start": [0]}}])


# --- seqeval --------------------------------------------------------------------------------------


def test_seqeval_perfect_match() -> None:
    tags = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    perfect = {"precision": 100.0, "recall": 100.0, "f1": 100.0, "accuracy": 100.0}
    assert _score("seqeval", tags, tags) == perfect


def test_i_tag_without_b_starts_an_entity() -> None:
    assert get_entities(["O", "I-PER", "I-PER"]) == [("PER", 1, 2)]
    # same entity as "O B-PER I-PER": all entity scores 100; token accuracy 2/3 (index 1 differs) -> 66.67
    result = _score("seqeval", [["O", "I-PER", "I-PER"]], [["O", "B-PER", "I-PER"]])
    assert result == {"precision": 100.0, "recall": 100.0, "f1": 100.0, "accuracy": pytest.approx(200 / 3)}


def test_entity_boundaries() -> None:
    # adjacent entities of different types
    assert get_entities(["B-PER", "I-PER", "B-LOC", "I-LOC"]) == [("PER", 0, 1), ("LOC", 2, 3)]
    assert get_entities(["I-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]
    # B-X followed by I-Y: the type change splits it into two entities
    assert get_entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]
    # IOB1: B- separates two adjacent entities of the same type
    assert get_entities(["I-PER", "I-PER", "B-PER"]) == [("PER", 0, 1), ("PER", 2, 2)]
    # IOBES: S- is one token, E- closes, an I- after E- starts anew
    assert get_entities(["S-PER", "B-LOC", "E-LOC", "S-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 3)]
    assert get_entities(["B-PER", "E-PER", "I-PER"]) == [("PER", 0, 1), ("PER", 2, 2)]


def test_entities_do_not_cross_sentences() -> None:
    # predicted I-PER at the end of sentence 0 and the start of sentence 1 are two entities
    result = _score("seqeval", [["O", "I-PER"], ["I-PER", "O"]], [["O", "B-PER"], ["B-PER", "O"]])
    assert result["f1"] == 100.0


def test_partly_wrong_span_is_a_false_positive_and_a_false_negative() -> None:
    # predicted PER(0,0) is not gold -> fp; gold PER(0,1) is not found -> fn: p = 0/1, r = 0/1, f1 0
    # tokens: index 1 differs -> accuracy 2/3 = 66.67
    result = _score("seqeval", [["B-PER", "O", "O"]], [["B-PER", "I-PER", "O"]])
    assert result == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": pytest.approx(200 / 3)}


def test_no_predicted_entities_scores_zero() -> None:
    result = _score("seqeval", [["O", "O"]], [["B-LOC", "O"]])
    # no predicted entity: precision defined 0.0; recall 0/1; accuracy 1/2 -> 50
    assert result == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 50.0}


def test_seqeval_two_sentences_by_hand() -> None:
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-MISC", "O", "B-LOC", "I-LOC", "O"]]
    predictions = [["B-PER", "I-PER", "O", "B-ORG"], ["B-MISC", "O", "B-LOC", "O", "B-PER"]]
    # gold: PER(0-1), LOC(3) | MISC(0), LOC(2-3)            -> 4 entities
    # pred: PER(0-1), ORG(3) | MISC(0), LOC(2-2), PER(4)    -> 5 entities; found: PER(0-1), MISC(0) = 2
    # p = 2/5 = 40.0; r = 2/4 = 50.0; f1 = 2 * 0.4 * 0.5 / 0.9 = 4/9 -> 44.44
    # tokens: sentence 0 has 3/4 equal, sentence 1 has 3/5 -> 6/9 = 66.67
    result = _score("seqeval", predictions, references)
    assert result == {"precision": pytest.approx(40.0), "recall": pytest.approx(50.0),
                      "f1": pytest.approx(400 / 9), "accuracy": pytest.approx(200 / 3)}


def test_seqeval_length_mismatch_names_the_sentence() -> None:
    with pytest.raises(ValueError, match="sentence 1"):
        _score("seqeval", [["O"], ["O", "O"]], [["O"], ["O"]])
