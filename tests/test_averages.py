"""Tests for gradelab.averages: exact grouped statistics, merging and state."""

from __future__ import annotations

import json
import random
import statistics
from collections import defaultdict

import pandas as pd
import pytest

from gradelab.averages import (
    STAT_COLUMNS,
    Averages,
    RunningStats,
    average_scores,
    parse_group_fields,
)
from gradelab.errors import ConfigError
from gradelab.record import GROUP_FIELDS, Score

ATTRIBUTES = {"class": "class_"}


def sample_scores(count: int = 400, seed: int = 3) -> list[Score]:
    """Build scores in half points over 3 classes, 4 subjects, 3 periods."""
    rng = random.Random(seed)
    scores = []
    for _ in range(count):
        class_name = rng.choice("ABC")
        period = rng.choice(["T1", "T2", "T3", None])
        scores.append(
            Score(
                class_=class_name,
                subject=rng.choice(["Math", "Physics", "French", "History"]),
                score=rng.randint(0, 40) / 2,
                student_id=f"{class_name}-{rng.randint(1, 9):02d}",
                period=period,
            )
        )
    return scores


def expected_rows(scores: list[Score], by: tuple[str, ...]) -> list[dict]:
    """Compute the grouped statistics the slow, obvious way."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for score in scores:
        key = tuple(getattr(score, ATTRIBUTES.get(f, f)) for f in by)
        groups[key].append(score.score)
    rows = []
    for key in sorted(groups, key=lambda k: [(p is None, p or "") for p in k]):
        values = groups[key]
        row = dict(zip(by, key, strict=True))
        row.update(
            count=len(values),
            mean=statistics.fmean(values),
            min=min(values),
            max=max(values),
        )
        rows.append(row)
    return rows


def test_running_stats_exact() -> None:
    stats = RunningStats()
    for value in (14, 9.5, 20, 0, 11.5):
        stats.add(value)

    assert stats.count == 5
    assert stats.total == 55.0
    assert stats.mean == 11.0
    assert stats.min == 0
    assert stats.max == 20


def test_running_stats_empty_mean_nan() -> None:
    stats = RunningStats()

    assert stats.count == 0
    assert stats.mean != stats.mean  # NaN


def test_averages_by_subject_exact() -> None:
    averages = Averages(by="subject")
    averages.add(Score("A", "Math", 14))
    averages.add(Score("B", "Math", 10.5))
    averages.add(Score("A", "Physics", 20))

    assert averages.rows() == [
        {"subject": "Math", "count": 2, "mean": 12.25, "min": 10.5, "max": 14},
        {"subject": "Physics", "count": 1, "mean": 20.0, "min": 20, "max": 20},
    ]
    assert averages.count == 3
    assert len(averages) == 2


@pytest.mark.parametrize(
    "by",
    [
        ("subject",),
        ("class",),
        ("period",),
        ("student_id",),
        ("class", "subject"),
        ("subject", "class"),
        ("subject", "period"),
        ("class", "subject", "period"),
        ("class", "subject", "period", "student_id"),
    ],
)
def test_averages_grouping_matches_direct(by: tuple[str, ...]) -> None:
    scores = sample_scores()
    averages = Averages(by=by)
    averages.add_all(scores)

    assert averages.by == by
    assert averages.rows() == expected_rows(scores, by)
    assert averages.count == len(scores)


def test_averages_missing_field_group_last() -> None:
    averages = Averages(by="period")
    averages.add(Score("A", "Math", 8))
    averages.add(Score("A", "Math", 12, period="T1"))

    rows = averages.rows()

    assert [row["period"] for row in rows] == ["T1", None]


def test_averages_string_and_list_by_equal() -> None:
    assert Averages(by="class, subject").by == ("class", "subject")
    assert Averages(by=["class", "subject"]).by == ("class", "subject")


@pytest.mark.parametrize(
    "by",
    ["", " , ", "score", "Class", "subjects", "class,teacher", "class,class", []],
)
def test_averages_invalid_by(by: object) -> None:
    with pytest.raises(ConfigError) as caught:
        Averages(by=by)  # type: ignore[arg-type]

    assert repr(by) in str(caught.value)


@pytest.mark.parametrize("by", [None, 3, ["class", 1]])
def test_parse_group_fields_not_text(by: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_group_fields(by)  # type: ignore[arg-type]

    for field in GROUP_FIELDS:
        assert field in str(caught.value)


def test_averages_merge_equals_single_pass() -> None:
    scores = sample_scores(600, seed=11)
    by = ("class", "subject")
    single = Averages(by=by)
    single.add_all(scores)

    parts = [Averages(by=by) for _ in range(3)]
    for index, score in enumerate(scores):
        parts[index % 3].add(score)
    merged = Averages(by=by)
    for part in parts:
        merged.merge(part)

    assert merged.rows() == single.rows()


def test_averages_merge_disjoint_groups() -> None:
    left = Averages()
    left.add(Score("A", "Math", 4))
    right = Averages()
    right.add(Score("A", "Physics", 16))

    left.merge(right)

    assert [row["subject"] for row in left.rows()] == ["Math", "Physics"]
    assert [row["subject"] for row in right.rows()] == ["Physics"]


def test_averages_merge_different_grouping_rejected() -> None:
    with pytest.raises(ValueError):
        Averages(by="subject").merge(Averages(by="class"))


def test_averages_clear() -> None:
    averages = Averages()
    averages.add_all(sample_scores(20))

    averages.clear()

    assert averages.rows() == []
    assert averages.count == 0


def test_averages_state_round_trip() -> None:
    scores = sample_scores()
    averages = Averages(by=("subject", "period"))
    averages.add_all(scores)

    state = json.loads(json.dumps(averages.to_state()))
    restored = Averages.from_state(state)

    assert restored.by == averages.by
    assert restored.rows() == averages.rows()


def test_averages_state_continues_after_restore() -> None:
    scores = sample_scores()
    whole = Averages()
    whole.add_all(scores)

    first = Averages()
    first.add_all(scores[:150])
    restored = Averages.from_state(json.loads(json.dumps(first.to_state())))
    restored.add_all(scores[150:])

    assert restored.rows() == whole.rows()


def test_averages_to_frame_columns() -> None:
    averages = Averages(by="class,subject")
    averages.add_all(sample_scores(50))

    frame = averages.to_frame()

    assert list(frame.columns) == ["class", "subject", *STAT_COLUMNS]
    assert len(frame) == len(averages)
    assert frame["count"].sum() == 50


def test_averages_to_frame_empty() -> None:
    frame = Averages(by="period").to_frame()

    assert list(frame.columns) == ["period", *STAT_COLUMNS]
    assert frame.empty


def test_averages_memory_grows_with_groups_only() -> None:
    averages = Averages(by="subject")
    for repeat in range(50):
        averages.add_all(sample_scores(100, seed=repeat))

    assert len(averages.groups) == 4
    assert averages.count == 5000


@pytest.mark.parametrize("by", ["subject", "class,subject", "period", "student_id"])
def test_average_scores_frame_equals_streaming(by: str) -> None:
    scores = sample_scores()
    frame = pd.DataFrame([score.to_dict() for score in scores])
    for column in ("student_id", "period"):
        if column not in frame.columns:
            frame[column] = None

    from_frame = average_scores(frame, by=by)
    streamed = average_scores(scores, by=by)

    pd.testing.assert_frame_equal(
        from_frame.reset_index(drop=True),
        streamed.reset_index(drop=True),
        check_dtype=False,
    )


def test_average_scores_frame_missing_column() -> None:
    frame = pd.DataFrame({"subject": ["Math"], "score": [12]})

    with pytest.raises(ConfigError) as caught:
        average_scores(frame, by="class")

    assert "class" in str(caught.value)
    assert "subject, score" in str(caught.value)


def test_average_scores_empty_input() -> None:
    frame = average_scores([], by="subject")

    assert list(frame.columns) == ["subject", *STAT_COLUMNS]
    assert frame.empty
