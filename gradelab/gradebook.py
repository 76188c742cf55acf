"""Reading gradebooks (CSV files) as score records.

Two layouts are supported:

- long: one row per score, with columns ``class``, ``subject``, ``score`` and
  optionally ``student_id``, ``period`` and ``ts``;
- wide: one row per student with several score columns (``score_cols``);
  each score column becomes one record whose ``period`` is the column name.

Rows are read one at a time, so a gradebook of any size streams in constant
memory. A row that fails validation is yielded as an
:class:`~gradelab.errors.InvalidRecordError` that names its line and column,
and the rows after it are still read.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from gradelab.errors import GradebookError, InvalidRecordError
from gradelab.record import Score

__all__ = ["GradebookRowError", "parse_score_text", "read_gradebook"]


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
    try:
        number = float(cleaned)
    except ValueError:
        raise InvalidRecordError(
            f"the score {text!r} is not a number", "wrong-type"
        ) from None
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
    """Yield one score, or one row error, per score in a gradebook file.

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
        If the file cannot be read or lacks a column it needs; nothing is
        yielded in that case.
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
        handle = path.open(newline="", encoding=encoding)
    except OSError as exc:
        raise GradebookError(
            f"Cannot open the gradebook {str(path)!r}: {exc.strerror}."
        ) from exc
    with handle:
        reader = csv.reader(handle, delimiter=sep)
        try:
            header = next(reader)
        except StopIteration:
            raise GradebookError(f"The gradebook {str(path)!r} is empty.") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise GradebookError(f"Cannot read {str(path)!r}: {exc}.") from exc
        columns = _map_columns(
            path, header, sep, subject, subject_col, class_col, student_col, score_cols
        )
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank lines are not rows
                yield from _row_scores(reader.line_num, row, header, columns, subject)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise GradebookError(
                f"Cannot read {str(path)!r} after line {reader.line_num}: {exc}."
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
        hint = ""
        if len(names) == 1 and sep not in ";\t":
            hint = " The header has a single column: is the separator ';' (--sep ';')?"
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
        label = f"column {column}" if column else "column score"
        try:
            score = Score(
                class_=cell("class"),  # type: ignore[arg-type]
                subject=subject if subject is not None else cell("subject"),  # type: ignore[arg-type]
                score=parse_score_text(row[index]),
                student_id=cell("student_id"),
                period=column if column else cell("period"),
                ts=cell("ts"),
            )
        except InvalidRecordError as exc:
            message = str(exc)
            message = message[0].lower() + message[1:]
            yield GradebookRowError(line, f"{label}: {message}", exc.reason)
        else:
            yield score
