"""Tests for gradelab.producer and gradelab.connection, on the real broker."""

from __future__ import annotations

import dataclasses
import logging
import time

import pytest
from kafka import KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from gradelab.config import Settings
from gradelab.connection import connect
from gradelab.errors import BrokerUnavailableError, InvalidRecordError
from gradelab.producer import (
    DEFAULT_PARTITIONS,
    ScoreProducer,
    ensure_topic,
    make_producer,
    produce_scores,
)
from gradelab.record import Score, decode_score
from gradelab.simulate import simulate_scores

pytestmark = pytest.mark.kafka

START = 1_768_469_400.0


def read_topic(bootstrap_servers: str, topic: str, expected: int) -> list:
    """Read ``topic`` from the start with a plain kafka-python consumer.

    Polls until ``expected`` records arrived (or 15 s passed), then once more
    briefly, so a record beyond the expected count is also returned.
    """
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list = []
    deadline = time.monotonic() + 15
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
    finally:
        consumer.close()
    return records


def partitions_of(bootstrap_servers: str, topic: str) -> set[int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers)
    try:
        return consumer.partitions_for_topic(topic) or set()
    finally:
        consumer.close()


def test_produce_scores_exactly_n(settings: Settings, kafka: str) -> None:
    scores = list(simulate_scores(500, seed=3, start_time=START))

    report = produce_scores(settings, scores)
    records = read_topic(kafka, settings.topic, len(scores))

    assert report.sent == 500
    assert report.failed == 0
    assert report.skipped == 0
    assert report.errors == []
    assert len(records) == 500
    assert sorted(
        (decode_score(r.value) for r in records), key=lambda s: s.ts or 0
    ) == sorted(scores, key=lambda s: s.ts or 0)


def test_produce_scores_keys_and_values(settings: Settings, kafka: str) -> None:
    scores = [Score("A", "Math", 14), Score("B", "Physics", 9.5, period="G1")]

    produce_scores(settings, scores)
    records = read_topic(kafka, settings.topic, 2)

    by_key = {record.key: decode_score(record.value) for record in records}
    assert by_key == {b"Math": scores[0], b"Physics": scores[1]}


def test_produce_scores_invalid_items_skipped(settings: Settings, kafka: str) -> None:
    items = [
        Score("A", "Math", 12),
        InvalidRecordError("bad row", "wrong-type"),
        Score("A", "Math", 13),
        InvalidRecordError("another bad row", "missing-field"),
    ]

    report = produce_scores(settings, items)

    assert report.sent == 2
    assert report.skipped == 2
    assert len(read_topic(kafka, settings.topic, 2)) == 2


def test_produce_scores_progress_called(settings: Settings) -> None:
    calls: list[int] = []

    produce_scores(settings, simulate_scores(37), progress=calls.append)

    assert calls == [1] * 37


def test_produce_scores_rate_limited(settings: Settings) -> None:
    started = time.monotonic()

    report = produce_scores(settings, simulate_scores(11), rate=50)

    # Eleven records at 50 per second are spread over at least 10 intervals.
    assert time.monotonic() - started >= 10 / 50
    assert report.sent == 11


def test_produce_scores_creates_topic(settings: Settings, kafka: str) -> None:
    produce_scores(settings, [Score("A", "Math", 10)])

    assert len(partitions_of(kafka, settings.topic)) == DEFAULT_PARTITIONS


def test_produce_scores_empty_iterable(settings: Settings) -> None:
    report = produce_scores(settings, [])

    assert report.sent == 0
    assert report.skipped == 0


def test_score_producer_flushes_on_exit(settings: Settings, kafka: str) -> None:
    with ScoreProducer(settings) as producer:
        for score in simulate_scores(120, seed=8):
            producer.send(score)

    assert producer.report.sent == 120
    assert len(read_topic(kafka, settings.topic, 120)) == 120


def test_score_producer_flush_counts_acks(settings: Settings) -> None:
    with ScoreProducer(settings) as producer:
        producer.send(Score("A", "Math", 11))
        producer.send(Score("A", "Math", 12))
        report = producer.flush()

        assert report.sent == 2
        assert report.failed == 0


def test_make_producer_delivery_guarantees(settings: Settings) -> None:
    producer = make_producer(settings)
    try:
        assert producer.config["acks"] in ("all", -1)
        assert producer.config["enable_idempotence"] is True
    finally:
        producer.close()


def test_make_producer_weakened_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gradelab.producer")

    producer = make_producer(settings, acks=1, enable_idempotence=False)
    producer.close()

    warnings = [r for r in caplog.records if r.name == "gradelab.producer"]
    assert len(warnings) == 1
    assert "acks=1" in warnings[0].getMessage()


def test_ensure_topic_created_once(settings: Settings, kafka: str) -> None:
    assert ensure_topic(settings, partitions=5) is True
    assert ensure_topic(settings, partitions=5) is False
    assert partitions_of(kafka, settings.topic) == {0, 1, 2, 3, 4}


def test_ensure_topic_config(settings: Settings, kafka: str) -> None:
    ensure_topic(settings, partitions=1, config={"retention.ms": "3600000"})

    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topic)]
        )
    finally:
        admin.close()
    text = repr(described)
    assert "retention.ms" in text
    assert "3600000" in text


def test_ensure_topic_other_name(settings: Settings, kafka: str) -> None:
    other = f"{settings.topic}-other"

    assert ensure_topic(settings, topic=other, partitions=2) is True
    assert partitions_of(kafka, other) == {0, 1}


def test_connect_unreachable_broker_bounded(kafka: str) -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1", connect_timeout=1.5)
    started = time.monotonic()

    with pytest.raises(BrokerUnavailableError) as caught:
        make_producer(settings)

    assert "127.0.0.1:1" in str(caught.value)
    assert "gradelab broker start" in str(caught.value)
    # Bounded by the connect timeout, with generous room for a slow machine.
    assert time.monotonic() - started < 30


def test_connect_unknown_host(kafka: str) -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1", connect_timeout=1)

    with pytest.raises(BrokerUnavailableError) as caught:
        connect(KafkaAdminClient, settings, **settings.kafka_options())

    assert "127.0.0.1:1" in str(caught.value)


def test_produce_scores_unreachable_broker(settings: Settings) -> None:
    dead = dataclasses.replace(
        settings, bootstrap_servers="127.0.0.1:1", connect_timeout=1
    )

    with pytest.raises(BrokerUnavailableError):
        produce_scores(dead, [Score("A", "Math", 10)])
