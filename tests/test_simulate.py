"""Tests for gradelab.simulate: a seeded, reproducible school."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter

import pytest

from gradelab.errors import ConfigError
from gradelab.record import SCORE_MAX, SCORE_MIN, Score
from gradelab.simulate import DEFAULT_SUBJECTS, class_names, simulate_scores

START = 1_768_469_400.0


def test_simulate_same_seed_same_scores() -> None:
    first = list(simulate_scores(500, seed=42, start_time=START))
    second = list(simulate_scores(500, seed=42, start_time=START))

    assert first == second


def test_simulate_other_seed_other_scores() -> None:
    first = list(simulate_scores(200, seed=1, start_time=START))
    second = list(simulate_scores(200, seed=2, start_time=START))

    assert [s.score for s in first] != [s.score for s in second]


def test_simulate_prefix_stable() -> None:
    short = list(simulate_scores(50, seed=5, start_time=START))
    long = list(simulate_scores(400, seed=5, start_time=START))

    assert long[:50] == short


@pytest.mark.parametrize("count", [0, 1, 7, 300, 301])
def test_simulate_count(count: int) -> None:
    assert len(list(simulate_scores(count, classes=2, students=10))) == count


def test_simulate_without_count_is_endless() -> None:
    scores = list(itertools.islice(simulate_scores(classes=1, students=2), 1000))

    assert len(scores) == 1000


def test_simulate_scores_valid_and_in_range() -> None:
    for score in simulate_scores(3000, seed=9):
        assert isinstance(score, Score)
        assert SCORE_MIN <= score.score <= SCORE_MAX
        assert (score.score * 2) == int(score.score * 2)  # half points


def test_simulate_scores_realistic_spread() -> None:
    values = [score.score for score in simulate_scores(3000, seed=4)]

    assert 8 <= statistics.fmean(values) <= 14
    assert statistics.pstdev(values) >= 1.5
    assert len(set(values)) >= 15


def test_simulate_round_covers_every_pair_once() -> None:
    scores = list(simulate_scores(3 * 4 * 5, classes=3, subjects=4, students=5))
    pairs = Counter((score.student_id, score.subject) for score in scores)

    assert len(pairs) == 60
    assert set(pairs.values()) == {1}
    assert {score.period for score in scores} == {"T1"}


def test_simulate_periods_cycle() -> None:
    per_round = 2 * 1 * 3
    scores = list(simulate_scores(per_round * 4, classes=2, subjects=1, students=3))
    periods = [score.period for score in scores[::per_round]]

    assert periods == ["T1", "T2", "T3", "T1"]


def test_simulate_default_options() -> None:
    scores = list(simulate_scores(3 * 4 * 25))

    assert {score.class_ for score in scores} == {"A", "B", "C"}
    assert {score.subject for score in scores} == set(DEFAULT_SUBJECTS[:4])
    assert len({score.student_id for score in scores}) == 75


def test_simulate_class_subject_student_counts() -> None:
    scores = list(simulate_scores(5 * 6 * 2, classes=5, subjects=6, students=2))

    assert {score.class_ for score in scores} == set("ABCDE")
    assert {score.subject for score in scores} == set(DEFAULT_SUBJECTS)
    assert len({score.student_id for score in scores}) == 10


def test_simulate_named_classes_and_subjects() -> None:
    scores = list(
        simulate_scores(
            60, classes=["2nde A", "1re B"], subjects=["Maths", "SVT"], students=3
        )
    )

    assert {score.class_ for score in scores} == {"2nde A", "1re B"}
    assert {score.subject for score in scores} == {"Maths", "SVT"}


def test_simulate_student_ids_include_class() -> None:
    for score in simulate_scores(100, classes=2, students=30):
        assert score.student_id.startswith(f"{score.class_}-")


def test_simulate_event_times_from_start() -> None:
    scores = list(simulate_scores(5, start_time=START, interval=2.5))

    assert [score.ts for score in scores] == [START + 2.5 * i for i in range(5)]


def test_simulate_event_times_from_clock() -> None:
    readings = iter(range(1_700_000_000, 1_700_000_010))

    scores = list(simulate_scores(3, clock=lambda: float(next(readings))))

    assert [score.ts for score in scores] == [1.7e9, 1.7e9 + 1, 1.7e9 + 2]


def test_class_names_letters() -> None:
    assert class_names(3) == ["A", "B", "C"]
    assert class_names(28)[-3:] == ["Z", "AA", "AB"]
    assert class_names(0) == []


@pytest.mark.parametrize(
    ("options", "value"),
    [
        ({"count": -1}, "-1"),
        ({"students": 0}, "0"),
        ({"classes": 0}, "0"),
        ({"classes": -3}, "-3"),
        ({"subjects": 0}, "0"),
        ({"subjects": len(DEFAULT_SUBJECTS) + 1}, str(len(DEFAULT_SUBJECTS) + 1)),
        ({"classes": []}, ""),
        ({"subjects": []}, ""),
        ({"classes": ["A", ""]}, "''"),
        ({"subjects": ["Math", "Math"]}, "'Math'"),
    ],
)
def test_simulate_bad_options_rejected_on_call(options: dict, value: str) -> None:
    # The error comes from the call itself, before any score is drawn.
    with pytest.raises(ConfigError) as caught:
        simulate_scores(**options)

    assert value in str(caught.value)
