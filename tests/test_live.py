"""Tests of gradelab.live: regrouping, snapshots, the worker and the simulator.

The worker tests run against the real broker. The test that starts a broker
only after the feed has been retrying runs one of its own, on free ports.
"""

from __future__ import annotations

import json
import math
import queue
import socket
import time
from collections.abc import Callable

import pytest

from gradelab import broker
from gradelab.averages import average_scores
from gradelab.config import Settings
from gradelab.errors import ConfigError
from gradelab.live import (
    FINEST_FIELDS,
    GROUPINGS,
    Backoff,
    ConnectionState,
    GroupRow,
    LiveAverages,
    LiveFeed,
    Simulator,
    Snapshot,
    _put_latest,
    checkpoint_source,
    consumer_source,
    parse_live_grouping,
)
from gradelab.producer import ensure_topic, make_producer, produce_scores
from gradelab.record import Score
from gradelab.simulate import DEFAULT_SUBJECTS, simulate_scores

INVALID_VALUES = (
    b"not json",
    b'{"class": "A", "subject": "Math", "score": 25}',
    b'{"class": "A", "subject": "Math"}',
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _expected_rows(scores: list[Score], by: str) -> list[dict]:
    return average_scores(scores, by=by).to_dict("records")


def _assert_rows_equal(snapshot: Snapshot, expected: list[dict]) -> None:
    rows = snapshot.row_dicts()
    assert [len(rows)] == [len(expected)]
    for row, expected_row in zip(rows, expected, strict=True):
        for field in snapshot.by:
            assert row[field] == expected_row[field]
        assert row["count"] == expected_row["count"]
        assert row["mean"] == pytest.approx(expected_row["mean"], abs=1e-12)
        assert row["min"] == expected_row["min"]
        assert row["max"] == expected_row["max"]


def _wait_for(
    feed: LiveFeed, condition: Callable[[Snapshot], bool], timeout: float = 30.0
) -> Snapshot:
    """Return the first snapshot for which ``condition`` holds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        snapshot = feed.latest()
        if snapshot is not None:
            last = snapshot
            if condition(snapshot):
                return snapshot
        time.sleep(0.05)
    raise AssertionError(f"No snapshot met the condition in {timeout} s: {last}")


def _produce_known_stream(settings: Settings, count: int = 600) -> list[Score]:
    scores = list(simulate_scores(count, seed=3, start_time=1_767_225_600))
    ensure_topic(settings, partitions=3)
    produce_scores(settings, scores)
    producer = make_producer(settings)
    for value in INVALID_VALUES:
        producer.send(settings.topic, key=b"Math", value=value)
    producer.flush()
    producer.close()
    return scores


# Pure logic.


@pytest.mark.parametrize("by", [*GROUPINGS, "period,class", "class,subject,period"])
def test_live_averages_regroup_matches_direct_averages(by: str) -> None:
    scores = list(simulate_scores(500, seed=11))
    live = LiveAverages()
    for score in scores:
        live.add(score)

    regrouped = live.regroup(by).to_frame().to_dict("records")

    assert regrouped == _expected_rows(scores, by)


def test_live_averages_keeps_groups_without_period() -> None:
    live = LiveAverages()
    live.add(Score("A", "Math", 12))
    live.add(Score("A", "Math", 14, period="T1"))

    rows = live.regroup("period").rows()

    assert [row["period"] for row in rows] == ["T1", None]
    assert [row["count"] for row in rows] == [1, 1]


def test_live_averages_overall_and_clear() -> None:
    live = LiveAverages()
    for value in (8, 12, 16):
        live.add(Score("A", "Math", value))

    overall = live.overall()

    assert overall.count == 3
    assert overall.mean == 12
    live.clear()
    assert live.count == 0
    assert math.isnan(live.overall().mean)


@pytest.mark.parametrize("by", ["student_id", "class,student_id", "grade", ""])
def test_parse_live_grouping_rejects_unsupported(by: str) -> None:
    with pytest.raises(ConfigError, match="grouping"):
        parse_live_grouping(by)


def test_parse_live_grouping_accepts_finest() -> None:
    assert parse_live_grouping("class, subject,period") == FINEST_FIELDS


def test_backoff_doubles_up_to_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=3.0)

    delays = [backoff.next_delay() for _ in range(6)]

    for delay, nominal in zip(delays, [0.5, 1, 2, 3, 3, 3], strict=True):
        assert nominal * 0.9 <= delay <= nominal
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_backoff_rejects_inverted_bounds() -> None:
    with pytest.raises(ConfigError, match="backoff"):
        Backoff(initial=5, maximum=1)


def _snapshot(sequence: int, mean: float = 12.0) -> Snapshot:
    return Snapshot(
        by=("subject",),
        rows=(GroupRow(("Math",), 2, 12.0, 10, 14),),
        count=2,
        mean=mean,
        received=3,
        invalid=1,
        records_per_second=0.0,
        first_record_time=1_767_225_600.0,
        last_record_time=None,
        state=ConnectionState.CONNECTED,
        error=None,
        retry_in=None,
        sequence=sequence,
    )


def test_put_latest_keeps_only_newest() -> None:
    slot: queue.Queue[Snapshot] = queue.Queue(maxsize=1)

    for sequence in range(1, 4):
        _put_latest(slot, _snapshot(sequence))

    assert slot.get_nowait().sequence == 3
    assert slot.empty()


def test_snapshot_to_dict_is_json() -> None:
    state = json.loads(json.dumps(_snapshot(1, mean=math.nan).to_dict()))

    assert state["rows"] == [
        {"subject": "Math", "count": 2, "mean": 12.0, "min": 10, "max": 14}
    ]
    assert state["mean"] is None
    assert state["first_record_time"] == "2026-01-01T00:00:00.000Z"
    assert state["last_record_time"] is None
    assert state["connection"] == "connected"


def test_snapshot_is_immutable() -> None:
    snapshot = _snapshot(1)

    with pytest.raises(AttributeError):
        snapshot.received = 0  # type: ignore[misc]


def test_simulator_rejects_negative_rate() -> None:
    with pytest.raises(ConfigError, match="rate"):
        Simulator(Settings(), rate=-1)


# Against the real broker.


@pytest.mark.kafka
def test_live_feed_reads_known_stream(settings: Settings) -> None:
    scores = _produce_known_stream(settings)
    total = len(scores) + len(INVALID_VALUES)
    feed = LiveFeed(
        settings, by="subject", source_factory=consumer_source(from_beginning=True)
    )
    feed.start()
    try:
        snapshot = _wait_for(feed, lambda s: s.received >= total)

        assert snapshot.received == total
        assert snapshot.invalid == len(INVALID_VALUES)
        assert snapshot.count == len(scores)
        assert snapshot.state is ConnectionState.CONNECTED
        assert snapshot.last_record_time is not None
        _assert_rows_equal(snapshot, _expected_rows(scores, "subject"))
        assert snapshot.mean == pytest.approx(
            sum(score.score for score in scores) / len(scores)
        )

        feed.set_grouping("class,subject")
        regrouped = _wait_for(feed, lambda s: s.by == ("class", "subject"))
        assert regrouped.received == total
        _assert_rows_equal(regrouped, _expected_rows(scores, "class,subject"))

        feed.reset()
        cleared = _wait_for(feed, lambda s: s.received == 0)
        assert cleared.rows == ()
        assert cleared.invalid == 0
        assert cleared.last_record_time is None
    finally:
        stopped = feed.stop(timeout=2.0)
    assert stopped
    assert not feed.running


@pytest.mark.kafka
def test_live_feed_latest_is_none_until_new_snapshot(settings: Settings) -> None:
    ensure_topic(settings)
    feed = LiveFeed(settings, publish_interval=60)
    feed.start()
    try:
        _wait_for(feed, lambda s: s.state is ConnectionState.CONNECTED)
        # Idle and with a long publish interval, the worker publishes nothing.
        assert feed.latest() is None
    finally:
        assert feed.stop(timeout=2.0)


def test_live_feed_without_broker_reports_unavailable() -> None:
    settings = Settings(bootstrap_servers=f"localhost:{_free_port()}", topic="scores")
    feed = LiveFeed(settings, connect_timeout=0.5, backoff=Backoff(0.1, 0.3))
    feed.start()
    try:
        snapshot = _wait_for(
            feed, lambda s: s.state is ConnectionState.UNAVAILABLE, timeout=10
        )
        assert "gradelab broker start" in snapshot.error
        assert settings.bootstrap_servers in snapshot.error
        assert snapshot.received == 0
        # Still retrying: a later snapshot plans another attempt.
        _wait_for(feed, lambda s: s.retry_in is not None, timeout=10)
        assert feed.running
    finally:
        assert feed.stop(timeout=2.0)


@pytest.mark.kafka
def test_simulator_sends_until_stopped(settings: Settings) -> None:
    simulator = Simulator(settings, rate=400, seed=5, classes=2, subjects=2)
    feed = LiveFeed(settings, source_factory=consumer_source(from_beginning=True))
    assert simulator.start()
    assert not simulator.start()
    feed.start()
    try:
        _wait_for(feed, lambda s: s.received >= 100)
        assert simulator.stop(timeout=5.0)
        status = simulator.status()
        assert not status.running
        assert status.error is None
        assert status.sent >= 100
        # Every record handed to the producer was flushed before it stopped.
        snapshot = _wait_for(feed, lambda s: s.received == status.sent)
        assert {row.key for row in snapshot.rows} == {
            (subject,) for subject in DEFAULT_SUBJECTS[:2]
        }
    finally:
        simulator.stop()
        assert feed.stop(timeout=2.0)


@pytest.mark.kafka
@pytest.mark.slow
def test_live_feed_connects_once_broker_starts(tmp_path) -> None:
    port = _free_port()
    while _port_taken(port + broker.CONTROLLER_PORT_OFFSET):
        port = _free_port()
    settings = Settings(bootstrap_servers=f"localhost:{port}", topic="late-broker")
    feed = LiveFeed(
        settings,
        source_factory=consumer_source(from_beginning=True),
        connect_timeout=1.0,
        backoff=Backoff(0.2, 1.0),
    )
    feed.start()
    try:
        _wait_for(feed, lambda s: s.state is ConnectionState.UNAVAILABLE, timeout=10)
        broker.start(port=port, state_dir=tmp_path / "broker")
        try:
            scores = list(simulate_scores(50, seed=2))
            produce_scores(settings, scores)

            snapshot = _wait_for(feed, lambda s: s.received == 50, timeout=60)
            assert snapshot.state is ConnectionState.CONNECTED
            assert snapshot.error is None
            _assert_rows_equal(snapshot, _expected_rows(scores, "subject"))
        finally:
            broker.stop(state_dir=tmp_path / "broker")
        lost = _wait_for(
            feed, lambda s: s.state is ConnectionState.DISCONNECTED, timeout=30
        )
        assert "gradelab broker start" in lost.error
        assert lost.received == 50
    finally:
        assert feed.stop(timeout=3.0)


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.mark.kafka
def test_live_feed_checkpoint_resumes_exactly(settings: Settings) -> None:
    scores = list(simulate_scores(500, seed=8))
    ensure_topic(settings, partitions=3)
    produce_scores(settings, scores[:300])
    group = f"{settings.topic}-group"

    first = LiveFeed(
        settings, source_factory=checkpoint_source(group, from_beginning=True)
    )
    first.start()
    try:
        _wait_for(first, lambda s: s.received == 300, timeout=60)
    finally:
        assert first.stop(timeout=5.0)
    produce_scores(settings, scores[300:])

    second = LiveFeed(
        settings, source_factory=checkpoint_source(group, from_beginning=True)
    )
    second.start()
    try:
        snapshot = _wait_for(second, lambda s: s.received >= 500, timeout=60)
        assert snapshot.received == 500
        assert snapshot.count == 500
        _assert_rows_equal(snapshot, _expected_rows(scores, "subject"))
        # The saved averages are the group's record, so reset leaves them.
        second.reset()
        time.sleep(0.5)
        assert _wait_for(second, lambda s: True).received == 500
    finally:
        assert second.stop(timeout=5.0)
