"""Live averages for a desktop window or a notebook chart, computed off its thread.

A GUI toolkit lets only its own thread touch widgets, and a Kafka consumer
blocks while it polls, so a live view splits the work in two:

- :class:`LiveFeed` runs a worker thread that owns its own consumer and only
  aggregates. Every ``publish_interval`` seconds it hands an immutable
  :class:`Snapshot` to the view through a one-slot queue that keeps only the
  latest snapshot. So the worker never waits for the view, and the view never
  redraws stale data.
- The view (Tk, ipywidgets) polls :meth:`LiveFeed.latest` on its own timer and
  redraws at its own pace, whatever the input rate.

When no broker answers, the worker retries with a bounded backoff, logs each
retry at WARNING and publishes the problem in the snapshot; it never raises
into the view. :class:`Simulator` produces simulated scores from a background
thread, so a teacher can demonstrate the stream with no other terminal.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from gradelab.averages import Averages, RunningStats, parse_group_fields
from gradelab.checkpoint import CheckpointedAverages
from gradelab.config import Settings
from gradelab.consumer import ScoreConsumer
from gradelab.errors import (
    BrokerUnavailableError,
    ConfigError,
    GradelabError,
    InvalidRecordError,
)
from gradelab.producer import produce_scores
from gradelab.record import Score, format_timestamp
from gradelab.simulate import simulate_scores

__all__ = [
    "DEFAULT_SIMULATOR_RATE",
    "FINEST_FIELDS",
    "GROUPINGS",
    "Backoff",
    "CheckpointSource",
    "ConnectionState",
    "ConsumerSource",
    "GroupRow",
    "LiveAverages",
    "LiveFeed",
    "ScoreSource",
    "Simulator",
    "SimulatorStatus",
    "Snapshot",
    "SourceFactory",
    "checkpoint_source",
    "consumer_source",
    "overall_stats",
    "parse_live_grouping",
    "regroup",
]

logger = logging.getLogger(__name__)

# The live aggregate keeps one RunningStats per (class, subject, period), the
# finest grouping a view offers, and derives every coarser grouping by merging.
FINEST_FIELDS = ("class", "subject", "period")
# Groupings a view offers in its selector, by name.
GROUPINGS: dict[str, tuple[str, ...]] = {
    "subject": ("subject",),
    "class": ("class",),
    "class,subject": ("class", "subject"),
    "period": ("period",),
}

# Records one poll may return. At the roughly 35,000 records/s that one core
# of a 2-core AMD EPYC decodes, a batch this size takes about 60 ms, which
# bounds how long a stop request waits at full input rate.
MAX_BATCH_RECORDS = 2000
POLL_TIMEOUT = 0.1
# Seconds one connection attempt may take before the feed retries; a shorter
# connect_timeout setting (GRADELAB_CONNECT_TIMEOUT) wins. The settings'
# default of 10 s suits a one-shot command, which then fails; a live view
# rather reports a missing broker within a few seconds and keeps retrying, so
# a broker started later is still reached.
# NOTE: a broker that needs more than 3 s to answer is never reached; pass a
# larger connect_timeout to LiveFeed if a remote cluster needs it.
DEFAULT_CONNECT_TIMEOUT = 3.0
# Records per second counts the records received in this many last seconds.
RATE_WINDOW = 2.0
# How often the worker reads the consumer's connection count.
CONNECTION_CHECK_INTERVAL = 1.0
# Seconds between two WARNING lines about invalid records.
INVALID_LOG_INTERVAL = 5.0
# Records per second the demo simulator sends; slow enough to watch the bars.
DEFAULT_SIMULATOR_RATE = 50.0


def parse_live_grouping(by: str | Sequence[str]) -> tuple[str, ...]:
    """Turn ``"class,subject"`` into a field tuple that a live view can show.

    Raises
    ------
    ConfigError
        If a field is not one of ``class``, ``subject`` or ``period``.
    """
    fields = parse_group_fields(by)
    unsupported = [field for field in fields if field not in FINEST_FIELDS]
    if unsupported:
        raise ConfigError(
            f"Invalid live grouping {by!r}: a live view groups by "
            f"{', '.join(FINEST_FIELDS)} or a combination such as 'class,subject', "
            f"not by {', '.join(unsupported)}."
        )
    return fields


class LiveAverages:
    """Running averages kept at the finest grouping and regrouped on request.

    Switching a view from "by subject" to "by class" must not re-read the
    topic, so the scores are aggregated once by ``class``, ``subject`` and
    ``period``, and :meth:`regroup` merges those groups into any coarser
    grouping. Counts, minimums and maximums merge exactly. Sums merge exactly
    too while the scores are multiples of 0.5, as the simulator and most
    gradebooks write them, because such sums are exact in a float below 2**52.
    """

    def __init__(self) -> None:
        self.finest = Averages(by=FINEST_FIELDS)

    def __len__(self) -> int:
        return len(self.finest)

    @property
    def count(self) -> int:
        """The number of scores added."""
        return self.finest.count

    def add(self, score: Score) -> None:
        """Add one score."""
        self.finest.add(score)

    def clear(self) -> None:
        """Forget every score."""
        self.finest.clear()

    def regroup(self, by: str | Sequence[str]) -> Averages:
        """Return new averages grouped by ``by``, merged from the finest groups.

        Raises
        ------
        ConfigError
            If ``by`` names a field other than ``class``, ``subject`` or
            ``period``.
        """
        return regroup(self.finest, by)

    def overall(self) -> RunningStats:
        """Return the statistics of every score added, in one group."""
        return overall_stats(self.finest)


def regroup(finest: Averages, by: str | Sequence[str]) -> Averages:
    """Merge averages grouped by :data:`FINEST_FIELDS` into the grouping ``by``.

    Raises
    ------
    ConfigError
        If ``by`` names a field other than ``class``, ``subject`` or ``period``.
    """
    fields = parse_live_grouping(by)
    positions = [FINEST_FIELDS.index(field) for field in fields]
    result = Averages(by=fields)
    for key, stats in finest.groups.items():
        coarse = tuple(key[position] for position in positions)
        target = result.groups.get(coarse)
        if target is None:
            target = result.groups[coarse] = RunningStats()
        target.merge(stats)
    return result


def overall_stats(averages: Averages) -> RunningStats:
    """Return the statistics of every score in ``averages``, in one group."""
    total = RunningStats()
    for stats in averages.groups.values():
        total.merge(stats)
    return total


@dataclass(frozen=True, slots=True)
class GroupRow:
    """One row of a live table: a group's key and its statistics."""

    key: tuple[str | None, ...]
    count: int
    mean: float
    min: float
    max: float


class ConnectionState(enum.Enum):
    """The connection state of a live feed."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    # No broker responded to the last attempt, so the feed retries after a delay.
    UNAVAILABLE = "unavailable"
    # The feed was connected, then lost every connection; the client reconnects.
    DISCONNECTED = "disconnected"
    # The last attempt failed on another error (authentication, settings), or
    # the worker stopped on an unexpected error; ``Snapshot.error`` names which.
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a live view shows at one moment; immutable, so safe across threads.

    Attributes
    ----------
    by : tuple of str
        The grouping of ``rows``.
    rows : tuple of GroupRow
        One row per group, sorted by group key.
    count, mean : int, float
        Valid scores over all groups and their mean (NaN when there is none).
    received, invalid : int
        Records received since the start or the last reset, valid or not, and
        the invalid ones among them, which are skipped.
    records_per_second : float
        Records received per second over the last two seconds.
    first_record_time, last_record_time : float or None
        Wall-clock times (seconds since the epoch) at which the first and the
        latest record since the start or the last reset were received.
    state : ConnectionState
        The connection to the broker.
    error : str or None
        Why the feed is not connected, as a sentence that states what to do.
    retry_in : float or None
        Seconds until the next connection attempt, when one is planned.
    sequence : int
        Increases with every snapshot the feed publishes.
    """

    by: tuple[str, ...]
    rows: tuple[GroupRow, ...]
    count: int
    mean: float
    received: int
    invalid: int
    records_per_second: float
    first_record_time: float | None
    last_record_time: float | None
    state: ConnectionState
    error: str | None
    retry_in: float | None
    sequence: int

    def row_dicts(self) -> list[dict[str, Any]]:
        """Return the rows as dicts: the group fields, then the statistics."""
        rows = []
        for row in self.rows:
            item: dict[str, Any] = dict(zip(self.by, row.key, strict=True))
            item.update(count=row.count, mean=row.mean, min=row.min, max=row.max)
            rows.append(item)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict: the rows, then the counters.

        Times are ISO 8601 UTC strings, and a mean of no score is ``None``.
        """
        return {
            "by": list(self.by),
            "rows": self.row_dicts(),
            "count": self.count,
            "mean": None if math.isnan(self.mean) else self.mean,
            "received": self.received,
            "invalid": self.invalid,
            "records_per_second": self.records_per_second,
            "first_record_time": _iso_or_none(self.first_record_time),
            "last_record_time": _iso_or_none(self.last_record_time),
            "connection": self.state.value,
            "error": self.error,
        }


def _iso_or_none(moment: float | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


class ScoreSource(Protocol):
    """The input of a live feed: a consumer that aggregates as it reads.

    The aggregate lives with the consumer because it must match the consumer's
    position: a source that starts again from its first offset starts its
    averages again too, and :class:`CheckpointSource` restores both together.
    A source is used by the feed's worker thread only.
    """

    @property
    def received(self) -> int:
        """Records the aggregate covers, valid or not."""

    @property
    def invalid(self) -> int:
        """Invalid records among them, which are skipped."""

    def poll(self, timeout: float) -> int:
        """Read one batch into the aggregate; return the records it had."""

    def averages(self) -> Averages:
        """Return the aggregate, grouped by :data:`FINEST_FIELDS`."""

    def reset(self) -> bool:
        """Start the aggregate over at the current position; return False if
        this source cannot."""

    def close(self) -> None:
        """Close the consumer."""


# Builds a connected source for the settings it is given; raises
# BrokerUnavailableError (or another GradelabError) when it cannot connect.
SourceFactory = Callable[[Settings], ScoreSource]


class _InvalidRecordLog:
    """Log invalid records at WARNING, at most one line every few seconds.

    A producer that sends bad records at full rate would otherwise write
    thousands of log lines a second.
    """

    def __init__(self, interval: float = INVALID_LOG_INTERVAL) -> None:
        self.interval = interval
        self._skipped = 0
        self._last_log = -math.inf

    def __call__(self, record: ConsumerRecord, error: InvalidRecordError) -> None:
        self._skipped += 1
        now = time.monotonic()
        if now - self._last_log < self.interval:
            return
        logger.warning(
            "Skipped %d invalid record(s); the latest, at %s partition %d offset "
            "%d (%s): %s",
            self._skipped,
            record.topic,
            record.partition,
            record.offset,
            error.reason,
            error,
        )
        self._skipped = 0
        self._last_log = now


class ConsumerSource:
    """A :class:`~gradelab.consumer.ScoreConsumer` with an in-memory aggregate.

    Without a group, the consumer never creates the topic: a broker that
    auto-creates topics would give it one partition, and the producer's three
    partitions would never be created.

    Parameters
    ----------
    settings : Settings
        Broker address and topic.
    group_id, from_beginning :
        As for :func:`gradelab.consumer.make_consumer`. With a group, a
        restarted source resumes from the committed offsets but its averages
        start empty; :class:`CheckpointSource` keeps them.
    """

    def __init__(
        self,
        settings: Settings,
        group_id: str | None = None,
        from_beginning: bool = False,
    ) -> None:
        options = {}
        if group_id is None:
            # NOTE: with kafka-python 3.0.12, a group member that disables
            # topic auto-creation was assigned no partition in our tests, so
            # the option is set only without a group.
            options["allow_auto_create_topics"] = False
        self.scores = ScoreConsumer(
            settings,
            group_id=group_id,
            from_beginning=from_beginning,
            on_invalid=_InvalidRecordLog(),
            **options,
        )
        # Read by the feed for the connection-count metric.
        self.consumer = self.scores.consumer
        self.live = LiveAverages()
        self.received = 0
        self.invalid = 0

    def poll(self, timeout: float) -> int:
        """Read one batch into the aggregate; return the records it had."""
        received_before = self.scores.received
        invalid_before = self.scores.invalid_count
        batch = self.scores.poll(timeout=timeout, max_records=MAX_BATCH_RECORDS)
        add = self.live.add
        for _record, score in batch:
            add(score)
        received = self.scores.received - received_before
        self.received += received
        self.invalid += self.scores.invalid_count - invalid_before
        return received

    def averages(self) -> Averages:
        """Return the aggregate, grouped by :data:`FINEST_FIELDS`."""
        return self.live.finest

    def reset(self) -> bool:
        """Start the aggregate and the counters over; the position is kept."""
        self.live.clear()
        self.received = 0
        self.invalid = 0
        return True

    def close(self) -> None:
        """Close the consumer, committing offsets if it is in a group."""
        self.scores.close()


class CheckpointSource:
    """A source whose aggregate survives crashes, through
    :class:`gradelab.checkpoint.CheckpointedAverages`.

    The member saves its averages together with the offsets they cover after
    every batch, so a view killed and restarted with the same consumer group
    shows every record counted exactly once.
    """

    def __init__(
        self, settings: Settings, group_id: str, from_beginning: bool = False
    ) -> None:
        self.member = CheckpointedAverages(
            settings,
            group_id,
            by=FINEST_FIELDS,
            from_beginning=from_beginning,
        )
        self._summary = self.member.summary()

    @property
    def received(self) -> int:
        """Records the group's restored and new snapshots cover."""
        return self._summary.received

    @property
    def invalid(self) -> int:
        """Invalid records among them."""
        return sum(self._summary.invalid.values())

    def poll(self, timeout: float) -> int:
        """Read and snapshot one batch; return the records it added."""
        received_before = self._summary.received
        self.member.poll_once(timeout)
        # A restore or a rebalance changes the totals without a batch, so the
        # summary is taken after every poll; it merges a few dozen groups.
        self._summary = self.member.summary()
        return max(self._summary.received - received_before, 0)

    def averages(self) -> Averages:
        """Return the merged aggregate of the partitions this member owns."""
        return self._summary.averages

    def reset(self) -> bool:
        """Return False: the snapshots are the group's record of what it read.

        A new consumer group starts the averages over instead.
        """
        return False

    def close(self) -> None:
        """Leave the group and close the member's clients."""
        self.member.close()


def consumer_source(
    group_id: str | None = None, from_beginning: bool = False
) -> SourceFactory:
    """Return a factory of :class:`ConsumerSource` sources for a live feed."""

    def create(settings: Settings) -> ScoreSource:
        return ConsumerSource(settings, group_id, from_beginning)

    return create


def checkpoint_source(group_id: str, from_beginning: bool = False) -> SourceFactory:
    """Return a factory of :class:`CheckpointSource` sources for a live feed."""

    def create(settings: Settings) -> ScoreSource:
        return CheckpointSource(settings, group_id, from_beginning)

    return create


class Backoff:
    """Delays between connection attempts: doubling from ``initial`` up to
    ``maximum`` seconds, with up to 10 % random jitter so that many clients
    do not retry in step."""

    def __init__(self, initial: float = 0.5, maximum: float = 5.0) -> None:
        if not 0 < initial <= maximum:
            raise ConfigError(
                f"Invalid backoff {initial!r} to {maximum!r} s: expected "
                "0 < initial <= maximum."
            )
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next_delay(self) -> float:
        """Return the delay before the next attempt and lengthen the one after."""
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay * random.uniform(0.9, 1.0)

    def reset(self) -> None:
        """Start over from ``initial`` after a successful attempt."""
        self._next = self.initial


class LiveFeed:
    """Consume scores in a worker thread and publish snapshots for a view.

    Parameters
    ----------
    settings : Settings
        Broker address and topic.
    by : str or sequence of str
        Initial grouping of the snapshots' rows; see :meth:`set_grouping`.
    source_factory : callable, optional
        Builds the source the worker reads, given the settings; default
        :func:`consumer_source` with no consumer group, starting at the
        latest record.
    publish_interval : float
        Seconds between two snapshots while records arrive.
    connect_timeout : float
        Seconds one connection attempt may take, or the settings'
        ``connect_timeout`` if shorter. It also bounds how long a stop can
        wait for a worker that is connecting.
    backoff : Backoff, optional
        Delays between connection attempts; default 0.5 s doubling to 5 s.

    Examples
    --------
    >>> feed = LiveFeed(Settings.load(), by="subject")  # doctest: +SKIP
    >>> feed.start()  # doctest: +SKIP
    >>> snapshot = feed.latest()  # None until the first snapshot  # doctest: +SKIP
    >>> feed.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings,
        by: str | Sequence[str] = "subject",
        source_factory: SourceFactory | None = None,
        publish_interval: float = 0.1,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self._attempt_settings = dataclasses.replace(
            settings, connect_timeout=min(settings.connect_timeout, connect_timeout)
        )
        self._by = parse_live_grouping(by)
        self._source_factory = source_factory or consumer_source()
        self.publish_interval = publish_interval
        self._backoff = backoff or Backoff()
        self._snapshots: queue.Queue[Snapshot] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        # Set by stop(), reset() and set_grouping() to end a retry wait early.
        self._wake = threading.Event()
        self._reset_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._source: ScoreSource | None = None
        # Everything below belongs to the worker thread once it has started.
        # The last aggregate read from a source, shown while none is connected.
        self._averages = Averages(by=FINEST_FIELDS)
        self._received = 0
        self._invalid = 0
        self._first_record_time: float | None = None
        self._last_record_time: float | None = None
        self._rate_samples: deque[tuple[float, int]] = deque()
        self._state = ConnectionState.CONNECTING
        self._error: str | None = None
        self._retry_at: float | None = None
        self._sequence = 0
        self._published_by: tuple[str, ...] | None = None
        self._last_publish = -math.inf
        self._last_connection_check = -math.inf

    @property
    def by(self) -> tuple[str, ...]:
        """The grouping that the next snapshot will have."""
        return self._by

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread.

        Raises
        ------
        RuntimeError
            If the feed was already started.
        """
        if self._thread is not None:
            raise RuntimeError("This live feed was already started; make a new one.")
        # A daemon thread: if a connection attempt outlasts stop()'s timeout,
        # the process can still exit.
        self._thread = threading.Thread(
            target=self._run, name="gradelab-live-feed", daemon=True
        )
        self._thread.start()
        logger.info(
            "Live feed started on %s at %s.",
            self.settings.topic,
            self.settings.bootstrap_servers,
        )

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the worker to stop, close its consumer and wait ``timeout`` s.

        Returns
        -------
        bool
            True if the worker has stopped, False if it is still inside a
            connection attempt after ``timeout`` seconds. The attempt ends
            within ``connect_timeout`` seconds, and the worker then exits.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        if not stopped:
            logger.info("The live feed is still connecting; it will exit after.")
        return stopped

    def latest(self) -> Snapshot | None:
        """Return the newest snapshot not yet taken, or None. Never blocks."""
        try:
            return self._snapshots.get_nowait()
        except queue.Empty:
            return None

    def set_grouping(self, by: str | Sequence[str]) -> None:
        """Regroup the rows, from the next snapshot on, without re-reading.

        Raises
        ------
        ConfigError
            If ``by`` names a field other than ``class``, ``subject`` or
            ``period``; the grouping is then unchanged.
        """
        # A tuple assignment is atomic, so the worker reads the old or the new one.
        self._by = parse_live_grouping(by)
        self._wake.set()

    def reset(self) -> None:
        """Start the averages and the counters over, from the next snapshot on.

        The consumer keeps its position: records already read are not read
        again.
        """
        self._reset_requested.set()
        self._wake.set()

    # The worker thread.

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._source is None:
                    self._connect()
                else:
                    self._consume()
        except Exception as exc:
            # A bug, not a broker problem: stop retrying, log the traceback for
            # the developer and tell the view in one sentence.
            logger.exception("The live feed stopped on an unexpected error.")
            self._state = ConnectionState.FAILED
            self._error = f"The live feed stopped on an unexpected error: {exc!r}."
        finally:
            # The last snapshot keeps the connection state the feed had, so a
            # view that closes shows and saves how it ended.
            self._close_source()
            self._retry_at = None
            self._apply_requests()
            self._publish()
            logger.info("Live feed stopped.")

    def _connect(self) -> None:
        # A retry keeps showing why the last attempt failed until it succeeds.
        if self._state is ConnectionState.CONNECTED:
            self._state = ConnectionState.CONNECTING
        self._retry_at = None
        self._publish()
        try:
            self._source = self._source_factory(self._attempt_settings)
        except (GradelabError, KafkaError) as exc:
            self._error = str(exc)
            if isinstance(exc, BrokerUnavailableError):
                self._state = ConnectionState.UNAVAILABLE
            else:
                # Authentication, configuration and other client errors are
                # retried too, because the view must keep running while they
                # are fixed.
                self._state = ConnectionState.FAILED
            delay = self._backoff.next_delay()
            logger.warning("%s Retrying in %.1f s.", exc, delay)
            self._wait(delay)
            return
        self._backoff.reset()
        self._state = ConnectionState.CONNECTED
        self._error = None
        self._last_connection_check = time.monotonic()
        logger.info(
            "Live feed connected to %s, reading %s.",
            self.settings.bootstrap_servers,
            self.settings.topic,
        )
        self._publish()

    def _wait(self, delay: float) -> None:
        """Sleep ``delay`` s before a retry, still serving requests and stop."""
        self._retry_at = time.monotonic() + delay
        self._publish()
        while not self._stop.is_set():
            remaining = self._retry_at - time.monotonic()
            if remaining <= 0:
                break
            if self._wake.wait(remaining):
                self._wake.clear()
                self._apply_requests()
                self._publish()
        self._retry_at = None

    def _consume(self) -> None:
        source = self._source
        assert source is not None
        try:
            received = source.poll(POLL_TIMEOUT)
        except (KafkaError, GradelabError) as exc:
            self._error = (
                f"Reading {self.settings.topic} from "
                f"{self.settings.bootstrap_servers} failed: {exc}"
            )
            self._state = ConnectionState.DISCONNECTED
            delay = self._backoff.next_delay()
            logger.warning("%s Reconnecting in %.1f s.", self._error, delay)
            self._close_source()
            self._wait(delay)
            return
        if received:
            now = time.time()
            if self._first_record_time is None:
                self._first_record_time = now
            self._last_record_time = now
        self._check_connection(source)
        self._apply_requests()
        if time.monotonic() - self._last_publish >= self.publish_interval:
            self._publish()

    def _check_connection(self, source: ScoreSource) -> None:
        """Show a lost broker as DISCONNECTED while the client reconnects.

        kafka-python reconnects on its own and ``poll()`` just returns nothing
        meanwhile, so the consumer's ``connection-count`` metric is the only
        sign. A source without that metric is taken as connected.
        """
        now = time.monotonic()
        if now - self._last_connection_check < CONNECTION_CHECK_INTERVAL:
            return
        self._last_connection_check = now
        consumer = getattr(source, "consumer", None)
        if consumer is None:
            return
        metrics = consumer.metrics().get("consumer-metrics", {})
        connections = metrics.get("connection-count")
        if connections is None:
            return
        if connections > 0:
            if self._state is not ConnectionState.CONNECTED:
                logger.info(
                    "Live feed reconnected to %s.", self.settings.bootstrap_servers
                )
            self._state = ConnectionState.CONNECTED
            self._error = None
        elif self._state is ConnectionState.CONNECTED:
            self._state = ConnectionState.DISCONNECTED
            self._error = (
                f"The connection to {self.settings.bootstrap_servers} was lost; "
                "reconnecting. If the broker is stopped, start it with "
                "`gradelab broker start`."
            )
            logger.warning("%s", self._error)

    def _apply_requests(self) -> None:
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            self._reset()
        if self._by != self._published_by:
            self._last_publish = -math.inf

    def _reset(self) -> None:
        if self._source is not None and not self._source.reset():
            logger.warning(
                "The averages of a checkpointed consumer group cannot be reset: "
                "they are the group's saved record of what it read. Use a new "
                "consumer group to start over."
            )
            return
        self._averages = Averages(by=FINEST_FIELDS)
        self._received = 0
        self._invalid = 0
        self._first_record_time = None
        self._last_record_time = None
        self._rate_samples.clear()
        self._last_publish = -math.inf
        logger.info("Live averages reset.")

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is None:
            return
        try:
            source.close()
        except KafkaError as exc:
            logger.warning("Closing the live feed's consumer failed: %s", exc)

    def _publish(self) -> None:
        now = time.monotonic()
        source = self._source
        if source is not None:
            self._averages = source.averages()
            if source.received < self._received:
                # A new source starts its aggregate over; so does the rate.
                self._rate_samples.clear()
            self._received = source.received
            self._invalid = source.invalid
        by = self._by
        grouped = regroup(self._averages, by)
        rows = tuple(
            GroupRow(key, stats.count, stats.mean, stats.min, stats.max)
            for key, stats in sorted(grouped.groups.items(), key=_group_sort_key)
        )
        overall = overall_stats(self._averages)
        retry_in = None
        if self._retry_at is not None:
            retry_in = max(self._retry_at - now, 0.0)
        self._sequence += 1
        snapshot = Snapshot(
            by=by,
            rows=rows,
            count=overall.count,
            mean=overall.mean,
            received=self._received,
            invalid=self._invalid,
            records_per_second=self._records_per_second(now),
            first_record_time=self._first_record_time,
            last_record_time=self._last_record_time,
            state=self._state,
            error=self._error,
            retry_in=retry_in,
            sequence=self._sequence,
        )
        _put_latest(self._snapshots, snapshot)
        self._published_by = by
        self._last_publish = now

    def _records_per_second(self, now: float) -> float:
        samples = self._rate_samples
        samples.append((now, self._received))
        # Keep one sample older than the window, so the rate spans all of it.
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        start, received_then = samples[0]
        if now - start <= 0:
            return 0.0
        return (self._received - received_then) / (now - start)


def _group_sort_key(item: tuple[tuple[str | None, ...], RunningStats]) -> tuple:
    # Groups with a missing field (None) sort after the others.
    return tuple((part is None, part or "") for part in item[0])


def _put_latest(slot: queue.Queue[Snapshot], snapshot: Snapshot) -> None:
    """Replace whatever ``slot`` contains with ``snapshot``, without blocking."""
    try:
        slot.get_nowait()
    except queue.Empty:
        pass
    try:
        slot.put_nowait(snapshot)
    except queue.Full:
        # Only one thread puts, so the slot can only have been refilled by a
        # concurrent put that this one replaces anyway; drop this snapshot.
        pass


@dataclass(frozen=True, slots=True)
class SimulatorStatus:
    """Whether the simulator is sending, how many records it has handed to
    the producer, and the error that stopped it, if any."""

    running: bool
    sent: int
    error: str | None


class Simulator:
    """Produce simulated scores from a background thread until stopped.

    Parameters
    ----------
    settings : Settings
        Broker address and topic; the topic is created with three partitions
        when it does not exist.
    rate : float or None
        Records per second; None sends as fast as the producer goes.
    seed : int, optional
        Seed of the simulated school; by default a new one for every start,
        so a restarted demonstration does not repeat the same scores.
    **simulation
        ``classes``, ``subjects`` and ``students``, as for
        :func:`gradelab.simulate.simulate_scores`.
    """

    def __init__(
        self,
        settings: Settings,
        rate: float | None = DEFAULT_SIMULATOR_RATE,
        seed: int | None = None,
        **simulation: Any,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ConfigError(
                f"Invalid simulator rate {rate!r}: expected a positive number of "
                "records per second, or None for as fast as possible."
            )
        self.settings = settings
        self.rate = rate
        self.seed = seed
        self.simulation = simulation
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sent = 0
        self._error: str | None = None

    @property
    def running(self) -> bool:
        """Whether the producer thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> SimulatorStatus:
        """Return the simulator's state as an immutable value."""
        return SimulatorStatus(self.running, self._sent, self._error)

    def start(self) -> bool:
        """Start sending; return False if the simulator is already running."""
        if self.running:
            return False
        self._stop.clear()
        self._sent = 0
        self._error = None
        seed = self.seed if self.seed is not None else random.randrange(2**31)
        self._thread = threading.Thread(
            target=self._run, args=(seed,), name="gradelab-simulator", daemon=True
        )
        self._thread.start()
        logger.info(
            "Simulator started on %s (seed %d, %s).",
            self.settings.topic,
            seed,
            "as fast as possible" if self.rate is None else f"{self.rate:g} records/s",
        )
        return True

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop sending and wait up to ``timeout`` s; return True once stopped."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self, seed: int) -> None:
        scores = simulate_scores(seed=seed, **self.simulation)
        try:
            produce_scores(
                self.settings,
                self._until_stopped(scores),
                progress=self._count,
                rate=self.rate,
            )
        except GradelabError as exc:
            self._error = str(exc)
            logger.warning("The simulator stopped: %s", exc)
            return
        logger.info("Simulator stopped after %d record(s).", self._sent)

    def _until_stopped(self, scores: Iterator[Score]) -> Iterator[Score]:
        for score in scores:
            if self._stop.is_set():
                return
            yield score

    def _count(self, records: int) -> None:
        self._sent += records
