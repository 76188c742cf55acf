"""Exact averages that survive crashes: per-partition state snapshots.

A consumer that commits offsets on a timer and keeps its averages in memory
is wrong after a crash. Records read after the last commit are counted
again, or lost if it commits before adding them. So the averages and the
offsets they cover must be saved together, in one write that either happens
or does not.

:class:`CheckpointedAverages` keeps one aggregate per assigned partition.
After each batch it writes a snapshot of every partition that changed: the
partition's :class:`~gradelab.averages.Averages`, its record counters and the
next offset to read, as one record keyed by topic, partition and grouping.
The snapshots go to a compacted state topic, ``<group>.<topic>.state`` by
default. Kafka writes a record atomically, so a snapshot always pairs a
state with exactly the offsets it covers. When the group assigns a partition,
the consumer reads the state topic to its end, restores the partition's
latest snapshot and seeks to its offset. Records after that offset are read
again and counted once, because the restored state does not contain them.

Why snapshots and not transactions: every snapshot ever written is a correct
pair of state and offset. Restoring an older one (written by a member that
was slow to notice it lost the partition, for example) costs re-reading
records but never exactness. So one ordinary acknowledged write is enough,
and the design works the same on one broker or a cluster, across machines.
The group's committed offsets are also updated after each snapshot so that
lag tools show progress, but they are never read back.

Dead letters are sent, and acknowledged, before the snapshot that covers
them. After a crash the records after the last snapshot are read again, so
their dead letters may be written twice. :func:`gradelab.dlq.read_dead_letters`
keeps one per original record.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from gradelab.averages import Averages, parse_group_fields
from gradelab.config import Settings
from gradelab.connection import connect
from gradelab.consumer import (
    MAX_POLL_RECORDS,
    ScoreConsumer,
    StreamSummary,
    log_invalid_record,
)
from gradelab.dlq import DeadLetterPublisher
from gradelab.errors import ConfigError, GradelabError, InvalidRecordError
from gradelab.producer import ensure_topic, make_producer

__all__ = [
    "CheckpointedAverages",
    "PartitionState",
    "state_topic_for",
    "stream_checkpointed_averages",
]

logger = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
STATE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    # Roll and compact segments every 10 minutes, so the topic that a new
    # member reads on assignment stays close to one snapshot per partition.
    "segment.ms": "600000",
    "min.cleanable.dirty.ratio": "0.1",
}
# A SIGKILLed member's partitions move to the others once the broker stops
# hearing its heartbeats. kafka-python 3 defaults to 45 s; 10 s keeps a
# restart quick and stays above the broker's 6 s minimum.
SESSION_TIMEOUT_MS = 10_000
# Seconds without an assignment after which run() logs that it is still waiting.
ASSIGNMENT_NOTICE_SECONDS = 2.0
HEARTBEAT_INTERVAL_MS = 3_000


def state_topic_for(group_id: str, topic: str) -> str:
    """Return the default state topic of a group and topic.

    The name is ``<group>.<topic>.state``.

    Raises
    ------
    ConfigError
        If the result is not a valid Kafka topic name, which happens when the
        group id has characters other than letters, digits, ``.``, ``_``, ``-``.
    """
    name = f"{group_id}.{topic}.state"
    try:
        Settings(topic=name)
    except ConfigError as exc:
        raise ConfigError(
            f"The consumer group {group_id!r} gives the state topic {name!r}, "
            f"which is not a valid topic name ({exc}) Use a group id of letters, "
            "digits, '.', '_' and '-', or pass the state topic explicitly."
        ) from None
    return name


@dataclass
class PartitionState:
    """The aggregate of one partition and the offset it covers.

    Attributes
    ----------
    topic : str
    partition : int
    next_offset : int
        The offset of the first record that ``averages`` does not contain.
    averages : Averages
        The scores of every valid record before ``next_offset``.
    received : int
        Records before ``next_offset`` that this state counted, valid or not.
    invalid : collections.Counter
        Invalid records among them, by reason code.
    """

    topic: str
    partition: int
    next_offset: int
    averages: Averages
    received: int = 0
    invalid: Counter[str] = field(default_factory=Counter)

    def snapshot_key(self) -> bytes:
        """Return the state topic key: topic, partition and grouping."""
        return _snapshot_key(self.topic, self.partition, self.averages.by)

    def to_json(self) -> bytes:
        """Serialize the snapshot that :meth:`from_json` reads back."""
        snapshot = {
            "version": SNAPSHOT_VERSION,
            "topic": self.topic,
            "partition": self.partition,
            "next_offset": self.next_offset,
            "received": self.received,
            "invalid": dict(self.invalid),
            "averages": self.averages.to_state(),
        }
        return json.dumps(snapshot, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, value: bytes) -> PartitionState:
        """Rebuild a partition state from a snapshot written by :meth:`to_json`."""
        snapshot = json.loads(value)
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown snapshot version {snapshot.get('version')!r}")
        return cls(
            topic=snapshot["topic"],
            partition=snapshot["partition"],
            next_offset=snapshot["next_offset"],
            averages=Averages.from_state(snapshot["averages"]),
            received=snapshot["received"],
            invalid=Counter(snapshot["invalid"]),
        )


def _snapshot_key(topic: str, partition: int, by: Sequence[str]) -> bytes:
    return f"{topic}/{partition}/{','.join(by)}".encode()


class _AssignmentListener(ConsumerRebalanceListener):
    """Record assignment changes; the consumer acts on them after ``poll()``.

    kafka-python runs these callbacks inside ``poll()``, where blocking on
    another client is unsafe, so restoring state waits until poll returns.
    """

    def __init__(self, owner: CheckpointedAverages) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.owner._forget(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.owner._pending.update(assigned)

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        self.owner._forget(lost)


class CheckpointedAverages:
    """A consumer group member whose averages are exact across crashes.

    Parameters
    ----------
    settings : Settings
        Cluster connection and the topic of scores.
    group_id : str
        The consumer group. Members of one group share the partitions, and
        a member that restarts with the same group resumes from the snapshots.
    by : str or sequence of str
        Fields to group by, as for :class:`~gradelab.averages.Averages`.
        Snapshots are kept per grouping; a grouping used for the first time
        starts every partition afresh.
    from_beginning : bool
        Where a partition without a snapshot starts: its earliest record
        (True) or its end when first assigned (False).
    dead_letters : DeadLetterPublisher, optional
        Where invalid records go; by default they are only logged.
    state_topic : str, optional
        Default ``<group>.<topic>.state``; created, compacted, if missing.
    **options
        Extra ``KafkaConsumer`` options.

    Examples
    --------
    >>> with CheckpointedAverages(settings, "dashboard") as member:
    ...     summary = member.run(idle_timeout=5)
    """

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        by: str | Sequence[str] = "subject",
        from_beginning: bool = False,
        dead_letters: DeadLetterPublisher | None = None,
        state_topic: str | None = None,
        **options: Any,
    ) -> None:
        if not group_id:
            raise ConfigError("Checkpointed averages need a consumer group id.")
        self.settings = settings
        self.group_id = group_id
        self.by = parse_group_fields(by)
        self.from_beginning = from_beginning
        self.dead_letters = dead_letters
        self.state_topic = state_topic or state_topic_for(group_id, settings.topic)

        self._states: dict[TopicPartition, PartitionState] = {}
        self._pending: set[TopicPartition] = set()
        self._snapshots: dict[bytes, bytes] = {}
        self._current: PartitionState | None = None
        self._read_in_run = 0
        self._told_from_beginning = False

        ensure_topic(
            settings, topic=self.state_topic, partitions=1, config=STATE_TOPIC_CONFIG
        )
        options = {
            "enable_auto_commit": False,
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            **options,
        }
        self._producer = make_producer(settings)
        try:
            self._reader = self._make_state_reader()
            try:
                self._scores = ScoreConsumer(
                    settings,
                    group_id=group_id,
                    from_beginning=from_beginning,
                    on_invalid=self._on_invalid,
                    listener=_AssignmentListener(self),
                    **options,
                )
                # NOTE: with kafka-python 3.0.12, a leader that joins before it
                # has the topic's metadata assigns nothing and rejoins at once,
                # and that second join was seen to stall. Fetching the
                # metadata first makes the first assignment the real one.
                self._scores.consumer.partitions_for_topic(settings.topic)
            except BaseException:
                self._reader.close()
                raise
        except BaseException:
            self._producer.close()
            raise

    def __enter__(self) -> CheckpointedAverages:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- Results --------------------------------------------------------------

    def averages(self) -> Averages:
        """Return the averages of every partition this member owns, merged."""
        merged = Averages(by=self.by)
        for state in self._states.values():
            merged.merge(state.averages)
        return merged

    def summary(self) -> StreamSummary:
        """Return the merged averages with the record counters they cover."""
        invalid: Counter[str] = Counter()
        for state in self._states.values():
            invalid.update(state.invalid)
        received = sum(state.received for state in self._states.values())
        return StreamSummary(self.averages(), received, invalid, self._read_in_run)

    # --- The consume loop -----------------------------------------------------

    def run(
        self,
        idle_timeout: float | None = None,
        on_batch: Callable[[Averages], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> StreamSummary:
        """Consume until idle for ``idle_timeout`` seconds or ``stop()`` is True.

        ``on_batch`` is called with the merged averages after each batch,
        once the batch's snapshots are written. The idle clock starts when
        the group first assigns partitions to this member. When no
        assignment arrives within :data:`ASSIGNMENT_NOTICE_SECONDS`, a
        warning says that the member is waiting for the group.
        """
        last_activity = time.monotonic()
        ready = False
        waiting_told = False
        while stop is None or not stop():
            progressed = self.poll_once()
            if not ready and self._scores.consumer.assignment():
                ready = True
                last_activity = time.monotonic()
            elif not ready and not waiting_told:
                if time.monotonic() - last_activity >= ASSIGNMENT_NOTICE_SECONDS:
                    waiting_told = True
                    logger.warning(
                        "Waiting for the consumer group %s to assign partitions; "
                        "a member that stopped without leaving holds them until "
                        "its session times out (up to %d s).",
                        self.group_id,
                        SESSION_TIMEOUT_MS // 1000,
                    )
            if progressed:
                last_activity = time.monotonic()
                if on_batch is not None:
                    on_batch(self.averages())
            elif idle_timeout is not None and ready:
                if time.monotonic() - last_activity >= idle_timeout:
                    break
        return self.summary()

    def poll_once(self, timeout: float = 0.2) -> bool:
        """Poll one batch, add it to the partition states and snapshot them.

        Returns True when the batch had records.
        """
        consumer = self._scores.consumer
        batches = consumer.poll(
            timeout_ms=int(timeout * 1000), max_records=MAX_POLL_RECORDS
        )
        if self._pending:
            restored = self._restore(self._pending)
            self._pending.difference_update(restored)
            # The restore moved these partitions to their snapshot offsets,
            # so records fetched before it are read again from there.
            batches = {tp: rs for tp, rs in batches.items() if tp not in restored}
        changed = []
        for tp, records in batches.items():
            state = self._states.get(tp)
            if state is None or not records:
                continue
            records = [r for r in records if r.offset >= state.next_offset]
            if not records:
                continue
            self._add(state, records)
            changed.append(state)
        if not changed:
            return False
        if self.dead_letters is not None:
            self.dead_letters.flush()
        self._write_snapshots(changed)
        self._commit(changed)
        return True

    def _add(self, state: PartitionState, records: list[ConsumerRecord]) -> None:
        self._current = state
        try:
            tp = TopicPartition(state.topic, state.partition)
            for _record, score in self._scores.decode({tp: records}):
                state.averages.add(score)
        finally:
            self._current = None
        state.received += len(records)
        state.next_offset = records[-1].offset + 1
        self._read_in_run += len(records)

    def _on_invalid(self, record: ConsumerRecord, error: InvalidRecordError) -> None:
        if self._current is not None:
            self._current.invalid[error.reason] += 1
        if self.dead_letters is not None:
            self.dead_letters(record, error)
        else:
            log_invalid_record(record, error)

    # --- Snapshots ------------------------------------------------------------

    def _write_snapshots(self, states: list[PartitionState]) -> None:
        futures = [
            self._producer.send(
                self.state_topic, key=state.snapshot_key(), value=state.to_json()
            )
            for state in states
        ]
        try:
            self._producer.flush()
            for future in futures:
                future.get(timeout=0)
        except KafkaError as exc:
            raise GradelabError(
                f"Writing the averages snapshot to {self.state_topic} at "
                f"{self.settings.bootstrap_servers} failed: {exc}. Restart the "
                "consumer once the broker is back; it resumes from the last "
                "snapshot, so no score is lost or counted twice."
            ) from exc
        logger.debug(
            "Wrote %d snapshot(s) to %s: %s",
            len(states),
            self.state_topic,
            ", ".join(f"p{s.partition}@{s.next_offset}" for s in states),
        )

    def _commit(self, states: list[PartitionState]) -> None:
        # Only for lag tools such as kafka-consumer-groups; restores use the
        # snapshots.
        offsets = {
            TopicPartition(s.topic, s.partition): OffsetAndMetadata(s.next_offset)
            for s in states
        }
        try:
            self._scores.consumer.commit_async(offsets)
        except KafkaError as exc:
            logger.debug("Committing offsets for lag tools failed: %s", exc)

    def _make_state_reader(self) -> KafkaConsumer:
        reader = connect(
            KafkaConsumer,
            self.settings,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            **self.settings.kafka_options(),
        )
        partition = TopicPartition(self.state_topic, 0)
        reader.assign([partition])
        reader.seek_to_beginning(partition)
        return reader

    def _read_snapshots(self) -> None:
        """Read the state topic from where the last read stopped to its end."""
        partition = TopicPartition(self.state_topic, 0)
        end = self._reader.end_offsets([partition])[partition]
        while self._reader.position(partition) < end:
            batches = self._reader.poll(timeout_ms=1000)
            for record in batches.get(partition, []):
                if record.value is None:
                    self._snapshots.pop(record.key, None)
                else:
                    self._snapshots[record.key] = record.value

    def _restore(self, partitions: set[TopicPartition]) -> set[TopicPartition]:
        """Restore the snapshots of newly assigned partitions and seek to them."""
        consumer = self._scores.consumer
        assigned = consumer.assignment()
        partitions = {tp for tp in partitions if tp in assigned}
        if not partitions:
            return set()
        self._read_snapshots()
        beginning = consumer.beginning_offsets(list(partitions))
        end = consumer.end_offsets(list(partitions))
        fresh = []
        for tp in sorted(partitions):
            value = self._snapshots.get(_snapshot_key(tp.topic, tp.partition, self.by))
            state = None
            if value is not None:
                try:
                    state = PartitionState.from_json(value)
                except (ValueError, KeyError, TypeError) as exc:
                    logger.warning(
                        "Ignored the unreadable snapshot of %s partition %d in %s "
                        "(%s); the partition is read again from its start.",
                        tp.topic,
                        tp.partition,
                        self.state_topic,
                        exc,
                    )
            if state is not None and self.from_beginning:
                self._tell_snapshot_used()
            if state is None:
                start = beginning[tp] if self.from_beginning else end[tp]
                state = PartitionState(tp.topic, tp.partition, start, Averages(self.by))
                fresh.append(state)
            elif state.next_offset < beginning[tp]:
                logger.warning(
                    "Records %d to %d of %s partition %d were deleted by retention "
                    "before this group read them; the averages do not contain them.",
                    state.next_offset,
                    beginning[tp] - 1,
                    tp.topic,
                    tp.partition,
                )
            consumer.seek(tp, state.next_offset)
            self._states[tp] = state
            logger.info(
                "Restored %s partition %d at offset %d (%d records counted).",
                tp.topic,
                tp.partition,
                state.next_offset,
                state.received,
            )
        # A partition that starts at its end must remember that offset now,
        # or a crash before its first record would move the start later.
        if fresh:
            self._write_snapshots(fresh)
        return partitions

    def _tell_snapshot_used(self) -> None:
        if self._told_from_beginning:
            return
        self._told_from_beginning = True
        logger.warning(
            "Group %s has saved averages by %s for %s, so they are used: "
            "from_beginning (--from-beginning) only applies to partitions with no "
            "snapshot. To start over, use a new group name, for example --group "
            "%s-2.",
            self.group_id,
            ",".join(self.by),
            self.settings.topic,
            self.group_id,
        )

    def _forget(self, partitions: list[TopicPartition]) -> None:
        # Every batch is snapshotted before the next poll, so there is nothing
        # to save here: the new owner restores the latest snapshot.
        for tp in partitions:
            self._states.pop(tp, None)
            self._pending.discard(tp)
        if partitions:
            logger.info(
                "Released partitions %s of group %s.",
                ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions),
                self.group_id,
            )

    def close(self) -> None:
        """Leave the group and close the clients.

        Nothing is written here: a batch interrupted half-way (by Ctrl-C, for
        example) must not be snapshotted, and every whole batch already was.
        """
        try:
            self._scores.consumer.close(autocommit=False)
        finally:
            self._reader.close()
            self._producer.close()


def stream_checkpointed_averages(
    settings: Settings,
    group_id: str,
    by: str | Sequence[str] = "subject",
    idle_timeout: float | None = 5.0,
    from_beginning: bool = False,
    dead_letters: DeadLetterPublisher | None = None,
    on_batch: Callable[[Averages], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> StreamSummary:
    """Run a :class:`CheckpointedAverages` member until idle or stopped.

    Returns
    -------
    StreamSummary
        The averages of the partitions this member owned at the end, and the
        records they cover, including those counted before a restart.
    """
    with CheckpointedAverages(
        settings,
        group_id,
        by=by,
        from_beginning=from_beginning,
        dead_letters=dead_letters,
    ) as member:
        return member.run(idle_timeout=idle_timeout, on_batch=on_batch, stop=stop)
