"""benchsuite.report.bootstrap: intervals by hand, exactness against the metric classes, pairing."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from benchsuite.metrics import load_metric
from benchsuite.report import bootstrap
from benchsuite.report.bootstrap import Interval, resample_counts, retention_interval, score_interval, statistic


def classification_rows(pred, ref) -> list[dict]:
    return [{"row": i, "prediction": p, "reference": r} for i, (p, r) in enumerate(zip(pred, ref, strict=True))]


def test_two_examples_one_right_give_the_whole_range():
    # By hand: a resample of 2 examples holds 0, 1 or 2 correct with probability 1/4, 1/2, 1/4, so the
    # 2.5th and 97.5th percentiles of 1000 resamples are 0 and 100.
    stat = statistic("classification", "accuracy", classification_rows([1, 0], [1, 1]))
    assert stat.point() == 50.0
    assert score_interval(stat) == Interval(0.0, 100.0)
    counts = resample_counts(2)
    assert sorted(set(counts[:, 0].tolist())) == [0.0, 1.0, 2.0] and (counts.sum(axis=1) == 2).all()
    assert 0.2 < np.mean(counts[:, 0] == 0) < 0.3  # P(first example never drawn) = 1/4


def test_all_right_is_a_point_interval():
    stat = statistic("classification", "accuracy", classification_rows([1] * 20, [1] * 20))
    assert score_interval(stat) == Interval(100.0, 100.0)


def _binomial_quantile(n: int, p: float, q: float) -> int:
    cumulative = 0.0
    for k in range(n + 1):
        cumulative += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if cumulative >= q:
            return k
    return n


def test_accuracy_interval_is_the_binomial_quantiles():
    # The bootstrap distribution of the accuracy of n examples with k right is Binomial(n, k/n)/n: with
    # many resamples its percentiles are the binomial quantiles (to one example).
    n, right = 60, 42
    stat = statistic("classification", "accuracy", classification_rows([1] * right + [0] * (n - right), [1] * n))
    interval = score_interval(stat, resamples=20_000)
    low, high = (100 * _binomial_quantile(n, right / n, q) / n for q in (0.025, 0.975))
    assert interval.low == pytest.approx(low, abs=100 / n) and interval.high == pytest.approx(high, abs=100 / n)


def _tags(rng: random.Random, length: int) -> list[str]:
    return [rng.choice(["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]) for _ in range(length)]


def _cases():
    rng = random.Random(0)
    n = 40
    labels = [rng.randint(0, 1) for _ in range(n)]
    guesses = [label if rng.random() < 0.7 else 1 - label for label in labels]
    three = [rng.randint(0, 2) for _ in range(n)]
    three_guess = [t if rng.random() < 0.6 else rng.randint(0, 2) for t in three]
    gold_scores = [round(rng.uniform(0, 5), 1) for _ in range(n)]
    predicted_scores = [round(g + rng.gauss(0, 1), 0) for g in gold_scores]  # rounded: ties for Spearman
    yield "classification", "accuracy", classification_rows(guesses, labels), "accuracy", guesses, labels
    yield "classification", "f1", classification_rows(guesses, labels), "f1", guesses, labels
    yield ("classification", "matthews_correlation", classification_rows(three_guess, three), "matthews_correlation",
           three_guess, three)
    yield ("classification", "pearson", classification_rows(predicted_scores, gold_scores), "pearson",
           predicted_scores, gold_scores)
    yield ("classification", "spearmanr", classification_rows(predicted_scores, gold_scores), "spearmanr",
           predicted_scores, gold_scores)
    sentences = [_tags(rng, rng.randint(1, 8)) for _ in range(n)]
    guessed = [[t if rng.random() < 0.8 else rng.choice(["O", "B-PER", "I-LOC"]) for t in s] for s in sentences]
    pairs = zip(guessed, sentences, strict=True)
    rows = [{"row": i, "prediction": p, "reference": g} for i, (p, g) in enumerate(pairs)]
    for metric in ("f1", "precision", "recall", "accuracy"):
        yield "token_classification", metric, rows, "seqeval", guessed, sentences
    answers = ["the Denver Broncos", "2015", "Santa Clara, California", "gold", "Levi's Stadium"]
    qa_rows, qa_pred, qa_ref = [], [], []
    for i in range(n):
        gold = [rng.choice(answers), rng.choice(answers)]
        text = rng.choice([gold[0], gold[1].upper(), "Denver", "the stadium in 2015", ""])
        qa_rows.append({"id": f"q{i}", "prediction": text, "gold": gold})
        qa_pred.append({"id": f"q{i}", "prediction_text": text})
        qa_ref.append({"id": f"q{i}", "answers": {"text": gold, "answer_start": [0] * len(gold)}})
    for metric in ("f1", "exact_match"):
        yield "extractive_qa", metric, qa_rows, "squad", qa_pred, qa_ref


def _resampled(items: list, counts: np.ndarray) -> list:
    return [item for item, c in zip(items, counts, strict=True) for _ in range(int(c))]


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: f"{c[0]}-{c[1]}")
def test_a_resample_scores_exactly_what_the_metric_gives_on_that_data(case):
    kind, metric, rows, metric_class, predictions, references = case
    stat = statistic(kind, metric, rows)
    expected = load_metric(metric_class).compute(predictions=predictions, references=references)[metric]
    assert stat.point() == pytest.approx(expected, abs=1e-5)  # the metric reads scores as float32
    counts = resample_counts(len(rows), resamples=5)
    scores = stat.score(counts)
    for row, score in zip(counts, scores, strict=True):
        # The resample written out, example by example (SQuAD ids made unique, as the metric requires).
        pred, ref = _resampled(predictions, row), _resampled(references, row)
        if metric_class == "squad":
            pred = [{**p, "id": f"{p['id']}-{j}"} for j, p in enumerate(pred)]
            ref = [{**r, "id": f"{r['id']}-{j}"} for j, r in enumerate(ref)]
        truth = load_metric(metric_class).compute(predictions=pred, references=ref)[metric]
        assert score == pytest.approx(truth, abs=1e-5)


def test_paired_retention_is_narrower_than_unpaired_on_correlated_predictions():
    rng = np.random.default_rng(1)
    n = 400
    labels = rng.integers(0, 2, n)
    base = np.where(rng.random(n) < 0.85, labels, 1 - labels)
    model = base.copy()
    flip = rng.choice(n, 12, replace=False)  # the compressed model differs on 3% of the examples
    model[flip] = 1 - model[flip]
    base_stat = statistic("classification", "accuracy", classification_rows(base.tolist(), labels.tolist()))
    model_stat = statistic("classification", "accuracy", classification_rows(model.tolist(), labels.tolist()))
    paired = retention_interval(model_stat, base_stat)
    unpaired = retention_interval(model_stat, base_stat, paired=False)
    retention = 100 * model_stat.point() / base_stat.point()
    assert paired.contains(retention) and unpaired.contains(retention)
    assert paired.high - paired.low < 0.5 * (unpaired.high - unpaired.low)


def test_pairing_follows_unit_identity_not_file_order():
    labels = [1, 0, 1, 1, 0, 1, 0, 0]
    base = statistic("classification", "accuracy", classification_rows(labels, labels))
    rows = classification_rows(labels, labels)[::-1]  # the same predictions, saved in another order
    same = statistic("classification", "accuracy", rows)
    assert retention_interval(same, base) == Interval(100.0, 100.0)
    other = statistic("classification", "accuracy", classification_rows(labels[:4], labels[:4]))
    with pytest.raises(ValueError, match="different units"):
        retention_interval(other, base)


def test_intervals_are_reproducible():
    rows = classification_rows([1, 0, 1, 1, 0, 0, 1], [1, 1, 1, 0, 0, 0, 1])
    assert score_interval(statistic("classification", "f1", rows)) == score_interval(
        statistic("classification", "f1", rows))
    assert bootstrap.RESAMPLES == 1000 and bootstrap.LEVEL == 0.95


def test_a_score_undefined_on_many_resamples_has_no_interval():
    # Pearson of 3 examples, two of them identical: a resample drawing one distinct pair or fewer has a constant
    # side (NaN) far more often than one time in ten.
    stat = statistic("classification", "pearson", classification_rows([1.0, 1.0, 2.0], [1.0, 1.0, 3.0]))
    assert stat.point() == pytest.approx(100.0)
    assert np.isnan(stat.score(resample_counts(3))).mean() > 0.1
    assert score_interval(stat) is None


def test_the_floor_is_the_best_constant_prediction_by_hand():
    rows = classification_rows([0, 1, 0, 1], [1, 1, 1, 0])
    constant, stat = bootstrap.floor("classification", "accuracy", rows)
    assert constant == 1 and stat.point() == 75.0  # "always 1" is right 3 times in 4
    constant, stat = bootstrap.floor("classification", "f1", rows)
    assert constant == 1 and stat.point() == pytest.approx(100 * 2 * 3 / (2 * 3 + 1))  # tp 3, fp 1, fn 0
    assert bootstrap.floor("classification", "matthews_correlation", rows)[1].point() == 0.0
    tagged = [{"row": 0, "prediction": ["O"] * 3, "reference": ["B-PER", "I-PER", "O"]},
              {"row": 1, "prediction": ["O"] * 2, "reference": ["O", "O"]}]
    constant, stat = bootstrap.floor("token_classification", "accuracy", tagged)
    assert constant == "O" and stat.point() == 60.0  # 3 of 5 tokens
    # every constant tag finds no gold entity: "O" finds none, "B-PER" five one-token ones against one of two tokens
    assert bootstrap.floor("token_classification", "f1", tagged)[1].point() == 0.0
    assert bootstrap.floor("classification", "pearson", classification_rows([1.0, 2.0], [1.0, 3.0])) is None
    assert bootstrap.floor("extractive_qa", "f1", [{"id": "q", "prediction": "a", "gold": ["a"]}]) is None


def test_a_model_that_answers_one_label_is_at_the_floor_and_a_good_one_above_it():
    rng = np.random.default_rng(3)
    labels = (rng.random(300) < 0.68).astype(int)  # mrpc's share of "equivalent"
    floor = bootstrap.floor("classification", "f1", classification_rows(labels.tolist(), labels.tolist()))[1]
    nearly_constant = np.ones_like(labels)
    nearly_constant[rng.choice(300, 5, replace=False)] = 0
    degenerate = statistic("classification", "f1", classification_rows(nearly_constant.tolist(), labels.tolist()))
    assert degenerate.point() > 75  # an F1 that reads as most of a good model's
    assert bootstrap.difference_interval(degenerate, floor).low <= 0
    good = np.where(rng.random(300) < 0.85, labels, 1 - labels)
    good_stat = statistic("classification", "f1", classification_rows(good.tolist(), labels.tolist()))
    assert bootstrap.difference_interval(good_stat, floor).low > 0
    with pytest.raises(ValueError, match="different units"):
        bootstrap.difference_interval(degenerate, statistic("classification", "f1", classification_rows([1], [1])))
