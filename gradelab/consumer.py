"""Consuming score records: decoding, validation and bounded reads.

:class:`ScoreConsumer` wraps a kafka-python ``KafkaConsumer``. It polls in
batches, decodes every value with :func:`gradelab.record.decode_score` and
hands records that fail validation to an ``on_invalid`` handler instead of
stopping: by default the handler logs a warning with the partition and offset,
and a dead-letter publisher can take its place.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord

from gradelab.averages import Averages
from gradelab.config import Settings
from gradelab.connection import connect
from gradelab.errors import GradelabError, InvalidRecordError
from gradelab.record import Score, decode_score

__all__ = [
    "InvalidRecordHandler",
    "ScoreConsumer",
    "StreamSummary",
    "compute_averages",
    "make_consumer",
    "read_scores",
    "require_topic",
    "stream_averages",
    "topic_exists",
]

logger = logging.getLogger(__name__)


@dataclass
class StreamSummary:
    """The result of consuming a stream: averages and record counters.

    Attributes
    ----------
    averages : Averages
        The averages computed.
    received : int
        The records the averages cover, valid or not.
    invalid : collections.Counter
        Invalid records among them, by reason code.
    read_in_run : int or None
        Records read by this run, when ``received`` also counts records read
        before a restart (checkpointed averages); None otherwise.
    """

    averages: Averages
    received: int
    invalid: Counter[str]
    read_in_run: int | None = None


InvalidRecordHandler = Callable[[ConsumerRecord, InvalidRecordError], None]

# Records one poll() may return. Large batches amortize the per-poll cost,
# which is most of a Python consumer's overhead.
MAX_POLL_RECORDS = 10_000


def make_consumer(
    settings: Settings,
    group_id: str | None = None,
    from_beginning: bool = False,
    topics: list[str] | None = None,
    listener: ConsumerRebalanceListener | None = None,
    **options: Any,
) -> KafkaConsumer:
    """Create a kafka-python consumer subscribed to ``settings.topic``.

    Parameters
    ----------
    group_id : str, optional
        Consumer group. Without one, the consumer reads every partition on its
        own and commits nothing, so each run starts from
        ``auto_offset_reset``. With one, the group's committed offsets decide
        where it starts, and partitions are shared with the other members.
    from_beginning : bool
        Where to start when there is no committed offset: the earliest record
        (True) or only new records (False).
    topics : list of str, optional
        Topics to subscribe to; default ``[settings.topic]``.
    listener : ConsumerRebalanceListener, optional
        Called during ``poll()`` when the group assigns or revokes partitions.
    **options
        Extra ``KafkaConsumer`` options.
    """
    config: dict[str, Any] = {
        "group_id": group_id,
        "auto_offset_reset": "earliest" if from_beginning else "latest",
        "enable_auto_commit": group_id is not None,
        "max_poll_records": MAX_POLL_RECORDS,
        "fetch_max_bytes": 4 * 1024 * 1024,
        "max_partition_fetch_bytes": 1024 * 1024,
        # Subscribing to a misspelled topic must not create it.
        "allow_auto_create_topics": False,
        **settings.kafka_options(),
        **options,
    }
    consumer = connect(KafkaConsumer, settings, **config)
    consumer.subscribe(topics or [settings.topic], listener=listener)
    if group_id is not None:
        # NOTE: with kafka-python 3.0.12, a group leader that joins before it
        # has the topic's metadata assigns nothing and rejoins, and that
        # second join was seen to stall; fetching the metadata first avoids it.
        for topic in topics or [settings.topic]:
            consumer.partitions_for_topic(topic)
    return consumer


def _existing_topics(settings: Settings) -> set[str]:
    consumer = connect(KafkaConsumer, settings, **settings.kafka_options())
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


def topic_exists(settings: Settings, topic: str | None = None) -> bool:
    """Return whether ``topic`` (default ``settings.topic``) exists; create nothing."""
    return (topic or settings.topic) in _existing_topics(settings)


def require_topic(settings: Settings, topic: str | None = None) -> None:
    """Check that ``topic`` (default ``settings.topic``) exists, creating nothing.

    Raises
    ------
    GradelabError
        If the topic does not exist; the message suggests close topic names.
    """
    topic = topic or settings.topic
    existing = _existing_topics(settings)
    if topic in existing:
        return
    close = difflib.get_close_matches(topic, sorted(existing), n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    raise GradelabError(
        f"Topic {topic!r} does not exist at {settings.bootstrap_servers}. Check "
        f"the name{hint} or produce to it first, for example with "
        f"`gradelab produce --simulate 100 --topic {topic}`."
    )


def log_invalid_record(record: ConsumerRecord, error: InvalidRecordError) -> None:
    """Log a record that failed validation at WARNING, with where it was."""
    logger.warning(
        "Skipped an invalid record at %s partition %d offset %d (%s): %s",
        record.topic,
        record.partition,
        record.offset,
        error.reason,
        error,
    )


class ScoreConsumer:
    """Poll score records in batches, decoded and validated.

    Parameters
    ----------
    settings : Settings
        Cluster connection and topic.
    group_id, from_beginning :
        As for :func:`make_consumer`.
    on_invalid : callable, optional
        Called with the record and the error for each record that fails
        validation; default :func:`log_invalid_record`.
    consumer : KafkaConsumer, optional
        An existing consumer to wrap instead of creating one.

    Attributes
    ----------
    received : int
        Records polled, valid or not.
    invalid : collections.Counter
        Invalid records by reason code.
    """

    def __init__(
        self,
        settings: Settings,
        group_id: str | None = None,
        from_beginning: bool = False,
        on_invalid: InvalidRecordHandler | None = None,
        consumer: KafkaConsumer | None = None,
        **options: Any,
    ) -> None:
        self.settings = settings
        self.consumer = consumer or make_consumer(
            settings, group_id=group_id, from_beginning=from_beginning, **options
        )
        self.on_invalid = on_invalid or log_invalid_record
        self.received = 0
        self.invalid: Counter[str] = Counter()

    def __enter__(self) -> ScoreConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def invalid_count(self) -> int:
        """The number of invalid records seen."""
        return sum(self.invalid.values())

    def poll(
        self, timeout: float = 0.5, max_records: int = MAX_POLL_RECORDS
    ) -> list[tuple[ConsumerRecord, Score]]:
        """Return the next batch of valid records with their decoded scores.

        Waits at most ``timeout`` seconds; returns an empty list when nothing
        arrived. Invalid records go to ``on_invalid`` and are not returned.
        """
        batches = self.consumer.poll(
            timeout_ms=int(timeout * 1000), max_records=max_records
        )
        return self.decode(batches)

    def decode(
        self, batches: dict[Any, list[ConsumerRecord]]
    ) -> list[tuple[ConsumerRecord, Score]]:
        """Decode a ``poll()`` result, sending invalid records to ``on_invalid``."""
        valid = []
        for records in batches.values():
            self.received += len(records)
            for record in records:
                try:
                    valid.append((record, decode_score(record.value)))
                except InvalidRecordError as error:
                    self.invalid[error.reason] += 1
                    self.on_invalid(record, error)
        return valid

    def iter_batches(
        self,
        idle_timeout: float | None = None,
        max_records: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[list[tuple[ConsumerRecord, Score]]]:
        """Yield batches until idle for ``idle_timeout`` s, ``max_records``
        records were received, or ``stop()`` returns True.

        The idle clock starts once the consumer has partitions assigned, so
        the time a consumer group takes to form does not count as idle.
        """
        last_activity = time.monotonic()
        assigned = False
        while stop is None or not stop():
            remaining = MAX_POLL_RECORDS
            if max_records is not None:
                remaining = min(remaining, max_records - self.received)
                if remaining <= 0:
                    return
            batch = self.poll(timeout=0.2, max_records=remaining)
            if not assigned and self.consumer.assignment():
                assigned = True
                last_activity = time.monotonic()
            if batch:
                last_activity = time.monotonic()
                yield batch
            elif idle_timeout is not None:
                if time.monotonic() - last_activity >= idle_timeout:
                    return

    def close(self) -> None:
        """Close the consumer, committing offsets if it is in a group."""
        self.consumer.close()


def read_scores(
    settings: Settings | None = None,
    topic: str | None = None,
    max_records: int | None = None,
    timeout: float = 5.0,
    from_beginning: bool = True,
    group_id: str | None = None,
) -> pd.DataFrame:
    """Read score records into a DataFrame, stopping when the topic is idle.

    Parameters
    ----------
    settings : Settings, optional
        Default ``Settings.load()``.
    topic : str, optional
        Default ``settings.topic``.
    max_records : int, optional
        Stop after this many records.
    timeout : float
        Stop after this many seconds without a new record.

    Returns
    -------
    DataFrame
        Columns ``class``, ``subject``, ``score``, ``student_id``, ``period``,
        ``ts`` (event time, UTC), then ``partition``, ``offset`` and
        ``timestamp`` (the Kafka record timestamp, UTC).
    """
    settings = _settings_for(settings, topic)
    rows = []
    with ScoreConsumer(
        settings, group_id=group_id, from_beginning=from_beginning
    ) as consumer:
        for batch in consumer.iter_batches(
            idle_timeout=timeout, max_records=max_records
        ):
            for record, score in batch:
                row = score.to_dict()
                row["ts"] = score.ts
                row.update(
                    partition=record.partition,
                    offset=record.offset,
                    timestamp=record.timestamp,
                )
                rows.append(row)
    columns = ["class", "subject", "score", "student_id", "period", "ts"]
    frame = pd.DataFrame(rows, columns=[*columns, "partition", "offset", "timestamp"])
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
    return frame


def compute_averages(
    settings: Settings | None = None,
    topic: str | None = None,
    by: str | list[str] = "subject",
    timeout: float = 5.0,
    from_beginning: bool = True,
    group_id: str | None = None,
    max_records: int | None = None,
) -> pd.DataFrame:
    """Consume a topic until idle and return its averages as a DataFrame.

    Memory stays proportional to the number of groups, not of records, so
    this works on topics of any length.

    Returns
    -------
    DataFrame
        The group columns, then ``count``, ``mean``, ``min`` and ``max``.
    """
    result = stream_averages(
        settings, topic, by, timeout, from_beginning, group_id, max_records
    )
    return result.averages.to_frame()


def stream_averages(
    settings: Settings | None = None,
    topic: str | None = None,
    by: str | list[str] = "subject",
    idle_timeout: float | None = 5.0,
    from_beginning: bool = True,
    group_id: str | None = None,
    max_records: int | None = None,
    on_batch: Callable[[Averages], None] | None = None,
    stop: Callable[[], bool] | None = None,
    on_invalid: InvalidRecordHandler | None = None,
) -> StreamSummary:
    """Consume scores into an :class:`Averages` until idle or stopped.

    ``on_batch`` is called with the averages after each batch, for live views.
    ``on_invalid`` receives each invalid record, as in :class:`ScoreConsumer`.
    """
    settings = _settings_for(settings, topic)
    averages = Averages(by=by)
    add = averages.add
    with ScoreConsumer(
        settings,
        group_id=group_id,
        from_beginning=from_beginning,
        on_invalid=on_invalid,
    ) as consumer:
        for batch in consumer.iter_batches(
            idle_timeout=idle_timeout, max_records=max_records, stop=stop
        ):
            for _record, score in batch:
                add(score)
            if on_batch is not None:
                on_batch(averages)
    return StreamSummary(averages, consumer.received, consumer.invalid)


def _settings_for(settings: Settings | None, topic: str | None) -> Settings:
    settings = settings or Settings.load()
    if topic is not None:
        settings = dataclasses.replace(settings, topic=topic)
    return settings
