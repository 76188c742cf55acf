"""Dead-letter topic: records the averaging consumer cannot use.

A record that fails :func:`gradelab.record.decode_score` is copied, key and
value byte for byte, to a dead-letter topic (default ``<topic>.dlq``, so
``student-scores.dlq``). Headers record why and where it came from:

``reason``
    The :class:`~gradelab.errors.InvalidRecordError` reason code, for example
    ``score-out-of-range``.
``error``
    The full error message.
``topic``, ``partition``, ``offset``
    Where the original record is. These three identify a dead letter.
``timestamp``
    The original record's timestamp, in milliseconds since the epoch.

A consumer that re-reads a topic, or restarts after a crash, dead-letters the
same record again. Rather than preventing that (which needs a transaction
around every batch), readers deduplicate: :func:`read_dead_letters` keeps one
dead letter per ``(topic, partition, offset)``.

Fixing records takes three steps. ``gradelab dlq --export FILE`` writes the
dead letters as JSON lines, and the student edits each ``value`` in the file.
``gradelab dlq --replay FILE`` then validates every edited value and sends the
valid ones back to their original topic. It also writes a ``replayed`` marker
to the dead-letter topic for each, so a second replay of the file skips them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from gradelab.config import Settings
from gradelab.connection import connect
from gradelab.errors import ConfigError, GradelabError, InvalidRecordError
from gradelab.producer import ensure_topic, make_producer
from gradelab.record import decode_score, record_key

__all__ = [
    "DLQ_MAX_MESSAGE_BYTES",
    "DeadLetter",
    "DeadLetterPublisher",
    "ReplayReport",
    "check_dlq_topic",
    "dlq_topic_for",
    "export_dead_letters",
    "read_dead_letters",
    "replay_dead_letters",
]

logger = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"
# A source record may be as large as the broker's default message.max.bytes
# (1 MiB), and it must still fit with the dead-letter headers added. So the
# dead-letter topic and its producer accept up to 4 MiB.
DLQ_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Dead letters of one reason logged at WARNING one by one; after these, one in
# every LOG_EVERY is, so a stream of bad records cannot flood the log.
LOGGED_PER_REASON = 10
LOG_EVERY = 1000
REPLAYED_HEADER = "replayed"
REPLAY_OF_HEADER = "replay-of"


def dlq_topic_for(topic: str) -> str:
    """Return the default dead-letter topic of ``topic``: ``<topic>.dlq``."""
    return f"{topic}{DLQ_SUFFIX}"


def check_dlq_topic(source_topic: str, dlq_topic: str | None = None) -> str:
    """Return the dead-letter topic of ``source_topic``, refusing the topic itself.

    Parameters
    ----------
    source_topic : str
        The topic whose invalid records are dead-lettered.
    dlq_topic : str, optional
        The dead-letter topic asked for; default ``<source_topic>.dlq``.

    Raises
    ------
    ConfigError
        If ``dlq_topic`` is ``source_topic``: each invalid record would be read
        back and dead-lettered again, without end.
    """
    topic = dlq_topic or dlq_topic_for(source_topic)
    if topic == source_topic:
        raise ConfigError(
            f"The dead-letter topic {topic!r} is the topic being read: every "
            "invalid record would be read back and sent again without end. Pass "
            f"another --dlq-topic, or leave it out to use {dlq_topic_for(topic)!r}."
        )
    return topic


def _origin_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


class DeadLetterPublisher:
    """Send invalid records to a dead-letter topic; use as ``on_invalid``.

    Calling the publisher with a record and its error sends the record and
    returns at once. Call :meth:`flush` before recording that the record was
    handled (for example before saving consumer offsets), so a crash cannot
    lose a dead letter.

    Parameters
    ----------
    settings : Settings
        Cluster connection; ``settings.topic`` names the default DLQ topic.
    topic : str, optional
        The dead-letter topic; default ``<settings.topic>.dlq``. When the
        first dead letter is sent and the topic does not exist, it is created
        with one partition, which keeps dead letters in the order they were
        found.
    producer : KafkaProducer, optional
        A producer to share; it must accept records of
        :data:`DLQ_MAX_MESSAGE_BYTES`. By default the publisher makes its own.

    Raises
    ------
    ConfigError
        If the dead-letter topic is ``settings.topic`` itself: every invalid
        record would come back to the consumer and be dead-lettered again.

    Attributes
    ----------
    counts : collections.Counter
        Dead letters sent, by reason code.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str | None = None,
        producer: KafkaProducer | None = None,
    ) -> None:
        self.settings = settings
        self.topic = check_dlq_topic(settings.topic, topic)
        self._owns_producer = producer is None
        self._producer = producer
        self._topic_ready = False
        self._futures: list[Any] = []
        self.counts: Counter[str] = Counter()

    def __enter__(self) -> DeadLetterPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def count(self) -> int:
        """The number of dead letters sent."""
        return sum(self.counts.values())

    def __call__(self, record: ConsumerRecord, error: InvalidRecordError) -> None:
        """Send ``record`` to the dead-letter topic with headers from ``error``."""
        headers = [
            ("reason", error.reason.encode()),
            ("error", str(error).encode()),
            ("topic", record.topic.encode()),
            ("partition", str(record.partition).encode()),
            ("offset", str(record.offset).encode()),
        ]
        if record.timestamp is not None and record.timestamp >= 0:
            headers.append(("timestamp", str(record.timestamp).encode()))
        producer = self._ready_producer()
        key = record.key
        if key is None and record.value is None:
            # kafka-python cannot send a record with neither key nor value
            # (Java clients can), so such a record gets an empty key.
            key = b""
        future = producer.send(self.topic, key=key, value=record.value, headers=headers)
        self._futures.append(future)
        self.counts[error.reason] += 1
        count = self.counts[error.reason]
        quiet = count > LOGGED_PER_REASON and count % LOG_EVERY != 0
        logger.log(
            logging.DEBUG if quiet else logging.WARNING,
            "Dead-lettered the record at %s partition %d offset %d to %s "
            "(%s, %d so far): %s",
            record.topic,
            record.partition,
            record.offset,
            self.topic,
            error.reason,
            count,
            error,
        )

    def _ready_producer(self) -> KafkaProducer:
        """Create the dead-letter topic and the producer on first use."""
        if not self._topic_ready:
            ensure_topic(
                self.settings,
                topic=self.topic,
                partitions=1,
                config={"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)},
            )
            self._topic_ready = True
        if self._producer is None:
            self._producer = make_dlq_producer(self.settings)
        return self._producer

    def flush(self) -> None:
        """Wait until every dead letter sent so far is acknowledged.

        Raises
        ------
        GradelabError
            If the dead-letter topic did not acknowledge a record; the record
            is then not recorded anywhere, so the caller must not move on.
        """
        if not self._futures:
            return
        futures, self._futures = self._futures, []
        try:
            self._producer.flush()
            for future in futures:
                future.get(timeout=0)
        except KafkaError as exc:
            raise GradelabError(
                f"Writing a dead letter to {self.topic} at "
                f"{self.settings.bootstrap_servers} failed: {exc}. Check that the "
                f"broker is running and that {self.topic} accepts records of "
                f"{DLQ_MAX_MESSAGE_BYTES} bytes (max.message.bytes)."
            ) from exc

    def close(self) -> None:
        """Flush, and close the producer if the publisher made it."""
        try:
            self.flush()
        finally:
            if self._owns_producer and self._producer is not None:
                self._producer.close()
                self._producer = None


def make_dlq_producer(settings: Settings) -> KafkaProducer:
    """Create a producer that can send dead letters of any accepted size."""
    return make_producer(settings, max_request_size=DLQ_MAX_MESSAGE_BYTES + 64 * 1024)


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, with where it came from.

    Attributes
    ----------
    topic, partition, offset :
        Where the original record is.
    reason, error : str
        The reason code and the full message.
    key, value : bytes or None
        The original key and value, unchanged.
    timestamp : int or None
        The original record timestamp in milliseconds since the epoch.
    replayed : bool
        True when a corrected record was already sent back for this one.
    """

    topic: str
    partition: int
    offset: int
    reason: str
    error: str
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    replayed: bool = False

    @property
    def origin(self) -> str:
        """The ``topic/partition/offset`` that identifies this dead letter."""
        return _origin_id(self.topic, self.partition, self.offset)


def read_dead_letters(
    settings: Settings, dlq_topic: str | None = None
) -> list[DeadLetter]:
    """Read the dead-letter topic to its end, one entry per original record.

    The topic is read up to the end offset it had when the call started, so
    the call returns even while a consumer keeps adding dead letters. A
    record that was dead-lettered more than once (after a crash, or by
    several runs over the same topic) appears once, at its first position.

    Parameters
    ----------
    settings : Settings
        Cluster connection; ``settings.topic`` names the default DLQ topic.
    dlq_topic : str, optional
        Default ``<settings.topic>.dlq``.

    Returns
    -------
    list of DeadLetter
        In the order they were dead-lettered; empty when the topic does not
        exist.
    """
    topic = dlq_topic or dlq_topic_for(settings.topic)
    letters: dict[str, DeadLetter] = {}
    replayed: set[str] = set()
    for record in _read_to_end(settings, topic):
        headers = {
            name: value.decode("utf-8", "replace") for name, value in record.headers
        }
        if REPLAYED_HEADER in headers:
            replayed.add(headers[REPLAYED_HEADER])
            continue
        try:
            letter = DeadLetter(
                topic=headers["topic"],
                partition=int(headers["partition"]),
                offset=int(headers["offset"]),
                reason=headers.get("reason", "unknown"),
                error=headers.get("error", ""),
                key=record.key,
                value=record.value,
                timestamp=int(headers["timestamp"]) if "timestamp" in headers else None,
            )
        except (KeyError, ValueError):
            logger.warning(
                "Ignored the record at %s partition %d offset %d: it has no "
                "topic, partition and offset headers, so it is not a dead letter.",
                record.topic,
                record.partition,
                record.offset,
            )
            continue
        letters.setdefault(letter.origin, letter)
    return [
        dataclasses.replace(letter, replayed=origin in replayed)
        for origin, letter in letters.items()
    ]


def _read_to_end(settings: Settings, topic: str) -> Iterable[ConsumerRecord]:
    consumer = connect(
        KafkaConsumer,
        settings,
        enable_auto_commit=False,
        max_partition_fetch_bytes=DLQ_MAX_MESSAGE_BYTES + 64 * 1024,
        fetch_max_bytes=4 * (DLQ_MAX_MESSAGE_BYTES + 64 * 1024),
        **settings.kafka_options(),
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            logger.info("The dead-letter topic %s does not exist yet.", topic)
            return
        assigned = [TopicPartition(topic, number) for number in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end_offsets = consumer.end_offsets(assigned)
        remaining = {tp for tp in assigned if consumer.position(tp) < end_offsets[tp]}
        while remaining:
            batches = consumer.poll(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < end_offsets[tp]:
                        yield record
            remaining = {
                tp for tp in remaining if consumer.position(tp) < end_offsets[tp]
            }
    finally:
        consumer.close()


def export_dead_letters(letters: Iterable[DeadLetter], path: str | os.PathLike) -> int:
    """Write dead letters as JSON lines for a student to correct.

    Each line has the origin (``topic``, ``partition``, ``offset``), the
    ``reason`` and ``error``, the ``key``, and the ``value`` as text. A value
    that is not UTF-8 is written as ``value_base64`` instead. Edit ``value``
    and pass the file to :func:`replay_dead_letters`.

    Returns
    -------
    int
        The number of lines written.

    Raises
    ------
    ConfigError
        If ``path`` cannot be written (a folder, or in a missing folder).
    """
    try:
        output = open(path, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(
            f"Cannot write the dead letters to {str(path)!r}: {exc.strerror}. "
            "Pass the path of a file in an existing folder you can write to."
        ) from exc
    written = 0
    with output:
        for letter in letters:
            line: dict[str, Any] = {
                "topic": letter.topic,
                "partition": letter.partition,
                "offset": letter.offset,
                "reason": letter.reason,
                "error": letter.error,
                "key": _text_or_none(letter.key),
            }
            try:
                line["value"] = (letter.value or b"").decode("utf-8")
            except UnicodeDecodeError:
                line["value_base64"] = base64.b64encode(letter.value).decode()
            output.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += 1
    return written


def _text_or_none(data: bytes | None) -> str | None:
    if data is None:
        return None
    return data.decode("utf-8", "replace")


@dataclass
class ReplayReport:
    """Outcome of a replay.

    Attributes
    ----------
    sent : int
        Corrected records sent back to their topic.
    invalid : list of str
        One message per line whose value is still invalid; not sent.
    already_replayed : int
        Lines skipped because their record was replayed before.
    rejected : list of str
        One message per line that is not a dead letter of the replayed topic
        (another topic, or no such record in the dead-letter topic); not sent.
    """

    sent: int = 0
    invalid: list[str] = dataclasses.field(default_factory=list)
    already_replayed: int = 0
    rejected: list[str] = dataclasses.field(default_factory=list)


def replay_dead_letters(
    settings: Settings, path: str | os.PathLike, dlq_topic: str | None = None
) -> ReplayReport:
    """Send the corrected records of an exported file back to ``settings.topic``.

    Only lines that name a dead letter of ``settings.topic`` present in the
    dead-letter topic (same topic, partition and offset) are replayed; the
    others are reported in :attr:`ReplayReport.rejected`, so an edited origin
    cannot send records to another topic. Every line's ``value`` is validated
    with
    :func:`~gradelab.record.decode_score`. A valid value is sent, as written,
    to the line's original topic with the corrected subject as key and a
    ``replay-of`` header naming the origin. Then a ``replayed`` marker is
    written to the dead-letter topic for each one, so listing shows them as
    replayed and a second replay skips them.

    Raises
    ------
    ConfigError
        If the file cannot be read, a line is not an exported dead letter, or
        ``dlq_topic`` is ``settings.topic``.
    GradelabError
        If the broker does not acknowledge a replayed record.
    """
    dlq_topic = check_dlq_topic(settings.topic, dlq_topic)
    lines = _read_export(path)
    letters = {
        letter.origin: letter
        for letter in read_dead_letters(settings, dlq_topic)
        if letter.topic == settings.topic
    }
    report = ReplayReport()
    to_send: list[tuple[str, str, bytes, bytes]] = []
    for number, line in lines:
        origin = _origin_id(line["topic"], line["partition"], line["offset"])
        if line["topic"] != settings.topic:
            report.rejected.append(
                f"line {number} ({origin}): it comes from topic "
                f"{line['topic']!r}, not {settings.topic!r}; replay it with "
                f"--topic {line['topic']}"
            )
            continue
        if origin not in letters:
            report.rejected.append(
                f"line {number} ({origin}): {dlq_topic} has no dead letter from "
                "this partition and offset; export the file again with "
                "`gradelab dlq --export FILE`"
            )
            continue
        if letters[origin].replayed:
            report.already_replayed += 1
            continue
        value = _line_value(path, number, line)
        try:
            score = decode_score(value)
        except InvalidRecordError as error:
            report.invalid.append(f"line {number} ({origin}): {error}")
            continue
        to_send.append((origin, line["topic"], record_key(score.subject), value))
    if not to_send:
        return report

    producer = make_dlq_producer(settings)
    try:
        for origin, topic, key, value in to_send:
            producer.send(
                topic,
                key=key,
                value=value,
                headers=[(REPLAY_OF_HEADER, origin.encode())],
            )
        _flush_or_raise(producer, settings)
        # The markers go out only once every corrected record is acknowledged,
        # so a marker never hides a record that was not sent back.
        for origin, *_ in to_send:
            producer.send(
                dlq_topic,
                key=origin.encode(),
                value=None,
                headers=[(REPLAYED_HEADER, origin.encode())],
            )
        _flush_or_raise(producer, settings)
    finally:
        producer.close()
    report.sent = len(to_send)
    logger.info("Replayed %d corrected record(s) from %s.", report.sent, path)
    return report


def _flush_or_raise(producer: KafkaProducer, settings: Settings) -> None:
    try:
        producer.flush()
    except KafkaError as exc:
        raise GradelabError(
            f"Sending replayed records to {settings.bootstrap_servers} failed: "
            f"{exc}. Check that the broker is running and run the replay again; "
            "records already marked as replayed are skipped."
        ) from exc


def _read_export(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the replay file {str(path)!r}: {exc.strerror}. Write one "
            "with `gradelab dlq --export FILE` and edit its values."
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"The replay file {str(path)!r} is not UTF-8 text (byte "
            f"{exc.object[exc.start]:#04x} at position {exc.start}). Save it as "
            "UTF-8; write a binary value as value_base64."
        ) from exc
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"Line {number} of {str(path)!r} is not valid JSON ({exc}). Each "
                "line must be one object as written by `gradelab dlq --export`."
            ) from exc
        if (
            not isinstance(line, dict)
            or not isinstance(line.get("topic"), str)
            or type(line.get("partition")) is not int
            or type(line.get("offset")) is not int
            or ("value" not in line and "value_base64" not in line)
        ):
            raise ConfigError(
                f"Line {number} of {str(path)!r} is not an exported dead letter: "
                "it needs topic, partition, offset and value fields."
            )
        lines.append((number, line))
    return lines


def _line_value(path: str | os.PathLike, number: int, line: dict[str, Any]) -> bytes:
    if "value" in line:
        value = line["value"]
        if not isinstance(value, str):
            # The student wrote the JSON object itself instead of a string.
            return json.dumps(value).encode()
        return value.encode("utf-8")
    try:
        return base64.b64decode(line["value_base64"], validate=True)
    except (binascii.Error, TypeError) as exc:
        raise ConfigError(
            f"Line {number} of {str(path)!r} has an invalid value_base64. Replace "
            "it with a corrected value field."
        ) from exc
