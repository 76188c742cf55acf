"""Broker faults: restarts during a produce run, and no broker at all.

These tests stop and kill a broker, so they start one of their own on free
ports with a temporary state directory. The session broker is not touched.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from gradelab import broker
from gradelab.checkpoint import CheckpointedAverages
from gradelab.config import Settings
from gradelab.consumer import compute_averages, read_scores
from gradelab.dlq import DeadLetterPublisher, read_dead_letters
from gradelab.errors import BrokerUnavailableError, InvalidRecordError
from gradelab.producer import ensure_topic, make_producer, produce_scores
from gradelab.record import Score

GRADELAB = [sys.executable, "-m", "gradelab.cli"]
RECORDS = 25_000
# Short enough to keep the tests quick, long enough for a loaded machine.
CONNECT_TIMEOUT = 3.0
# Generous bound that still proves the call gave up instead of hanging.
GIVE_UP_WITHIN = 60.0


def _free_port_pair() -> int:
    """Return a port P such that P (clients) and P + 100 (controller) are free."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + broker.CONTROLLER_PORT_OFFSET > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + broker.CONTROLLER_PORT_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports found")


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory) -> Iterator[tuple[str, int, str]]:
    """A single-node broker that these tests may stop and kill."""
    state_dir = str(tmp_path_factory.mktemp("faulty-broker"))
    port = _free_port_pair()
    info = broker.start(port=port, state_dir=state_dir)
    try:
        yield info.bootstrap_servers, port, state_dir
    finally:
        broker.stop(state_dir=state_dir)


def _unique_scores(count: int) -> Iterator[Score]:
    subjects = ("Math", "Physics", "French", "English")
    for number in range(count):
        yield Score(
            class_="A",
            subject=subjects[number % len(subjects)],
            score=number % 41 / 2,
            student_id=f"id-{number:06d}",
        )


def _produce_through_fault(
    settings: Settings, fault: Callable[[Callable[[], int]], None]
) -> tuple[set[str], list[str]]:
    """Send RECORDS scores, running ``fault`` a quarter of the way through.

    ``fault`` gets a function that returns the number of records acknowledged
    so far. Returns the ids the broker acknowledged and the errors of the
    others.
    """
    producer = make_producer(settings)
    acknowledged: set[str] = set()
    errors: list[str] = []
    lock = threading.Lock()
    fault_thread = threading.Thread(
        target=fault, args=(lambda: len(acknowledged),), daemon=True
    )

    def on_success(student_id: str) -> Callable[[object], None]:
        def record(_metadata: object) -> None:
            with lock:
                acknowledged.add(student_id)

        return record

    def on_error(exc: BaseException) -> None:
        with lock:
            errors.append(str(exc))

    for number, score in enumerate(_unique_scores(RECORDS)):
        if number == RECORDS // 4:
            fault_thread.start()
        future = producer.send(settings.topic, key=score.key(), value=score.to_json())
        future.add_callback(on_success(score.student_id))
        future.add_errback(on_error)
        if number % 500 == 0:
            time.sleep(0.1)  # spread the run over several seconds
    fault_thread.join(timeout=300)
    producer.flush(timeout=300)
    producer.close()
    return acknowledged, errors


def _read_ids(settings: Settings) -> list[str]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    partitions = [
        TopicPartition(settings.topic, number)
        for number in sorted(consumer.partitions_for_topic(settings.topic))
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    end = consumer.end_offsets(partitions)
    ids = []
    while any(consumer.position(tp) < end[tp] for tp in partitions):
        for records in consumer.poll(timeout_ms=1000).values():
            ids += [Score.from_dict(json.loads(r.value)).student_id for r in records]
    consumer.close()
    return ids


@pytest.mark.parametrize("fault", ["stop-start", "kill-start"])
def test_producer_broker_restart_loses_nothing(own_broker, fault):
    bootstrap_servers, port, state_dir = own_broker
    settings = Settings(
        bootstrap_servers=bootstrap_servers, topic=f"faults-{fault}", connect_timeout=10
    )
    ensure_topic(settings, partitions=3)
    restarted = threading.Event()
    acknowledged_when_down = []

    def restart(acknowledged_count: Callable[[], int]) -> None:
        if fault == "stop-start":
            broker.stop(state_dir=state_dir)
        else:
            broker.kill_node(1, state_dir=state_dir)
        acknowledged_when_down.append(acknowledged_count())
        time.sleep(1.0)
        broker.start(port=port, state_dir=state_dir)
        restarted.set()

    acknowledged, errors = _produce_through_fault(settings, restart)

    assert restarted.is_set(), "the broker did not come back"
    # The outage hit the middle of the run: records were still unacknowledged.
    assert 0 < acknowledged_when_down[0] < RECORDS
    ids = _read_ids(settings)
    assert len(ids) == len(set(ids)), "a record was written twice"
    assert acknowledged <= set(ids), "an acknowledged record is missing"
    assert errors == []
    assert len(acknowledged) == RECORDS


def _no_broker_settings() -> Settings:
    port = _free_port_pair()
    return Settings(
        bootstrap_servers=f"localhost:{port}",
        topic="student-scores",
        connect_timeout=CONNECT_TIMEOUT,
    )


def _publish_one_dead_letter(settings: Settings) -> None:
    # The publisher connects when it sends its first dead letter.
    record = ConsumerRecord(
        "student-scores", 0, -1, 7, 0, 0, b"Math", b"not json", [], None, 4, 8, -1
    )
    DeadLetterPublisher(settings)(record, InvalidRecordError("Not JSON.", "not-json"))


LIBRARY_CALLS = {
    "produce_scores": lambda s: produce_scores(s, _unique_scores(3)),
    "read_scores": lambda s: read_scores(s, timeout=1),
    "compute_averages": lambda s: compute_averages(s, timeout=1),
    "make_producer": make_producer,
    "checkpointed_averages": lambda s: CheckpointedAverages(s, "dashboard"),
    "dead_letter_publisher": _publish_one_dead_letter,
    "read_dead_letters": read_dead_letters,
}


@pytest.mark.parametrize("call", sorted(LIBRARY_CALLS))
def test_library_no_broker_fails_fast(call):
    settings = _no_broker_settings()
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as raised:
        LIBRARY_CALLS[call](settings)
    assert time.monotonic() - started < GIVE_UP_WITHIN
    message = str(raised.value)
    assert settings.bootstrap_servers in message
    assert "gradelab broker start" in message


CLI_COMMANDS = {
    "produce": ["produce", "--simulate", "10"],
    "consume": ["consume", "--idle-timeout", "1"],
    "averages": ["averages", "--idle-timeout", "1"],
    "averages-group": ["averages", "--group", "g", "--follow"],
    "dlq": ["dlq"],
}


@pytest.mark.parametrize("command", sorted(CLI_COMMANDS))
def test_cli_no_broker_fails_fast(command):
    settings = _no_broker_settings()
    environment = {**os.environ, "GRADELAB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)}
    result = subprocess.run(
        [
            *GRADELAB,
            *CLI_COMMANDS[command],
            "--bootstrap-server",
            settings.bootstrap_servers,
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=GIVE_UP_WITHIN,
        check=False,
    )
    assert result.returncode == 1
    assert settings.bootstrap_servers in result.stderr
    assert "gradelab broker start" in result.stderr
    assert "Traceback" not in result.stderr
