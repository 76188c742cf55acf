"""Tests for gradelab.record: validation, reason codes, JSON and the key."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone

import pytest
from kafka import KafkaConsumer

from gradelab.config import Settings
from gradelab.errors import InvalidRecordError
from gradelab.producer import produce_scores
from gradelab.record import (
    MAX_TEXT_LENGTH,
    MAX_VALUE_BYTES,
    Score,
    decode_score,
    format_timestamp,
    parse_timestamp,
    record_key,
)

ORIGINAL = b'{"class": "A", "subject": "Math", "score": 14}'
JANUARY_15 = datetime(2026, 1, 15, 9, 30, tzinfo=UTC).timestamp()


def record(**fields: object) -> bytes:
    """Build a record value from the original message plus ``fields``."""
    data: dict[str, object] = {"class": "A", "subject": "Math", "score": 14}
    data.update(fields)
    return json.dumps(data).encode("utf-8")


def reason_of(value: bytes | None) -> str:
    with pytest.raises(InvalidRecordError) as caught:
        decode_score(value)
    return caught.value.reason


def test_decode_original_course_message() -> None:
    score = decode_score(ORIGINAL)

    assert score == Score("A", "Math", 14)
    assert score.student_id is None
    assert score.period is None
    assert score.ts is None


def test_decode_optional_fields() -> None:
    value = record(student_id="A-01", period="G1", ts="2026-01-15T09:30:00Z")

    score = decode_score(value)

    assert score.student_id == "A-01"
    assert score.period == "G1"
    assert score.ts == JANUARY_15


def test_decode_optional_fields_null() -> None:
    score = decode_score(record(student_id=None, period=None, ts=None))

    assert score == Score("A", "Math", 14)


def test_decode_unknown_fields_ignored() -> None:
    value = record(teacher="M. Dupont", extra={"nested": [1, 2]}, flag=True)

    assert decode_score(value) == Score("A", "Math", 14)


@pytest.mark.parametrize("score", [0, 20, 0.0, 20.0, 10.5, 13.25])
def test_decode_score_bounds_accepted(score: float) -> None:
    assert decode_score(record(score=score)).score == score


def test_decode_whitespace_around_object() -> None:
    assert decode_score(b"  \n" + ORIGINAL + b"\n ") == Score("A", "Math", 14)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"{", "not-json"),
        (b"class=A subject=Math score=14", "not-json"),
        (ORIGINAL + b"\n" + ORIGINAL, "not-json"),
        (b"\xef\xbb\xbf" + ORIGINAL, "not-json"),
        (b"[1, 2]", "not-object"),
        (b"[]", "not-object"),
        (b"14", "not-object"),
        (b"14.5", "not-object"),
        (b"null", "not-object"),
        (b"true", "not-object"),
        (b'"A,Math,14"', "not-object"),
        (b'{"class": "\xe9", "subject": "Math", "score": 14}', "not-utf8"),
        (b'{"class": "A", "subject": "Math", "score": 14, "x": "\xff"}', "not-utf8"),
        (b'{"subject": "Math", "score": 14}', "missing-field"),
        (b'{"class": "A", "score": 14}', "missing-field"),
        (b'{"class": "A", "subject": "Math"}', "missing-field"),
        (b"{}", "missing-field"),
        (b'{"class": null, "subject": "Math", "score": 14}', "missing-field"),
        (b'{"class": "A", "subject": "Math", "score": null}', "wrong-type"),
        (b'{"class": "A", "subject": "Math", "score": "14"}', "wrong-type"),
        (b'{"class": "A", "subject": "Math", "score": true}', "wrong-type"),
        (b'{"class": "A", "subject": "Math", "score": false}', "wrong-type"),
        (b'{"class": "A", "subject": "Math", "score": [14]}', "wrong-type"),
        (b'{"class": 1, "subject": "Math", "score": 14}', "wrong-type"),
        (b'{"class": "A", "subject": ["Math"], "score": 14}', "wrong-type"),
        (record(student_id=7), "wrong-type"),
        (record(period=1), "wrong-type"),
        (b'{"class": "", "subject": "Math", "score": 14}', "empty-field"),
        (b'{"class": "A", "subject": "  ", "score": 14}', "empty-field"),
        (record(period=""), "empty-field"),
        (record(**{"class": "x" * (MAX_TEXT_LENGTH + 1)}), "field-too-long"),
        (b'{"class": "A", "subject": "Math", "score": NaN}', "score-not-finite"),
        (b'{"class": "A", "subject": "Math", "score": Infinity}', "score-not-finite"),
        (b'{"class": "A", "subject": "Math", "score": -Infinity}', "score-not-finite"),
        (b'{"class": "A", "subject": "Math", "score": 1e400}', "score-not-finite"),
        (record(score=21), "score-out-of-range"),
        (record(score=20.01), "score-out-of-range"),
        (record(score=-0.5), "score-out-of-range"),
        (record(score=10**30), "score-out-of-range"),
        (record(ts="yesterday"), "invalid-timestamp"),
        (record(ts="2026-13-45T99:00:00"), "invalid-timestamp"),
        (record(ts=True), "invalid-timestamp"),
        (record(ts=-1), "invalid-timestamp"),
        (record(ts=1768469400000), "invalid-timestamp"),  # milliseconds
        (record(ts=[2026, 1, 15]), "invalid-timestamp"),
        (
            b'{"class": "A", "subject": "Math", "score": 14, "ts": NaN}',
            "invalid-timestamp",
        ),
    ],
)
def test_decode_invalid_reason(value: bytes | None, reason: str) -> None:
    assert reason_of(value) == reason


def test_decode_text_max_length_accepted() -> None:
    value = record(**{"class": "x" * MAX_TEXT_LENGTH})

    assert decode_score(value).class_ == "x" * MAX_TEXT_LENGTH


@pytest.mark.parametrize(
    "value",
    [
        b'{"class": "A", "subject": "Math", "score": 14, "score": 15}',
        b'{"class": "A", "class": "B", "subject": "Math", "score": 14}',
        b'{"class": "A", "subject": "Math", "score": 14, "note": 1, "note": 2}',
        b'{"class": "A", "subject": "Math", "score": 14, "x": {"a": 1, "a": 2}}',
        b'{"class": "A", "subject": "Math", "score": 14, "x": [{"a": 1, "a": 2}]}',
        b'{"class": "A", "subject": "Math", "score": 14, "cl\\u0061ss": "B"}',
        b'{"class": "A", "subject": "Math", "score": 14, "a\\"b": 1, "a\\"b": 2}',
        b'{"class": "A:B", "subject": "Math", "score": 14, "class": "C"}',
        b'{"class": "A", "subject": "Math", "score": 14, "n": "x", "n": "a:b"}',
        b'{"class": "A", "subject": "Math", "score": NaN, "score": 14}',
    ],
)
def test_decode_duplicate_keys_rejected(value: bytes) -> None:
    assert reason_of(value) == "duplicate-key"


@pytest.mark.parametrize(
    "value",
    [
        b'{"class": "A:B", "subject": "x:y:z", "score": 14}',
        b'{"class": "A", "subject": "Math", "score": 14, "x": {"a": 1, "b": 2}}',
        b'{"class": "A", "subject": "Math", "score": 14, "x": {"class": "B"}}',
        b'{"class": "A", "subject": "Math", "score": 14, "x": "\\"a\\":1"}',
        b'{"class": "A", "subject": "Math", "score": 14, "a:b": 1}',
    ],
)
def test_decode_colons_and_nesting_not_duplicates(value: bytes) -> None:
    assert decode_score(value).score == 14


def test_decode_one_megabyte_value_rejected() -> None:
    value = record(comment="x" * (1024 * 1024))

    with pytest.raises(InvalidRecordError) as caught:
        decode_score(value)

    assert caught.value.reason == "too-large"
    assert str(len(value)) in str(caught.value)


def test_decode_size_limit_boundary() -> None:
    padding = MAX_VALUE_BYTES - len(record(comment=""))
    at_limit = record(comment="x" * padding)
    over_limit = record(comment="x" * (padding + 1))

    assert len(at_limit) == MAX_VALUE_BYTES
    assert decode_score(at_limit).score == 14
    assert reason_of(over_limit) == "too-large"


def test_decode_deep_nesting_rejected_by_orjson() -> None:
    depth = 5000
    value = (
        b'{"class": "A", "subject": "Math", "score": 14, "x": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )

    assert reason_of(value) == "not-json"


def test_decode_deep_objects_invalid_not_crash() -> None:
    depth = 1000
    value = (
        b'{"class": "A", "subject": "Math", "score": 14, "x": '
        + b'{"a": ' * depth
        + b"1"
        + b"}" * depth
        + b"}"
    )

    try:
        decode_score(value)
    except InvalidRecordError:
        pass


def test_decode_lone_surrogate_rejected() -> None:
    value = b'{"class": "A", "subject": "\\ud800", "score": 14}'

    assert reason_of(value) == "not-utf8"


def test_error_message_names_value() -> None:
    with pytest.raises(InvalidRecordError) as caught:
        decode_score(record(score=25))

    assert "25" in str(caught.value)
    assert "20" in str(caught.value)


def test_error_message_names_missing_field() -> None:
    with pytest.raises(InvalidRecordError) as caught:
        decode_score(b'{"class": "A", "score": 14}')

    assert "'subject'" in str(caught.value)


def test_score_validated_on_construction() -> None:
    with pytest.raises(InvalidRecordError) as caught:
        Score("A", "Math", 20.5)

    assert caught.value.reason == "score-out-of-range"


def test_score_construction_rejects_empty_class() -> None:
    with pytest.raises(InvalidRecordError) as caught:
        Score("", "Math", 12)

    assert caught.value.reason == "empty-field"


def test_score_immutable() -> None:
    score = Score("A", "Math", 12)

    with pytest.raises(AttributeError):
        score.score = 13  # type: ignore[misc]


def test_timestamp_iso_with_z() -> None:
    assert parse_timestamp("2026-01-15T09:30:00Z") == JANUARY_15


def test_timestamp_naive_taken_as_utc() -> None:
    assert parse_timestamp("2026-01-15T09:30:00") == JANUARY_15
    assert parse_timestamp(datetime(2026, 1, 15, 9, 30)) == JANUARY_15


def test_timestamp_offset_applied() -> None:
    paris = timezone(timedelta(hours=1))

    assert parse_timestamp("2026-01-15T10:30:00+01:00") == JANUARY_15
    assert parse_timestamp(datetime(2026, 1, 15, 10, 30, tzinfo=paris)) == JANUARY_15


def test_timestamp_epoch_number() -> None:
    assert parse_timestamp(1768469400) == 1768469400.0
    assert parse_timestamp(1768469400.5) == 1768469400.5
    assert parse_timestamp(0) == 0.0


def test_timestamp_format_iso_utc() -> None:
    assert format_timestamp(JANUARY_15 + 0.25) == "2026-01-15T09:30:00.250Z"


def test_score_json_round_trip() -> None:
    scores = [
        Score("A", "Math", 14),
        Score("B", "Physics", 12.5, student_id="B-07", period="T2"),
        Score("C", "Français", 0, student_id="C-01", period="G3", ts=JANUARY_15),
        Score("D", "History", 19.75, ts=JANUARY_15 + 0.123),
    ]

    for score in scores:
        assert decode_score(score.to_json()) == score


def test_score_to_dict_omits_absent_fields() -> None:
    assert Score("A", "Math", 14).to_dict() == {
        "class": "A",
        "subject": "Math",
        "score": 14,
    }


def test_score_to_dict_ts_is_iso_text() -> None:
    data = Score("A", "Math", 14, ts=JANUARY_15).to_dict()

    assert data["ts"] == "2026-01-15T09:30:00.000Z"


def test_score_to_json_is_utf8_json() -> None:
    value = Score("A", "Français", 14).to_json()

    assert json.loads(value.decode("utf-8"))["subject"] == "Français"


def test_key_same_subject_same_key() -> None:
    first = Score("A", "Math", 14, student_id="A-01")
    second = Score("C", "Math", 3, period="G2")

    assert first.key() == second.key()
    assert first.key() == record_key("Math")
    assert record_key("Math") != record_key("Physics")


def test_key_is_utf8_subject() -> None:
    assert record_key("Français") == "Français".encode()


@pytest.mark.kafka
def test_key_subject_in_one_partition(topic_factory, kafka: str) -> None:
    topic = topic_factory(partitions=6)
    subjects = [f"Subject-{number}" for number in range(12)]
    scores = [
        Score(class_name, subject, (index % 41) / 2)
        for index, (class_name, subject) in enumerate(
            (class_name, subject)
            for class_name in ("A", "B", "C", "D", "E")
            for subject in subjects
        )
    ]
    target = Settings(bootstrap_servers=kafka, topic=topic)

    report = produce_scores(target, scores)

    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka, auto_offset_reset="earliest"
    )
    partitions_by_subject: dict[str, set[int]] = defaultdict(set)
    received = 0
    deadline = time.monotonic() + 15
    try:
        while received < len(scores) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for message in records:
                    subject = decode_score(message.value).subject
                    partitions_by_subject[subject].add(message.partition)
                    received += 1
    finally:
        consumer.close()

    assert report.sent == len(scores)
    assert received == len(scores)
    assert set(partitions_by_subject) == set(subjects)
    for subject, partitions in partitions_by_subject.items():
        assert len(partitions) == 1, f"{subject} is in partitions {partitions}"
    used = set().union(*partitions_by_subject.values())
    assert len(used) > 1  # the keys spread subjects over several partitions


@pytest.mark.parametrize(
    "fields",
    [
        {"class": "A\x1b[31mRED"},
        {"class": "A\x00"},
        {"subject": "Math\r\nInjected"},
        {"student_id": "s1\t"},
        {"period": "G1\x7f"},
        {"subject": "Math\x85"},
    ],
)
def test_decode_control_character_rejected(fields: dict[str, str]) -> None:
    assert reason_of(record(**fields)) == "invalid-character"


def test_score_control_character_rejected() -> None:
    with pytest.raises(InvalidRecordError) as caught:
        Score("A\x1b[2J", "Math", 14)

    assert caught.value.reason == "invalid-character"


def test_decode_no_break_space_accepted() -> None:
    score = decode_score(record(**{"class": "Classe\u00a0A", "subject": "Mathé"}))

    assert score.class_ == "Classe\u00a0A"
    assert score.subject == "Mathé"
