"""Exact streaming averages of scores, grouped by any record fields.

An :class:`Averages` keeps one :class:`RunningStats` per group (count, sum,
min, max), so its memory grows with the number of groups and never with the
number of records. Aggregates merge, which is what lets several consumers, or
several partitions, each keep their own and combine them at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import pandas as pd

from gradelab.errors import ConfigError
from gradelab.record import GROUP_FIELDS, Score

__all__ = [
    "STAT_COLUMNS",
    "Averages",
    "RunningStats",
    "average_scores",
    "parse_group_fields",
]

STAT_COLUMNS = ("count", "mean", "min", "max")


@dataclass(slots=True)
class RunningStats:
    """Count, sum, minimum and maximum of the scores seen so far."""

    count: int = 0
    total: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def add(self, score: float) -> None:
        """Add one score."""
        self.count += 1
        self.total += score
        if score < self.min:
            self.min = score
        if score > self.max:
            self.max = score

    def merge(self, other: RunningStats) -> None:
        """Add every score that ``other`` has seen."""
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float:
        """The mean score, or NaN when no score was added."""
        return self.total / self.count if self.count else math.nan


def parse_group_fields(by: str | Sequence[str]) -> tuple[str, ...]:
    """Turn ``"class,subject"`` or ``["class", "subject"]`` into a field tuple.

    Raises
    ------
    ConfigError
        If a field is not one of ``class``, ``subject``, ``period`` or
        ``student_id``, or a field is repeated.
    """
    if isinstance(by, str):
        fields = by.split(",")
    elif isinstance(by, Sequence) and all(isinstance(field, str) for field in by):
        fields = list(by)
    else:
        fields = []  # not text: rejected below with the usage message
    fields = [field.strip() for field in fields if field.strip()]
    unknown = [field for field in fields if field not in GROUP_FIELDS]
    if not fields or unknown:
        raise ConfigError(
            f"Invalid grouping {by!r}: group by one or more of "
            f"{', '.join(GROUP_FIELDS)}, for example 'class,subject'."
        )
    if len(set(fields)) != len(fields):
        raise ConfigError(f"Invalid grouping {by!r}: a field is repeated.")
    return tuple(fields)


class Averages:
    """Running averages of scores, one group per distinct value of ``by``.

    Parameters
    ----------
    by : str or sequence of str
        Fields to group by, from ``class``, ``subject``, ``period`` and
        ``student_id``. Default ``subject``.

    Examples
    --------
    >>> averages = Averages(by="subject")
    >>> averages.add(Score("A", "Math", 14))
    >>> averages.add(Score("B", "Math", 10))
    >>> averages.to_frame()
      subject  count  mean  min  max
    0    Math      2  12.0   10   14
    """

    def __init__(self, by: str | Sequence[str] = "subject") -> None:
        self.by = parse_group_fields(by)
        self.groups: dict[tuple[str | None, ...], RunningStats] = {}
        self._attributes = tuple("class_" if f == "class" else f for f in self.by)
        self._group_of = _group_getter(self._attributes)

    def __len__(self) -> int:
        return len(self.groups)

    def __repr__(self) -> str:
        return f"Averages(by={self.by!r}, groups={len(self.groups)})"

    @property
    def count(self) -> int:
        """The number of scores added, over all groups."""
        return sum(stats.count for stats in self.groups.values())

    def group_key(self, score: Score) -> tuple[str | None, ...]:
        """Return the group that ``score`` belongs to."""
        return self._group_of(score)

    def add(self, score: Score) -> None:
        """Add one score to its group."""
        key = self._group_of(score)
        stats = self.groups.get(key)
        if stats is None:
            stats = self.groups[key] = RunningStats()
        stats.add(score.score)

    def add_all(self, scores: Iterable[Score]) -> None:
        """Add every score of ``scores``, for example one batch from a consumer.

        The result is the same as calling :meth:`add` for each score. A
        consumer adds every record it receives, so the loop keeps the
        :meth:`RunningStats.add` update inline to save a method call per score.
        """
        groups = self.groups
        group_of = self._group_of
        for score in scores:
            key = group_of(score)
            stats = groups.get(key)
            if stats is None:
                stats = groups[key] = RunningStats()
            value = score.score
            stats.count += 1
            stats.total += value
            if value < stats.min:
                stats.min = value
            if value > stats.max:
                stats.max = value

    def merge(self, other: Averages) -> None:
        """Add every score that ``other`` has seen; both must group alike."""
        if other.by != self.by:
            raise ValueError(f"Cannot merge averages by {other.by} into {self.by}.")
        for key, stats in other.groups.items():
            mine = self.groups.get(key)
            if mine is None:
                mine = self.groups[key] = RunningStats()
            mine.merge(stats)

    def clear(self) -> None:
        """Forget every score, to start the averages over."""
        self.groups.clear()

    def rows(self) -> list[dict[str, Any]]:
        """Return one dict per group, sorted by group, with the stat columns."""
        rows = []
        for key in sorted(self.groups, key=_sort_key):
            stats = self.groups[key]
            row: dict[str, Any] = dict(zip(self.by, key, strict=True))
            row.update(count=stats.count, mean=stats.mean, min=stats.min, max=stats.max)
            rows.append(row)
        return rows

    def to_frame(self) -> pd.DataFrame:
        """Return the averages as a DataFrame: group columns, then
        ``count``, ``mean``, ``min`` and ``max``, one row per group."""
        return pd.DataFrame(self.rows(), columns=[*self.by, *STAT_COLUMNS])

    def to_state(self) -> dict[str, Any]:
        """Return a JSON-serializable snapshot, read back by :meth:`from_state`."""
        return {
            "by": list(self.by),
            "groups": [
                [list(key), stats.count, stats.total, stats.min, stats.max]
                for key, stats in self.groups.items()
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Averages:
        """Rebuild averages from a :meth:`to_state` snapshot."""
        averages = cls(by=state["by"])
        for key, count, total, low, high in state["groups"]:
            averages.groups[tuple(key)] = RunningStats(count, total, low, high)
        return averages


def _group_getter(
    attributes: tuple[str, ...],
) -> Callable[[Score], tuple[str | None, ...]]:
    """Return a function that maps a score to its group key, always a tuple."""
    get = attrgetter(*attributes)
    if len(attributes) > 1:
        return get  # attrgetter of several names already returns a tuple
    return lambda score: (get(score),)


def _sort_key(key: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    # Groups with a missing field (None) sort after the others.
    return tuple((part is None, part or "") for part in key)


def average_scores(
    scores: Iterable[Score] | pd.DataFrame, by: str | Sequence[str] = "subject"
) -> pd.DataFrame:
    """Compute averages of a batch of scores in one call.

    Parameters
    ----------
    scores : iterable of Score, or DataFrame
        Scores, or a DataFrame with a ``score`` column and the group columns
        (as returned by :func:`gradelab.consumer.read_scores`).
    by : str or sequence of str
        Fields to group by. Default ``subject``.

    Returns
    -------
    DataFrame
        The group columns, then ``count``, ``mean``, ``min`` and ``max``.
    """
    fields = parse_group_fields(by)
    if isinstance(scores, pd.DataFrame):
        missing = [c for c in (*fields, "score") if c not in scores.columns]
        if missing:
            raise ConfigError(
                f"The DataFrame has no column {', '.join(missing)}; it has "
                f"{', '.join(map(str, scores.columns))}."
            )
        grouped = scores.groupby(list(fields), sort=True, dropna=False)["score"]
        frame = grouped.agg(["count", "mean", "min", "max"]).reset_index()
        return frame[[*fields, *STAT_COLUMNS]]
    averages = Averages(by=fields)
    averages.add_all(scores)
    return averages.to_frame()
