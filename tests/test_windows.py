"""Tests for event-time tumbling windows: pure logic first, then real Kafka topics."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pandas as pd
import pytest

from gradelab.averages import average_scores
from gradelab.config import Settings
from gradelab.errors import ConfigError
from gradelab.producer import produce_scores
from gradelab.record import Score
from gradelab.simulate import simulate_scores
from gradelab.windows import (
    TumblingWindows,
    stream_windows,
    window_start,
    windows_frame,
)

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a multiple of 60 s


def math_score(score: float, ts: float, subject: str = "Math") -> Score:
    return Score("A", subject, score, ts=START + ts)


def test_window_start_aligns_to_size() -> None:
    assert window_start(START + 59.999, 60) == START
    assert window_start(START + 60, 60) == START + 60
    assert window_start(START + 61, 30) == START + 60


def test_windows_average_per_window_and_subject() -> None:
    windows = TumblingWindows(size=60)
    windows.add_all(
        [
            math_score(10, 0),
            math_score(14, 30, "Physics"),
            math_score(12, 59),
            math_score(20, 60),
        ]
    )
    results = windows.flush()
    frame = windows_frame(results)
    assert list(frame.columns) == [
        "window_start",
        "window_end",
        "subject",
        "count",
        "mean",
        "min",
        "max",
    ]
    rows = frame.to_dict("records")
    assert [(r["subject"], r["count"], r["mean"]) for r in rows] == [
        ("Math", 2, 11.0),
        ("Physics", 1, 14.0),
        ("Math", 1, 20.0),
    ]
    assert rows[0]["window_start"] == pd.Timestamp(START, unit="s", tz="UTC")
    assert rows[0]["window_end"] == pd.Timestamp(START + 60, unit="s", tz="UTC")


def test_windows_match_batch_averages_per_window() -> None:
    scores = list(simulate_scores(300, seed=3, start_time=START, interval=0.7))
    windows = TumblingWindows(size=60, by="class,subject")
    assert windows.add_all(scores) == 0
    frame = windows_frame(windows.flush())
    for start, group in frame.groupby("window_start"):
        seconds = start.timestamp()
        inside = [s for s in scores if seconds <= s.ts < seconds + 60]
        expected = average_scores(inside, by="class,subject")
        assert group["count"].tolist() == expected["count"].tolist()
        assert group["mean"].tolist() == pytest.approx(expected["mean"].tolist())
    assert frame["count"].sum() == len(scores)


def test_windows_close_when_watermark_passes_end() -> None:
    windows = TumblingWindows(size=60, allowed_lateness=0)
    windows.add(math_score(10, 5))
    assert windows.pop_closed() == []
    windows.add(math_score(12, 60))
    closed = windows.pop_closed()
    assert [result.start for result in closed] == [START]
    assert closed[0].averages.count == 1
    assert windows.pop_closed() == []


def test_windows_accept_out_of_order_within_lateness() -> None:
    windows = TumblingWindows(size=60, allowed_lateness=20)
    windows.add(math_score(10, 10))
    windows.add(math_score(18, 70))
    assert windows.add(math_score(14, 50)) is True
    assert windows.late == 0
    first = windows.flush()[0]
    assert first.averages.count == 2
    assert first.averages.to_frame()["mean"].tolist() == [12.0]


def test_windows_reject_late_records_and_count_them() -> None:
    windows = TumblingWindows(size=60, allowed_lateness=5)
    windows.add(math_score(10, 10))
    windows.add(math_score(18, 70))
    closed = windows.pop_closed()
    assert [result.averages.count for result in closed] == [1]
    assert windows.add(math_score(0, 30)) is False
    assert windows.late == 1
    assert windows.added == 2
    sample = windows.late_samples[0]
    assert sample.window_start == START
    assert sample.lateness == pytest.approx(5.0)
    assert closed[0].averages.count == 1  # the emitted result did not change
    late = windows.late_frame()
    assert late["score"].tolist() == [0]
    assert late["lateness"].tolist() == [pytest.approx(5.0)]


def test_windows_late_after_flush() -> None:
    windows = TumblingWindows(size=60, allowed_lateness=10)
    windows.add(math_score(10, 10))
    assert len(windows.flush()) == 1
    assert windows.add(math_score(11, 20)) is False
    assert windows.late == 1
    assert windows.add(math_score(11, 200)) is True


def test_windows_count_scores_without_event_time() -> None:
    windows = TumblingWindows(size=60)
    assert windows.add(Score("A", "Math", 12)) is False
    assert windows.missing_time == 1
    assert windows.added == 0
    assert windows.flush() == []


def test_windows_watermark_is_minimum_over_partitions() -> None:
    windows = TumblingWindows(size=60)
    windows.add(math_score(10, 130), partition=0)
    assert windows.watermark == START + 130
    windows.add(math_score(12, 10, "Physics"), partition=1)
    assert windows.watermark == START + 130  # a watermark never goes back
    assert windows.late == 1
    windows = TumblingWindows(size=60)
    windows.add(math_score(12, 10, "Physics"), partition=1)
    windows.add(math_score(10, 130), partition=0)
    assert windows.watermark == START + 10
    assert windows.add(math_score(14, 20, "Physics"), partition=1) is True
    assert windows.pop_closed() == []
    windows.add(math_score(16, 65, "Physics"), partition=1)
    assert windows.watermark == START + 65
    assert [result.averages.count for result in windows.pop_closed()] == [2]


def test_windows_expected_partitions_hold_watermark() -> None:
    windows = TumblingWindows(size=60)
    windows.expect_partitions([0, 1])
    windows.add(math_score(10, 130), partition=0)
    assert windows.watermark is None
    assert windows.add(math_score(12, 10, "Physics"), partition=1) is True
    assert windows.late == 0
    assert windows.watermark == START + 10
    windows.add(math_score(14, 125, "Physics"), partition=1)
    assert [result.averages.count for result in windows.pop_closed()] == [1]


def test_windows_open_windows_are_sorted() -> None:
    windows = TumblingWindows(size=10, allowed_lateness=100)
    windows.add(math_score(1, 25))
    windows.add(math_score(2, 5))
    assert [result.start for result in windows.open_windows()] == [START, START + 20]


@pytest.mark.parametrize("size", [0, -5, math.nan, math.inf, "60"])
def test_windows_reject_invalid_size(size: object) -> None:
    with pytest.raises(ConfigError, match="window size"):
        TumblingWindows(size=size)  # type: ignore[arg-type]


@pytest.mark.parametrize("lateness", [-1, math.nan, None])
def test_windows_reject_invalid_lateness(lateness: object) -> None:
    with pytest.raises(ConfigError, match="allowed lateness"):
        TumblingWindows(size=60, allowed_lateness=lateness)  # type: ignore[arg-type]


def test_windows_reject_unknown_group_field() -> None:
    with pytest.raises(ConfigError, match="grouping"):
        TumblingWindows(size=60, by="teacher")


def test_windows_frame_empty() -> None:
    frame = windows_frame([])
    assert frame.empty
    assert "window_start" in frame.columns


@pytest.mark.kafka
def test_stream_windows_reads_partitions_without_false_late(
    settings: Settings,
) -> None:
    scores = list(simulate_scores(200, seed=6, start_time=START, subjects=6))
    produce_scores(settings, scores)
    windows, results = stream_windows(settings, size=30, idle_timeout=2)
    assert windows.late == 0
    assert windows.added == 200
    expected = average_scores(scores, by="subject")
    merged = results[0].averages
    for result in results[1:]:
        merged.merge(result.averages)
    assert merged.to_frame()["count"].tolist() == expected["count"].tolist()


@pytest.mark.kafka
def test_stream_windows_counts_late_records(
    settings: Settings, topic_factory: Callable[..., str]
) -> None:
    # One partition, so the consumer reads records in the order produced and
    # the two old Math scores arrive after their window has closed.
    settings = dataclasses.replace(settings, topic=topic_factory(partitions=1))
    scores = list(simulate_scores(120, seed=5, start_time=START, interval=1.0))
    late_scores = [math_score(5, 3), math_score(7, 4)]
    report = produce_scores(settings, scores + late_scores)
    assert report.sent == 122
    closed: list[float] = []
    windows, results = stream_windows(
        settings,
        size=60,
        allowed_lateness=5,
        idle_timeout=2,
        on_closed=lambda result: closed.append(result.start),
    )
    assert windows.late == 2
    assert windows.added == 120
    assert [result.start for result in results] == [START, START + 60]
    assert closed == [START, START + 60]
    assert sum(result.averages.count for result in results) == 120
