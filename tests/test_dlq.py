"""Dead letters: every kind of bad record, produced raw, against the real broker.

The bad records are written with kafka-python directly, bypassing gradelab's
producer, which would refuse to send most of them.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from gradelab.averages import average_scores
from gradelab.config import Settings
from gradelab.consumer import stream_averages, topic_exists
from gradelab.dlq import (
    DeadLetter,
    DeadLetterPublisher,
    dlq_topic_for,
    export_dead_letters,
    read_dead_letters,
    replay_dead_letters,
)
from gradelab.errors import ConfigError, InvalidRecordError
from gradelab.record import Score
from gradelab.simulate import simulate_scores

GRADELAB = [sys.executable, "-m", "gradelab.cli"]
ONE_MEGABYTE = 1_000_000

# (key, value, reason code) of every kind of record the averages must reject.
BAD_RECORDS: list[tuple[bytes | None, bytes | None, str]] = [
    (b"Math", b"not json at all", "not-json"),
    (b"Math", b'{"class": "A", "subject": "Math", "score": 12', "not-json"),
    (None, b"\xff\xfe\x00 binary garbage", "not-utf8"),
    (b"Math", '{"class":"A","subject":"Maths é"}'.encode("latin-1"), "not-utf8"),
    (b"Math", b"", "empty"),
    (b"Math", None, "empty"),
    (None, b"[1, 2, 3]", "not-object"),
    (None, b"42", "not-object"),
    (None, b"null", "not-object"),
    (None, b'"Math 14"', "not-object"),
    (b"Math", b'{"class": "A", "subject": "Math"}', "missing-field"),
    (b"Math", b'{"subject": "Math", "score": 12}', "missing-field"),
    (b"Math", b'{"class": "A", "subject": "Math", "score": "twelve"}', "wrong-type"),
    (b"Math", b'{"class": 3, "subject": "Math", "score": 12}', "wrong-type"),
    (b"Math", b'{"class": "A", "subject": "Math", "score": true}', "wrong-type"),
    (b"Math", b'{"class": "A", "subject": "Math", "score": 21}', "score-out-of-range"),
    (
        b"Math",
        b'{"class": "A", "subject": "Math", "score": -0.5}',
        "score-out-of-range",
    ),
    (b"Math", b'{"class": "A", "subject": "Math", "score": NaN}', "score-not-finite"),
    (
        b"Math",
        b'{"class": "A", "subject": "Math", "score": Infinity}',
        "score-not-finite",
    ),
    (
        b"Math",
        b'{"class": "A", "subject": "Math", "score": -Infinity}',
        "score-not-finite",
    ),
    (
        b"Math",
        b'{"class": "A", "subject": "Math", "score": 12, "pad": "'
        + b"x" * ONE_MEGABYTE
        + b'"}',
        "too-large",
    ),
    (
        b"Math",
        b'{"class": "A", "subject": "Math", "score": 12, "score": 20}',
        "duplicate-key",
    ),
]


def _raw_producer(kafka: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=kafka, acks="all", max_request_size=2 * ONE_MEGABYTE
    )


def _produce_interleaved(kafka: str, topic: str, good: list[Score]) -> dict:
    """Send good and bad records alternately; return where each bad one landed."""
    producer = _raw_producer(kafka)
    bad_futures = []
    good_iter = iter(good)
    for key, value, reason in BAD_RECORDS:
        for score in [next(good_iter) for _ in range(5)]:
            producer.send(topic, key=score.key(), value=score.to_json())
        future = producer.send(topic, key=key, value=value)
        bad_futures.append((key, value, reason, future))
    for score in good_iter:
        producer.send(topic, key=score.key(), value=score.to_json())
    # Extra unknown fields are allowed and the record counts.
    extra = b'{"class": "B", "subject": "Math", "score": 13, "teacher": "Durand"}'
    producer.send(topic, key=b"Math", value=extra)
    producer.flush()
    producer.close()
    placed = {}
    for key, value, reason, future in bad_futures:
        metadata = future.get(timeout=10)
        placed[(metadata.partition, metadata.offset)] = (key, value, reason)
    return placed


def _good_scores(count: int) -> list[Score]:
    return list(simulate_scores(count, seed=11, subjects=4, start_time=1.7e9))


def _expected_frame(good: list[Score]) -> pd.DataFrame:
    rows = [score.to_dict() for score in good]
    rows.append({"class": "B", "subject": "Math", "score": 13})
    return average_scores(pd.DataFrame(rows), by="subject")


def _assert_same_averages(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual["subject"]) == list(expected["subject"])
    assert list(actual["count"]) == list(expected["count"])
    assert list(actual["mean"]) == pytest.approx(list(expected["mean"]), rel=1e-12)
    assert list(actual["min"]) == list(expected["min"])
    assert list(actual["max"]) == list(expected["max"])


def test_dlq_every_bad_record_kind(kafka, topic_factory):
    topic = topic_factory(partitions=3)
    settings = Settings(bootstrap_servers=kafka, topic=topic)
    good = _good_scores(len(BAD_RECORDS) * 5 + 40)
    placed = _produce_interleaved(kafka, topic, good)

    with DeadLetterPublisher(settings) as publisher:
        summary = stream_averages(
            settings, idle_timeout=3, from_beginning=True, on_invalid=publisher
        )

    expected_reasons = Counter(reason for _, _, reason in BAD_RECORDS)
    _assert_same_averages(summary.averages.to_frame(), _expected_frame(good))
    assert summary.received == len(good) + 1 + len(BAD_RECORDS)
    assert summary.invalid == expected_reasons
    assert publisher.counts == expected_reasons
    assert publisher.topic == f"{topic}.dlq"

    letters = read_dead_letters(settings)
    assert len(letters) == len(BAD_RECORDS)
    by_origin = {(letter.partition, letter.offset): letter for letter in letters}
    assert set(by_origin) == set(placed)
    for position, (key, value, reason) in placed.items():
        letter = by_origin[position]
        assert letter.topic == topic
        assert letter.reason == reason
        assert letter.key == key
        assert letter.value == value
        assert letter.error
        assert letter.timestamp is not None
        assert not letter.replayed


def test_dlq_headers_name_reason_and_origin(kafka, topic_factory):
    topic = topic_factory(partitions=1)
    settings = Settings(bootstrap_servers=kafka, topic=topic)
    producer = _raw_producer(kafka)
    metadata = producer.send(topic, key=b"k", value=b'{"score": 99}').get(timeout=10)
    producer.close()

    with DeadLetterPublisher(settings) as publisher:
        stream_averages(
            settings, idle_timeout=2, from_beginning=True, on_invalid=publisher
        )

    consumer = KafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    partition = TopicPartition(dlq_topic_for(topic), 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    records = consumer.poll(timeout_ms=5000).get(partition, [])
    consumer.close()
    assert len(records) == 1
    headers = dict(records[0].headers)
    assert records[0].key == b"k"
    assert records[0].value == b'{"score": 99}'
    assert headers["reason"] == b"missing-field"
    assert b"class" in headers["error"]
    assert headers["topic"] == topic.encode()
    assert headers["partition"] == str(metadata.partition).encode()
    assert headers["offset"] == str(metadata.offset).encode()
    assert headers["timestamp"] == str(metadata.timestamp).encode()


def test_dlq_listing_deduplicates_reruns(kafka, topic_factory):
    topic = topic_factory(partitions=1)
    settings = Settings(bootstrap_servers=kafka, topic=topic)
    producer = _raw_producer(kafka)
    for value in (b"oops", b'{"class": "A", "subject": "Math", "score": 12}', b"[]"):
        producer.send(topic, key=b"Math", value=value)
    producer.flush()
    producer.close()

    for _ in range(2):
        with DeadLetterPublisher(settings) as publisher:
            stream_averages(
                settings, idle_timeout=2, from_beginning=True, on_invalid=publisher
            )
        assert publisher.count == 2

    consumer = KafkaConsumer(bootstrap_servers=kafka)
    end = consumer.end_offsets([TopicPartition(dlq_topic_for(topic), 0)])
    consumer.close()
    assert list(end.values()) == [4]
    letters = read_dead_letters(settings)
    assert [(letter.offset, letter.reason) for letter in letters] == [
        (0, "not-json"),
        (2, "not-object"),
    ]


def test_dlq_missing_topic_lists_nothing(settings):
    assert read_dead_letters(settings) == []


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GRADELAB, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_dlq_cli_lists_exports_and_replays(kafka, topic_factory, tmp_path):
    topic = topic_factory(partitions=1)
    producer = _raw_producer(kafka)
    for value in (
        b'{"class": "A", "subject": "Math", "score": 10}',
        b'{"class": "A", "subject": "Math", "score": "ten"}',
        b'{"class": "A", "subject": "Math", "score": 200}',
        b"\xff not utf-8",
    ):
        producer.send(topic, key=b"Math", value=value)
    producer.flush()
    producer.close()
    connection = ["--bootstrap-server", kafka, "--topic", topic]

    averages = _run_cli(
        "averages", *connection, "--from-beginning", "--idle-timeout", "2",
        "--format", "json",
    )  # fmt: skip
    assert averages.returncode == 0, averages.stderr
    assert json.loads(averages.stdout)[0]["count"] == 1
    assert f"3 invalid sent to {topic}.dlq" in averages.stderr
    assert "WARNING" in averages.stderr

    listing = _run_cli("dlq", *connection, "--format", "json")
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert [(row["offset"], row["reason"]) for row in rows] == [
        (1, "wrong-type"),
        (2, "score-out-of-range"),
        (3, "not-utf8"),
    ]
    table = _run_cli("dlq", *connection)
    assert f"{topic}/0/1  wrong-type" in table.stdout

    export = tmp_path / "dead-letters.jsonl"
    exported = _run_cli("dlq", *connection, "--export", str(export))
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [line["offset"] for line in lines] == [1, 2, 3]
    assert "value_base64" in lines[2]
    # The student fixes two records and leaves the third one broken.
    lines[0]["value"] = '{"class": "A", "subject": "Math", "score": 10.5}'
    lines[1]["value"] = '{"class": "A", "subject": "Math", "score": 20}'
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))

    replay = _run_cli("dlq", *connection, "--replay", str(export))
    assert replay.returncode == 1
    assert "Sent 2 corrected record(s) back; 1 still invalid" in replay.stdout
    assert "line 3" in replay.stderr
    again = _run_cli("dlq", *connection, "--replay", str(export))
    assert "Sent 0 corrected record(s) back; 1 still invalid; 2 replayed" in (
        again.stdout
    )

    after = _run_cli(
        "averages", *connection, "--from-beginning", "--idle-timeout", "2",
        "--format", "json", "--no-dlq",
    )  # fmt: skip
    row = json.loads(after.stdout)[0]
    assert row["count"] == 3
    assert row["mean"] == pytest.approx((10 + 10.5 + 20) / 3)
    replayed = {
        letter.offset: letter.replayed
        for letter in read_dead_letters(Settings(bootstrap_servers=kafka, topic=topic))
    }
    assert replayed == {1: True, 2: True, 3: False}


def test_dlq_replay_rejects_bad_file(settings, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"topic": "t", "partition": 0}\n')
    with pytest.raises(ConfigError, match="line|Line 1"):
        replay_dead_letters(settings, path)
    with pytest.raises(ConfigError, match="Cannot read the replay file"):
        replay_dead_letters(settings, tmp_path / "missing.jsonl")


def test_dlq_export_round_trips_binary(tmp_path):
    letters = [
        DeadLetter("t", 0, 5, "not-utf8", "bad", b"k", b"\xff\xfe"),
        DeadLetter("t", 1, 6, "empty", "empty", None, None),
    ]
    path = Path(tmp_path / "out.jsonl")
    assert export_dead_letters(letters, path) == 2
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["value_base64"] == "//4="
    assert lines[1]["value"] == ""
    assert lines[1]["key"] is None


def test_dlq_warnings_limited_per_reason(settings, caplog):
    caplog.set_level(logging.DEBUG, logger="gradelab.dlq")
    error = InvalidRecordError("The record value is empty.", "empty")
    with DeadLetterPublisher(settings) as publisher:
        for offset in range(25):
            record = SimpleNamespace(
                topic=settings.topic,
                partition=0,
                offset=offset,
                timestamp=1_700_000_000_000,
                key=None,
                value=b"",
            )
            publisher(record, error)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert publisher.counts == {"empty": 25}
    assert len(warnings) == 10
    assert len(debug) == 15
    assert "offset 9" in warnings[-1].getMessage()
    assert "10 so far" in warnings[-1].getMessage()
    assert len(read_dead_letters(settings)) == 25


def test_dlq_publisher_rejects_source_topic():
    settings = Settings(bootstrap_servers="127.0.0.1:1", topic="loop1")

    with pytest.raises(ConfigError, match="'loop1' is the topic being read"):
        DeadLetterPublisher(settings, "loop1")


def test_dlq_publisher_creates_topic_with_first_dead_letter(settings):
    record = SimpleNamespace(
        topic=settings.topic, partition=0, offset=0, timestamp=None, key=None,
        value=b"",
    )  # fmt: skip
    error = InvalidRecordError("The record value is empty.", "empty")

    with DeadLetterPublisher(settings):
        pass
    created_before = topic_exists(settings, dlq_topic_for(settings.topic))
    with DeadLetterPublisher(settings) as publisher:
        publisher(record, error)

    assert not created_before
    assert topic_exists(settings, dlq_topic_for(settings.topic))


@pytest.mark.parametrize("where", ["folder", "missing-folder"])
def test_dlq_export_unwritable_path_raises(tmp_path, where):
    path = tmp_path if where == "folder" else tmp_path / "absent" / "out.jsonl"

    with pytest.raises(ConfigError, match="Cannot write the dead letters"):
        export_dead_letters([], path)


def test_dlq_replay_rejects_non_utf8_file(tmp_path):
    settings = Settings(bootstrap_servers="127.0.0.1:1", topic="raw2")
    path = tmp_path / "edited.jsonl"
    path.write_bytes(
        b'{"topic": "raw2", "partition": 0, "offset": 0, "value": "\xff"}\n'
    )

    with pytest.raises(ConfigError, match="not UTF-8"):
        replay_dead_letters(settings, path)


def test_dlq_replay_sends_only_real_dead_letters(kafka, topic_factory, tmp_path):
    topic = topic_factory(partitions=1)
    other = f"{topic}-other"
    settings = Settings(bootstrap_servers=kafka, topic=topic)
    producer = _raw_producer(kafka)
    producer.send(topic, key=b"Math", value=b'{"class": "A", "subject": "Math"}')
    producer.flush()
    producer.close()
    with DeadLetterPublisher(settings) as publisher:
        stream_averages(
            settings, idle_timeout=2, from_beginning=True, on_invalid=publisher
        )
    fixed = '{"class": "A", "subject": "Math", "score": 12}'
    lines = [
        {"topic": topic, "partition": 0, "offset": 0, "value": fixed},
        {"topic": other, "partition": 0, "offset": 0, "value": fixed},
        {"topic": topic, "partition": 0, "offset": 99999, "value": fixed},
    ]
    path = tmp_path / "edited.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    report = replay_dead_letters(settings, path)

    assert report.sent == 1
    assert [problem.split(" ", 2)[1] for problem in report.rejected] == ["2", "3"]
    assert repr(other) in report.rejected[0]
    assert "no dead letter" in report.rejected[1]
    assert not topic_exists(settings, other)
    consumer = KafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    assert consumer.end_offsets([partition])[partition] == 2
    consumer.close()
