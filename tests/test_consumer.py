"""Tests for gradelab.consumer on the real broker: reads, groups, bad records."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import Counter

import pandas as pd
import pytest
from kafka import KafkaProducer

from gradelab.averages import average_scores
from gradelab.config import Settings
from gradelab.consumer import (
    ScoreConsumer,
    compute_averages,
    read_scores,
    stream_averages,
)
from gradelab.errors import InvalidRecordError
from gradelab.producer import ensure_topic, produce_scores
from gradelab.record import Score
from gradelab.simulate import simulate_scores

pytestmark = pytest.mark.kafka

START = 1_768_469_400.0
VALID = b'{"class": "A", "subject": "Math", "score": 14}'

# Raw record values that a careless producer might write, with the reason
# code each one must be counted under.
INVALID_VALUES = [
    (b"not json at all", "not-json"),
    (b'{"class": "A", "subject": "Math", "score": NaN}', "score-not-finite"),
    (b'{"class": "A", "subject": "Math", "score": 25}', "score-out-of-range"),
    (b'{"class": "A", "subject": "Math", "score": true}', "wrong-type"),
    (b'{"class": "A", "subject": "Math", "score": 1, "score": 2}', "duplicate-key"),
    (b'{"class": "A", "subject": "Math"}', "missing-field"),
    (b'{"class": "\xff", "subject": "Math", "score": 1}', "not-utf8"),
    (b"[1, 2, 3]", "not-object"),
    (None, "empty"),
    (
        b'{"class": "A", "subject": "Math", "score": 1, "x": "' + b"y" * 70_000 + b'"}',
        "too-large",
    ),
]


def produce_raw(kafka: str, topic: str, values: list[bytes | None]) -> None:
    """Write values as they are, with a plain kafka-python producer."""
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    try:
        for value in values:
            producer.send(topic, key=b"Math", value=value)
        producer.flush()
    finally:
        producer.close()


def produce_simulated(settings: Settings, count: int, seed: int = 0) -> list[Score]:
    scores = list(simulate_scores(count, seed=seed, start_time=START))
    report = produce_scores(settings, scores)
    assert report.sent == count
    return scores


def test_read_scores_reads_exactly_n(settings: Settings) -> None:
    scores = produce_simulated(settings, 300)

    frame = read_scores(settings, timeout=1)

    assert len(frame) == 300
    assert sorted(frame["score"]) == sorted(score.score for score in scores)
    pairs = list(zip(frame["partition"], frame["offset"], strict=True))
    assert len(set(pairs)) == 300  # no record read twice


def test_read_scores_columns_and_types(settings: Settings) -> None:
    produce_scores(
        settings,
        [
            Score("A", "Math", 14, student_id="A-01", period="T1", ts=START),
            Score("B", "Physics", 9.5),
        ],
    )

    frame = read_scores(settings, timeout=1).sort_values("score")

    assert list(frame.columns) == [
        "class",
        "subject",
        "score",
        "student_id",
        "period",
        "ts",
        "partition",
        "offset",
        "timestamp",
    ]
    assert isinstance(frame["ts"].dtype, pd.DatetimeTZDtype)
    assert isinstance(frame["timestamp"].dtype, pd.DatetimeTZDtype)
    assert frame["ts"].iloc[1] == pd.Timestamp(START, unit="s", tz="UTC")
    assert pd.isna(frame["ts"].iloc[0])
    assert frame["class"].tolist() == ["B", "A"]


def test_read_scores_bounded(settings: Settings) -> None:
    produce_simulated(settings, 200)

    frame = read_scores(settings, max_records=50, timeout=1)

    assert len(frame) == 50


def test_read_scores_empty_topic(settings: Settings) -> None:
    ensure_topic(settings)

    frame = read_scores(settings, timeout=1)

    assert frame.empty
    assert "score" in frame.columns


def test_read_scores_topic_argument(settings: Settings) -> None:
    other = dataclasses.replace(settings, topic=f"{settings.topic}-b")
    produce_simulated(other, 10)

    assert len(read_scores(settings, topic=other.topic, timeout=1)) == 10


def test_group_second_run_reads_nothing_new(settings: Settings) -> None:
    group = f"group-{uuid.uuid4().hex[:8]}"
    produce_simulated(settings, 120)

    first = read_scores(settings, group_id=group, timeout=1)
    second = read_scores(settings, group_id=group, timeout=1)
    produce_simulated(settings, 7, seed=1)
    third = read_scores(settings, group_id=group, timeout=1)

    assert len(first) == 120
    assert len(second) == 0
    assert len(third) == 7


def test_group_offsets_independent(settings: Settings) -> None:
    produce_simulated(settings, 40)

    first = read_scores(settings, group_id=f"g1-{uuid.uuid4().hex[:8]}", timeout=1)
    other = read_scores(settings, group_id=f"g2-{uuid.uuid4().hex[:8]}", timeout=1)

    assert len(first) == 40
    assert len(other) == 40


def test_no_group_rereads_from_beginning(settings: Settings) -> None:
    produce_simulated(settings, 30)

    assert len(read_scores(settings, timeout=1)) == 30
    assert len(read_scores(settings, timeout=1)) == 30


def test_consumer_latest_skips_old_records(settings: Settings) -> None:
    produce_simulated(settings, 25)
    with ScoreConsumer(settings, from_beginning=False) as consumer:
        deadline = time.monotonic() + 15
        while not consumer.consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout=0.2)
        # Positions are resolved lazily; fix them now, before new records.
        for partition in consumer.consumer.assignment():
            consumer.consumer.position(partition)
        produce_simulated(settings, 5, seed=2)
        received = [
            score
            for batch in consumer.iter_batches(idle_timeout=1)
            for _record, score in batch
        ]

    assert len(received) == 5


def test_invalid_records_counted_and_skipped(settings: Settings, kafka: str) -> None:
    ensure_topic(settings, partitions=1)
    values = [VALID]
    for value, _reason in INVALID_VALUES:
        values += [value, VALID]
    produce_raw(kafka, settings.topic, values)
    seen: list[tuple[int, str]] = []

    with ScoreConsumer(
        settings,
        from_beginning=True,
        on_invalid=lambda record, error: seen.append((record.offset, error.reason)),
    ) as consumer:
        valid = [
            score
            for batch in consumer.iter_batches(idle_timeout=1)
            for _record, score in batch
        ]

    expected = Counter(reason for _value, reason in INVALID_VALUES)
    assert len(valid) == len(INVALID_VALUES) + 1
    assert consumer.received == len(values)
    assert consumer.invalid == expected
    assert consumer.invalid_count == len(INVALID_VALUES)
    assert [offset for offset, _reason in seen] == list(range(1, len(values), 2))


def test_invalid_records_logged_with_offset(
    settings: Settings, kafka: str, caplog: pytest.LogCaptureFixture
) -> None:
    ensure_topic(settings, partitions=1)
    produce_raw(kafka, settings.topic, [VALID, b"{oops", VALID])
    caplog.set_level(logging.WARNING, logger="gradelab.consumer")

    summary = stream_averages(settings, idle_timeout=1)

    warnings = [r for r in caplog.records if r.name == "gradelab.consumer"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert "partition 0" in message
    assert "offset 1" in message
    assert "not-json" in message
    assert summary.received == 3
    assert summary.invalid == Counter({"not-json": 1})
    assert summary.averages.rows()[0]["count"] == 2


def test_deeply_nested_record_does_not_stop(settings: Settings, kafka: str) -> None:
    ensure_topic(settings, partitions=1)
    nested = (
        b'{"class": "A", "subject": "Math", "score": 1, "x": '
        + b'{"a": ' * 1000
        + b"1"
        + b"}" * 1000
        + b"}"
    )
    produce_raw(kafka, settings.topic, [VALID, nested, VALID])

    summary = stream_averages(settings, idle_timeout=1)

    assert summary.received == 3
    assert summary.averages.rows()[0]["count"] == 2


def test_stream_averages_match_direct(settings: Settings) -> None:
    scores = produce_simulated(settings, 400, seed=6)

    summary = stream_averages(settings, by="class,subject", idle_timeout=1)

    expected = average_scores(scores, by="class,subject")
    pd.testing.assert_frame_equal(summary.averages.to_frame(), expected)
    assert summary.received == 400
    assert sum(summary.invalid.values()) == 0


def test_compute_averages_frame(settings: Settings) -> None:
    scores = produce_simulated(settings, 150, seed=2)

    frame = compute_averages(settings, by="period", timeout=1)

    pd.testing.assert_frame_equal(frame, average_scores(scores, by="period"))


def test_average_scores_on_read_frame(settings: Settings) -> None:
    scores = produce_simulated(settings, 150, seed=5)

    frame = average_scores(read_scores(settings, timeout=1), by="subject")

    pd.testing.assert_frame_equal(
        frame, average_scores(scores, by="subject"), check_dtype=False
    )


def test_stream_averages_bounded_and_stoppable(settings: Settings) -> None:
    produce_simulated(settings, 100)
    batches: list[int] = []

    bounded = stream_averages(settings, idle_timeout=1, max_records=40)
    stopped = stream_averages(
        settings,
        idle_timeout=10,
        on_batch=lambda averages: batches.append(averages.count),
        stop=lambda: bool(batches),
    )

    assert bounded.received == 40
    assert bounded.averages.count == 40
    assert len(batches) == 1
    assert stopped.averages.count == batches[0]


def test_decode_sends_invalid_to_handler(settings: Settings, kafka: str) -> None:
    ensure_topic(settings, partitions=1)
    produce_raw(kafka, settings.topic, [b"[]", VALID])
    errors: list[InvalidRecordError] = []

    with ScoreConsumer(
        settings,
        from_beginning=True,
        on_invalid=lambda _record, error: errors.append(error),
    ) as consumer:
        valid = [
            pair for batch in consumer.iter_batches(idle_timeout=1) for pair in batch
        ]

    assert len(valid) == 1
    assert valid[0][0].offset == 1
    assert valid[0][1] == Score("A", "Math", 14)
    assert [error.reason for error in errors] == ["not-object"]
