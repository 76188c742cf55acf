"""The score record: one JSON object per Kafka record value.

Every producer, consumer, aggregate and app in gradelab reads and writes
scores through this module, so there is exactly one definition of a valid
score. A record value is a UTF-8 JSON object::

    {"class": "A", "subject": "Math", "score": 14}

``class``, ``subject`` and ``score`` are required. ``student_id``, ``period``
(for example ``G1``) and ``ts`` (event time, ISO 8601 or seconds since the
epoch) are optional and filled by gradelab's producers. Unknown fields are
ignored, so the original course scripts' messages stay valid.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gradelab.errors import InvalidRecordError

__all__ = [
    "GROUP_FIELDS",
    "MAX_TEXT_LENGTH",
    "MAX_VALUE_BYTES",
    "SCORE_MAX",
    "SCORE_MIN",
    "Score",
    "decode_score",
    "format_timestamp",
    "parse_timestamp",
    "record_key",
]

SCORE_MIN = 0
SCORE_MAX = 20
# A score record is well under 200 bytes; anything this large is a mistake,
# and decoding it would only waste the consumer's time.
MAX_VALUE_BYTES = 64 * 1024
MAX_TEXT_LENGTH = 200

TEXT_FIELDS = ("class", "subject", "student_id", "period")
# C0 and C1 control characters, DEL included; tab and newline are controls too.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")
REQUIRED_FIELDS = ("class", "subject", "score")
# Fields a consumer can group averages by.
GROUP_FIELDS = ("class", "subject", "period", "student_id")


@dataclass(frozen=True, slots=True)
class Score:
    """One student's score in one subject.

    Attributes
    ----------
    class_ : str
        The class (school class) of the student; ``class`` in JSON.
    subject : str
        The subject, for example ``Math``.
    score : float
        A finite number from 0 to 20.
    student_id, period : str or None
        Optional identifiers; ``period`` is for example ``G1`` or ``T2``.
    ts : float or None
        Event time in seconds since the epoch (UTC), when the record has one.
    """

    class_: str
    subject: str
    score: float
    student_id: str | None = None
    period: str | None = None
    ts: float | None = None

    def __post_init__(self) -> None:
        # Validate once here so a Score that exists is always valid, whether
        # it was decoded from Kafka, read from a CSV file or built in a notebook.
        if not _fields_valid(
            self.class_, self.subject, self.score, self.student_id, self.period
        ):
            _check_fields(self)
        if self.ts is not None:
            object.__setattr__(self, "ts", parse_timestamp(self.ts))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        """Build a score from a decoded JSON object, validating every field.

        Raises
        ------
        InvalidRecordError
            If a required field is missing or any field is invalid.
        """
        missing = [name for name in REQUIRED_FIELDS if name not in data]
        if missing:
            raise InvalidRecordError(
                f"The record has no {', '.join(repr(m) for m in missing)} "
                f"field; a score record needs {', '.join(REQUIRED_FIELDS)}.",
                "missing-field",
            )
        return cls(
            class_=data["class"],
            subject=data["subject"],
            score=data["score"],
            student_id=data.get("student_id"),
            period=data.get("period"),
            ts=data.get("ts"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object for this score, without absent optional fields."""
        data: dict[str, Any] = {
            "class": self.class_,
            "subject": self.subject,
            "score": self.score,
        }
        if self.student_id is not None:
            data["student_id"] = self.student_id
        if self.period is not None:
            data["period"] = self.period
        if self.ts is not None:
            data["ts"] = format_timestamp(self.ts)
        return data

    def to_json(self) -> bytes:
        """Serialize this score as a UTF-8 JSON record value."""
        return orjson.dumps(self.to_dict())

    def key(self) -> bytes:
        """Return the Kafka record key for this score (see :func:`record_key`)."""
        return record_key(self.subject)


def record_key(subject: str) -> bytes:
    """Return the record key for a score in ``subject``.

    The key is the subject, UTF-8 encoded. Kafka's default partitioner hashes
    the key, so every record of one subject lands in the same partition. A
    consumer group splits a topic by partition, so the member that owns a
    subject's partition sees all of that subject's scores and its per-subject
    average is complete and exact, with no merge across members. Records of a
    subject also stay in the order they were produced.
    """
    return subject.encode("utf-8")


def decode_score(value: bytes | None) -> Score:
    """Decode and validate one Kafka record value.

    Parameters
    ----------
    value : bytes or None
        The raw record value, as the consumer received it.

    Raises
    ------
    InvalidRecordError
        With a ``reason`` code: ``empty``, ``too-large``, ``not-utf8``,
        ``not-json``, ``not-object``, ``duplicate-key``, ``missing-field``,
        ``wrong-type``, ``empty-field``, ``field-too-long``, ``invalid-character``,
        ``score-not-finite``, ``score-out-of-range`` or ``invalid-timestamp``.
    """
    if not value:
        raise InvalidRecordError("The record value is empty.", "empty")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidRecordError(
            f"The record value is {len(value)} bytes, more than the "
            f"{MAX_VALUE_BYTES} bytes a score record may have.",
            "too-large",
        )
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        data = _decode_slowly(value)
    if type(data) is not dict:
        raise InvalidRecordError(
            f"The record value is a JSON {_json_type(data)}, not an object "
            'like {"class": "A", "subject": "Math", "score": 14}.',
            "not-object",
        )
    if _may_have_duplicate_keys(value, data):
        _check_duplicate_keys(value)
    get = data.get
    class_, subject, score = get("class"), get("subject"), get("score")
    student_id, period, ts = get("student_id"), get("period"), get("ts")
    if not _fields_valid(class_, subject, score, student_id, period):
        # Score.from_dict raises the error that names the invalid field.
        return Score.from_dict(data)
    if ts is not None:
        ts = parse_timestamp(ts)
    return _validated_score(class_, subject, score, student_id, period, ts)


# Setters of Score's slots. They bypass the frozen dataclass's __setattr__,
# which is what its own generated __init__ does as well.
_new_object = object.__new__
_set_class = Score.class_.__set__
_set_subject = Score.subject.__set__
_set_score = Score.score.__set__
_set_student_id = Score.student_id.__set__
_set_period = Score.period.__set__
_set_ts = Score.ts.__set__


def _validated_score(
    class_: str,
    subject: str,
    score: float,
    student_id: str | None,
    period: str | None,
    ts: float | None,
) -> Score:
    """Build a Score from fields that :func:`_fields_valid` accepted.

    ``ts`` must already be the result of :func:`parse_timestamp`. Skipping
    ``__init__`` and a second validation in ``__post_init__`` makes
    :func:`decode_score` about 1 µs faster per record (3.1 against 4.3 µs of
    CPU, measured as in benchmarks/README.md).
    """
    instance = _new_object(Score)
    _set_class(instance, class_)
    _set_subject(instance, subject)
    _set_score(instance, score)
    _set_student_id(instance, student_id)
    _set_period(instance, period)
    _set_ts(instance, ts)
    return instance


def _decode_slowly(value: bytes) -> Any:
    """Decode what orjson rejected, to tell the student precisely why.

    orjson rejects invalid UTF-8 and the non-standard tokens ``NaN`` and
    ``Infinity``. Python's json module accepts those tokens, so a record whose
    score is ``NaN`` is reported as a non-finite score, not as broken JSON.
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecordError(
            f"The record value is not valid UTF-8 (byte {exc.start}).", "not-utf8"
        ) from exc
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidRecordError(
            f"The record value is not valid JSON: {exc}. Send one JSON object "
            'per record, like {"class": "A", "subject": "Math", "score": 14}.',
            "not-json",
        ) from exc


def _may_have_duplicate_keys(value: bytes, data: dict[str, Any]) -> bool:
    """Tell, cheaply and without false negatives, whether keys may repeat.

    Every key of the raw object is followed by one colon, and without
    backslashes the only other colons are those inside strings. If the raw
    colons equal the decoded keys plus the colons of the top-level string
    values, no key token can have been dropped as a duplicate. Otherwise
    (nested objects, escapes, repeated keys) the exact check runs.
    """
    if b"\\" in value:
        return True
    extra_colons = value.count(b":") - len(data)
    if not extra_colons:
        return False
    # Usually only the ts text has colons. The raw colons are one per key
    # token plus those inside every string, so if the colons of ts alone make
    # up the difference, there is no key token beyond the decoded keys.
    ts = data.get("ts")
    if type(ts) is str and ts.count(":") == extra_colons:
        return False
    for item in data.values():
        if type(item) is str:
            extra_colons -= item.count(":")
    return extra_colons != 0


def _check_duplicate_keys(value: bytes) -> None:
    def reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidRecordError(
                    f"The record has the key {key!r} more than once; JSON "
                    "readers disagree on which value wins, so it is rejected.",
                    "duplicate-key",
                )
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(value.decode("utf-8"), object_pairs_hook=reject_duplicates)
    except RecursionError:
        # orjson accepts deeper nesting than Python's json module can parse.
        raise InvalidRecordError(
            "The record value nests objects or arrays too deeply to check; a "
            "score record is one flat JSON object.",
            "not-json",
        ) from None


def _json_type(data: Any) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "boolean"
    if isinstance(data, list):
        return "array"
    if isinstance(data, str):
        return "string"
    return "number"


def _fields_valid(
    class_: Any, subject: Any, score: Any, student_id: Any, period: Any
) -> bool:
    """Tell in one expression whether :func:`_check_fields` would pass.

    A text is valid when it is a ``str`` of 1 to ``MAX_TEXT_LENGTH``
    characters, not all whitespace. ``str.strip()`` and ``str.isspace()``
    use the same definition of whitespace, so this accepts exactly what
    ``_check_text`` accepts. NaN fails both comparisons and infinity the range,
    so a non-finite score is not valid.
    """
    return (
        (type(score) is int or type(score) is float)
        and SCORE_MIN <= score <= SCORE_MAX
        and type(class_) is str
        and 0 < len(class_) <= MAX_TEXT_LENGTH
        and not class_.isspace()
        and (class_.isprintable() or _is_clean_text(class_))
        and type(subject) is str
        and 0 < len(subject) <= MAX_TEXT_LENGTH
        and not subject.isspace()
        and (subject.isprintable() or _is_clean_text(subject))
        and (
            student_id is None
            or (
                type(student_id) is str
                and 0 < len(student_id) <= MAX_TEXT_LENGTH
                and not student_id.isspace()
                and (student_id.isprintable() or _is_clean_text(student_id))
            )
        )
        and (
            period is None
            or (
                type(period) is str
                and 0 < len(period) <= MAX_TEXT_LENGTH
                and not period.isspace()
                and (period.isprintable() or _is_clean_text(period))
            )
        )
    )


def _check_fields(score: Score) -> None:
    """Raise the error for the first invalid field of ``score``, in field order."""
    _check_score(score.score)
    for name in TEXT_FIELDS:
        value = getattr(score, "class_" if name == "class" else name)
        if value is not None or name in REQUIRED_FIELDS:
            _check_text(name, value)


def _check_score(score: Any) -> None:
    if type(score) is not int and type(score) is not float:
        raise InvalidRecordError(
            f"Invalid score {score!r}: expected a number from {SCORE_MIN} to "
            f"{SCORE_MAX}, got a {_json_type(score)}.",
            "wrong-type",
        )
    if type(score) is float and not math.isfinite(score):
        raise InvalidRecordError(
            f"Invalid score {score!r}: a score must be a finite number from "
            f"{SCORE_MIN} to {SCORE_MAX}.",
            "score-not-finite",
        )
    if not SCORE_MIN <= score <= SCORE_MAX:
        shown = score if abs(score) < 1e15 else f"{float(score):.3g}"
        raise InvalidRecordError(
            f"Invalid score {shown}: a score must be from {SCORE_MIN} to {SCORE_MAX}.",
            "score-out-of-range",
        )


def _is_utf8(text: str) -> bool:
    """Tell whether ``text`` encodes as UTF-8; a lone surrogate does not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_clean_text(text: str) -> bool:
    """Tell whether ``text`` has no control character and encodes as UTF-8.

    The fast path calls this only when ``str.isprintable()`` is False, which
    also happens for harmless characters such as a no-break space.
    """
    return CONTROL_CHARACTERS.search(text) is None and _is_utf8(text)


def _check_text(name: str, value: Any) -> None:
    if value is None:
        raise InvalidRecordError(
            f"The {name} is missing: a score record needs a non-empty {name}.",
            "missing-field",
        )
    if type(value) is not str:
        raise InvalidRecordError(
            f"Invalid {name} {value!r}: expected a non-empty string, got a "
            f"{_json_type(value)}.",
            "wrong-type",
        )
    if not value.strip():
        raise InvalidRecordError(
            f"Invalid {name} {value!r}: it must not be empty.", "empty-field"
        )
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidRecordError(
            f"Invalid {name}: {len(value)} characters, more than the "
            f"{MAX_TEXT_LENGTH} allowed.",
            "field-too-long",
        )
    if not _is_utf8(value):
        raise InvalidRecordError(
            f"Invalid {name} {value!r}: it contains a lone surrogate, which is "
            "not valid UTF-8.",
            "not-utf8",
        )
    if CONTROL_CHARACTERS.search(value):
        # Escape sequences or line breaks in a class or subject would let one
        # record rewrite the terminal or split a table row.
        raise InvalidRecordError(
            f"Invalid {name} {value!r}: it contains a control character.",
            "invalid-character",
        )


def parse_timestamp(ts: Any) -> float:
    """Convert an event time to seconds since the epoch (UTC).

    Accepts a number of seconds since the epoch, an ISO 8601 string (a string
    without a UTC offset is taken as UTC) or a :class:`datetime.datetime`.

    Raises
    ------
    InvalidRecordError
        If ``ts`` is of another type, not finite or not a valid date.
    """
    if type(ts) is str:
        # Records carry text, so this case comes first.
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            pass
        else:
            return _datetime_timestamp(moment)
    elif isinstance(ts, datetime):
        return _datetime_timestamp(ts)
    elif type(ts) is float or type(ts) is int:
        if math.isfinite(ts) and 0 <= ts < 32503680000:  # before year 3000
            return float(ts)
    raise InvalidRecordError(
        f"Invalid ts {ts!r}: expected an ISO 8601 date and time such as "
        "'2026-01-15T09:30:00Z' or seconds since the epoch.",
        "invalid-timestamp",
    )


def _datetime_timestamp(moment: datetime) -> float:
    if not moment.tzinfo:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def format_timestamp(ts: float) -> str:
    """Format seconds since the epoch as ISO 8601 UTC with milliseconds.

    The text is the same as
    ``datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")``
    with ``Z`` for ``+00:00``. A producer formats one per record, so the date
    and time of each whole second are formatted once and cached.
    """
    if not 0 <= ts < 32503680000:  # outside 1970 to 2999: no cache
        moment = datetime.fromtimestamp(ts, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # Round to the microsecond, half to even, as datetime.fromtimestamp does,
    # then truncate to the millisecond, as isoformat does.
    fraction, whole = math.modf(ts)
    microseconds = round(fraction * 1e6)
    if microseconds >= 1_000_000:
        whole += 1
        microseconds -= 1_000_000
    return f"{_format_second(int(whole))}.{microseconds // 1000:03d}Z"


@functools.lru_cache(maxsize=1024)
def _format_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
