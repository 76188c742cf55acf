"""Producing score records to Kafka with acknowledged, idempotent writes.

Every producer gradelab makes uses ``acks="all"`` and idempotence: a record
counts as sent only once every in-sync replica has it, and the producer's
retries after a broker failure never write it twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from gradelab.config import Settings
from gradelab.connection import connect
from gradelab.errors import GradelabError, InvalidRecordError
from gradelab.record import Score

__all__ = [
    "DEFAULT_PARTITIONS",
    "ProduceReport",
    "ScoreProducer",
    "ensure_topic",
    "make_producer",
    "produce_scores",
]

logger = logging.getLogger(__name__)

# Three partitions let a consumer group of up to three members share the work.
DEFAULT_PARTITIONS = 3


def make_producer(settings: Settings, **options: Any) -> KafkaProducer:
    """Create a kafka-python producer with gradelab's delivery guarantees.

    Parameters
    ----------
    settings : Settings
        Where the cluster is and how to authenticate.
    **options
        Extra ``KafkaProducer`` options; they override the defaults below.
        Options that weaken ``acks`` or idempotence are logged at WARNING.

    Raises
    ------
    BrokerUnavailableError
        If no broker responds within ``settings.connect_timeout`` seconds.
    """
    config: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        # A short linger batches records that arrive together, which is most
        # of the throughput, and adds at most 5 ms of latency.
        "linger_ms": 5,
        "batch_size": 64 * 1024,
        "max_block_ms": int(settings.connect_timeout * 1000),
        **settings.kafka_options(),
        **options,
    }
    if config["acks"] not in ("all", -1) or not config["enable_idempotence"]:
        logger.warning(
            "This producer has acks=%r and enable_idempotence=%r: a record may be "
            "lost or written twice if a broker fails.",
            config["acks"],
            config["enable_idempotence"],
        )
    return connect(KafkaProducer, settings, **config)


def ensure_topic(
    settings: Settings,
    topic: str | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int | None = None,
    config: dict[str, str] | None = None,
) -> bool:
    """Create ``topic`` unless it exists; return True if it was created.

    Parameters
    ----------
    topic : str, optional
        Defaults to ``settings.topic``.
    replication_factor : int, optional
        Defaults to the broker's ``default.replication.factor``.
    config : dict, optional
        Topic configuration, for example ``{"cleanup.policy": "compact"}``.
    """
    topic = topic or settings.topic
    admin = connect(KafkaAdminClient, settings, **settings.kafka_options())
    try:
        if topic in admin.list_topics():
            return False
        new_topic = NewTopic(
            topic,
            num_partitions=partitions,
            replication_factor=replication_factor or -1,
            topic_configs=config or {},
        )
        try:
            admin.create_topics([new_topic])
        except TopicAlreadyExistsError:
            return False
        logger.info("Created topic %s with %d partitions.", topic, partitions)
        _wait_for_leaders(admin, topic, settings.connect_timeout)
        return True
    finally:
        admin.close()


def _wait_for_leaders(admin: KafkaAdminClient, topic: str, timeout: float) -> None:
    # A new topic's partitions get leaders a moment after creation; a producer
    # that starts before then waits for metadata, so wait here once instead.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = admin.describe_topics([topic])[0]
        partitions = described.get("partitions") or []
        if partitions and all(p["leader_id"] >= 0 for p in partitions):
            return
        time.sleep(0.1)


@dataclass
class ProduceReport:
    """Counts of a produce run: records acknowledged, skipped and failed."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class ScoreProducer:
    """Send scores to a topic, keyed by subject, and count acknowledgements.

    Use it as a context manager: leaving the block flushes, so every record
    sent in it has been acknowledged, or has failed and been counted, when
    the block ends.

    Parameters
    ----------
    settings : Settings
        Cluster connection; ``settings.topic`` is the topic written to.
    producer : KafkaProducer, optional
        An existing producer to use; by default one from :func:`make_producer`.
    create_topic : bool
        Create the topic with three partitions when it does not exist.
    """

    def __init__(
        self,
        settings: Settings,
        producer: KafkaProducer | None = None,
        create_topic: bool = True,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic
        if create_topic:
            ensure_topic(settings)
        self._producer = producer or make_producer(settings)
        self.report = ProduceReport()

    def __enter__(self) -> ScoreProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, score: Score) -> None:
        """Send one score without waiting; the acknowledgement is counted later.

        Raises
        ------
        GradelabError
            If the producer cannot take the record within
            ``settings.connect_timeout`` seconds, because the topic's
            metadata is unavailable or its buffer stays full.
        """
        try:
            future = self._producer.send(
                self.topic, key=score.key(), value=score.to_json()
            )
        except KafkaTimeoutError as exc:
            raise GradelabError(
                f"Sending a record to {self.topic} timed out after "
                f"{self.settings.connect_timeout:g} s ({exc}). Check that the "
                f"broker at {self.settings.bootstrap_servers} is running and "
                "that the topic exists."
            ) from exc
        future.add_callback(self._on_acknowledged)
        future.add_errback(self._on_failed)

    def _on_acknowledged(self, _metadata: Any) -> None:
        self.report.sent += 1

    def _on_failed(self, exc: BaseException) -> None:
        self.report.failed += 1
        if len(self.report.errors) < 10:
            self.report.errors.append(str(exc))
        logger.error("A record to %s was not acknowledged: %s", self.topic, exc)

    def flush(self, timeout: float | None = None) -> ProduceReport:
        """Wait until every record sent so far is acknowledged or failed.

        Raises
        ------
        GradelabError
            If any record failed; the report counts them.
        """
        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise GradelabError(
                f"Flushing records to {self.topic} failed: {exc}. Check that the "
                f"broker at {self.settings.bootstrap_servers} is running."
            ) from exc
        if self.report.failed:
            raise GradelabError(
                f"{self.report.failed} record(s) to {self.topic} were not "
                f"acknowledged (first error: {self.report.errors[0]}). They were "
                "not written; send them again once the broker is back."
            )
        return self.report

    def close(self) -> None:
        """Flush and close the producer."""
        try:
            self.flush()
        finally:
            self._producer.close()


def produce_scores(
    settings: Settings,
    scores: Iterable[Score | InvalidRecordError],
    progress: Callable[[int], None] | None = None,
    rate: float | None = None,
) -> ProduceReport:
    """Send every score of ``scores`` and wait for all acknowledgements.

    Parameters
    ----------
    scores : iterable
        Scores to send; an :class:`InvalidRecordError` in the iterable is
        counted as skipped (the gradebook reader yields them for bad rows).
    progress : callable, optional
        Called with 1 after each record is handed to the producer.
    rate : float, optional
        Records per second; by default as fast as the producer goes.

    Returns
    -------
    ProduceReport
        Records acknowledged and skipped. Raises :class:`GradelabError` if any
        record was not acknowledged.
    """
    interval = 1.0 / rate if rate else 0.0
    next_send = time.monotonic()
    with ScoreProducer(settings) as producer:
        for item in scores:
            if isinstance(item, InvalidRecordError):
                producer.report.skipped += 1
                continue
            if interval:
                delay = next_send - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_send += interval
            producer.send(item)
            if progress is not None:
                progress(1)
    return producer.report
