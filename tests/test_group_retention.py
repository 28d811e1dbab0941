"""benchmarks/group_retention.py's arithmetic: retention per group, and over random draws of groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.group_retention import drawn_retention, group_table

# Three groups of unequal size: a keeps 50%, b keeps 100%, c gains (150%).
IDS = ["q1", "q2", "q3", "q4", "q5", "q6"]
BASELINE = pd.Series([80.0, 40.0, 50.0, 70.0, 30.0, 10.0], index=IDS)
MODEL = pd.Series(dict(zip(IDS, [40.0, 20.0, 50.0, 70.0, 45.0, 15.0], strict=True)))[IDS[::-1]]  # another order
GROUPS = pd.Series(["a", "a", "b", "b", "c", "c"], index=IDS)


def test_each_group_keeps_its_own_questions_and_is_ordered_by_retention():
    table = group_table(BASELINE, MODEL, GROUPS)
    assert list(table.index) == ["a", "b", "c"]
    assert table["questions"].tolist() == [2, 2, 2]
    assert table["retention"].tolist() == pytest.approx([50.0, 100.0, 150.0])
    assert table.loc["c", "baseline"] == pytest.approx(20.0)


def test_drawing_every_group_gives_the_overall_retention_and_one_group_gives_a_groups_own():
    overall = 100 * MODEL.sum() / BASELINE.sum()
    assert drawn_retention(BASELINE, MODEL, GROUPS, 3, 50) == pytest.approx(np.full(50, overall))
    singles = drawn_retention(BASELINE, MODEL, GROUPS, 1, 300)
    assert set(np.round(singles, 6)) == {50.0, 100.0, 150.0}
    pairs = drawn_retention(BASELINE, MODEL, GROUPS, 2, 300)  # pooled over the pair's questions, not averaged:
    assert set(np.round(pairs, 6)) == {75.0, 112.5}  # a+b 180/240, a+c 120/160 (not (50+150)/2), b+c 180/160
