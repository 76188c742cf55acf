"""Reading gradebooks (CSV files) as score records.

Two layouts are supported:

- long: one row per score, with columns ``class``, ``subject``, ``score`` and
  optionally ``student_id``, ``period`` and ``ts``;
- wide: one row per student with several score columns (``score_cols``);
  each score column becomes one record whose ``period`` is the column name.

Rows are read one at a time, so a gradebook of any size streams in constant
memory. A row that fails validation is yielded as an
:class:`GradebookRowError` that names its line (and the score column when
the score is at fault), and the rows after it are still read.
"""

from __future__ import annotations

import codecs
import csv
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from gradelab.errors import GradebookError, InvalidRecordError
from gradelab.record import Score

__all__ = ["GradebookRowError", "parse_score_text", "read_gradebook"]

DECIMAL_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


class GradebookRowError(InvalidRecordError):
    """Raised (or yielded) for a gradebook row that is not a valid score.

    Attributes
    ----------
    line : int
        The line number in the file, counting the header as line 1.
    """

    def __init__(self, line: int, message: str, reason: str) -> None:
        super().__init__(f"Line {line}: {message}", reason)
        self.line = line


def parse_score_text(text: str) -> int | float:
    """Parse a score written in a CSV cell: ``14``, ``14.5`` or ``14,5``.

    Raises
    ------
    InvalidRecordError
        If the cell is empty or not a number.
    """
    cleaned = text.strip()
    if not cleaned:
        raise InvalidRecordError("the score is empty", "missing-field")
    if cleaned.count(",") == 1 and "." not in cleaned:
        cleaned = cleaned.replace(",", ".")  # decimal comma, as in French files
    # float() alone would also take "nan", "1_4" and non-ASCII digits.
    if not DECIMAL_NUMBER.fullmatch(cleaned):
        raise InvalidRecordError(f"the score {text!r} is not a number", "wrong-type")
    number = float(cleaned)
    if math.isfinite(number) and number.is_integer():
        return int(number)
    return number


def read_gradebook(
    path: str | Path,
    sep: str = ",",
    subject: str | None = None,
    subject_col: str | None = None,
    class_col: str | None = None,
    student_col: str | None = None,
    score_cols: Sequence[str] | None = None,
    encoding: str = "utf-8-sig",
) -> Iterator[Score | GradebookRowError]:
    """Read a gradebook file as an iterator of scores and row errors.

    The iterator yields one :class:`Score`, or one :class:`GradebookRowError`,
    per score cell, and reads the file one row at a time.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    sep : str
        Field separator, for example ``;``.
    subject : str, optional
        One subject for every row (a wide gradebook of a single course).
    subject_col, class_col, student_col : str, optional
        Columns that hold the subject, the class and the student id; default
        ``subject``, ``class`` and ``student_id``.
    score_cols : sequence of str, optional
        Score columns of a wide gradebook. Without them the file is read as a
        long gradebook with a ``score`` column.

    Raises
    ------
    GradebookError
        When called, if an option is invalid, or the file cannot be opened or
        lacks a column it needs. While iterating, if a later line cannot be
        decoded or parsed, after the scores before it were yielded.
    """
    path = Path(path)
    if subject is not None and subject_col is not None:
        raise GradebookError(
            "Pass either a subject name or a subject column, not both."
        )
    if subject is not None and not subject.strip():
        raise GradebookError("The subject name is empty; pass a name such as Math.")
    if len(sep) != 1:
        raise GradebookError(f"Invalid separator {sep!r}: expected one character.")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise GradebookError(
            f"Unknown encoding {encoding!r}: pass a Python codec name such as "
            "utf-8, utf-8-sig or latin-1."
        ) from None
    # Check the file and its header now, not at the first next(), so a
    # caller learns of a missing file or column before it connects to Kafka.
    with _open_gradebook(path, encoding) as handle:
        header = _read_header(path, csv.reader(handle, delimiter=sep), encoding)
    columns = _map_columns(
        path, header, sep, subject, subject_col, class_col, student_col, score_cols
    )
    return _read_rows(path, sep, encoding, header, columns, subject)


def _open_gradebook(path: Path, encoding: str) -> TextIO:
    try:
        return path.open(newline="", encoding=encoding)
    except OSError as exc:
        raise GradebookError(
            f"Cannot open the gradebook {str(path)!r}: {exc.strerror}."
        ) from exc


def _read_header(path: Path, reader: Any, encoding: str) -> list[str]:
    try:
        return next(reader)
    except StopIteration:
        raise GradebookError(f"The gradebook {str(path)!r} is empty.") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise GradebookError(_read_failure(path, 1, exc, encoding)) from exc


def _read_failure(path: Path, line: int, exc: Exception, encoding: str) -> str:
    if isinstance(exc, UnicodeDecodeError):
        # The text layer decodes blocks of several lines at once, so the
        # message names no line, because the bad byte may be further down.
        name = "UTF-8" if encoding.replace("-", "_").startswith("utf_8") else encoding
        return (
            f"Cannot read {str(path)!r}: the file is not valid {name} ({exc}). "
            "Save it as UTF-8, or pass the encoding it uses (for example "
            "encoding='latin-1', or --encoding latin-1 with gradelab produce)."
        )
    return f"Cannot read {str(path)!r} at line {line}: {exc}."


def _read_rows(
    path: Path,
    sep: str,
    encoding: str,
    header: list[str],
    columns: dict[str, object],
    subject: str | None,
) -> Iterator[Score | GradebookRowError]:
    with _open_gradebook(path, encoding) as handle:
        reader = csv.reader(handle, delimiter=sep)
        _read_header(path, reader, encoding)
        # A quoted cell may span several lines, so each row is reported at
        # its first line, the one after the last line of the previous row.
        first_line = reader.line_num + 1
        try:
            for row in reader:
                line, first_line = first_line, reader.line_num + 1
                if not any(cell.strip() for cell in row):
                    continue  # blank lines are not rows
                yield from _row_scores(line, row, header, columns, subject)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise GradebookError(
                _read_failure(path, first_line, exc, encoding)
            ) from exc


def _map_columns(
    path: Path,
    header: list[str],
    sep: str,
    subject: str | None,
    subject_col: str | None,
    class_col: str | None,
    student_col: str | None,
    score_cols: Sequence[str] | None,
) -> dict[str, object]:
    """Find each needed column's index, or raise one error naming all missing."""
    names = [name.strip() for name in header]
    wanted: dict[str, str | None] = {
        "class": class_col or "class",
        "subject": None if subject is not None else (subject_col or "subject"),
        "student_id": student_col,
    }
    if score_cols is None:
        wanted["score"] = "score"
    missing = [col for key, col in wanted.items() if col and col not in names]
    if score_cols is not None:
        if not score_cols:
            raise GradebookError("The list of score columns is empty.")
        missing += [col for col in score_cols if col not in names]
    if missing:
        if len(names) == 1 and sep not in ";\t":
            hint = " The header has a single column: is the separator ';' (--sep ';')?"
        else:
            hint = (
                " Name the columns it uses with subject_col, class_col and "
                "score_cols, or give one subject for every row with subject "
                "(gradelab produce: --subject-col, --class-col, --score-cols, "
                "--subject)."
            )
        raise GradebookError(
            f"The gradebook {str(path)!r} has no column "
            f"{', '.join(repr(m) for m in missing)}. Its columns are: "
            f"{', '.join(names)}.{hint}"
        )
    columns: dict[str, object] = {
        key: names.index(col) for key, col in wanted.items() if col
    }
    for optional in ("student_id", "period", "ts"):
        if optional in columns or optional not in names:
            continue
        if optional == "period" and score_cols is not None:
            continue  # in a wide gradebook the score column names the period
        columns[optional] = names.index(optional)
    if score_cols is None:
        columns["scores"] = [(None, names.index("score"))]
    else:
        columns["scores"] = [(col, names.index(col)) for col in score_cols]
    return columns


def _row_scores(
    line: int,
    row: list[str],
    header: list[str],
    columns: dict[str, object],
    subject: str | None,
) -> Iterator[Score | GradebookRowError]:
    if len(row) != len(header):
        yield GradebookRowError(
            line,
            f"expected {len(header)} fields, found {len(row)}",
            "wrong-field-count",
        )
        return

    def cell(key: str) -> str | None:
        index = columns.get(key)
        if index is None:
            return None
        return row[index].strip() or None  # type: ignore[index]

    for column, index in columns["scores"]:  # type: ignore[union-attr]
        label = f"column {column or 'score'}"
        try:
            value = parse_score_text(row[index])
        except InvalidRecordError as exc:
            yield GradebookRowError(line, f"{label}: {exc}", exc.reason)
            continue
        try:
            score = Score(
                class_=cell("class"),  # type: ignore[arg-type]
                subject=subject if subject is not None else cell("subject"),  # type: ignore[arg-type]
                score=value,
                student_id=cell("student_id"),
                period=column if column else cell("period"),
                ts=cell("ts"),
            )
        except InvalidRecordError as exc:
            message = str(exc)
            message = message[0].lower() + message[1:]
            # Only a score error names the score column; a missing class,
            # for example, is an error of the whole row.
            if exc.reason.startswith("score-"):
                message = f"{label}: {message}"
            yield GradebookRowError(line, message, exc.reason)
        else:
            yield score
