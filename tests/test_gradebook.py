"""Tests for gradelab.gradebook: long and wide CSV gradebooks, bad rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gradelab.errors import GradebookError, InvalidRecordError
from gradelab.gradebook import GradebookRowError, parse_score_text, read_gradebook
from gradelab.record import Score

DATA = Path(__file__).parent / "data"
LONG = DATA / "long.csv"
LONG_ERRORS = DATA / "long_errors.csv"
WIDE = DATA / "wide_semicolon.csv"
WIDE_OPTIONS = {
    "sep": ";",
    "subject": "Math",
    "class_col": "school",
    "student_col": "name",
    "score_cols": ["G1", "G2", "G3"],
}


def split(items: list) -> tuple[list[Score], list[GradebookRowError]]:
    scores = [item for item in items if isinstance(item, Score)]
    errors = [item for item in items if isinstance(item, GradebookRowError)]
    assert len(scores) + len(errors) == len(items)
    return scores, errors


def write(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "gradebook.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_long_format_without_options() -> None:
    scores, errors = split(list(read_gradebook(LONG)))

    assert errors == []
    assert scores == [
        Score(
            "A",
            "Math",
            14,
            student_id="A-01",
            period="T1",
            ts=datetime(2026, 1, 15, 9, 30, tzinfo=UTC).timestamp(),
        ),
        Score(
            "A",
            "Physics",
            9.5,
            student_id="A-01",
            period="T1",
            ts=datetime(2026, 1, 15, 9, 31, tzinfo=UTC).timestamp(),
        ),
        Score("B", "Math", 17, student_id="B-02", period="T2"),
        Score("B", "French", 12.5, student_id="B-02", period="T2"),
        Score("C", "History", 0),
    ]


def test_long_format_bad_rows_reported_and_skipped() -> None:
    scores, errors = split(list(read_gradebook(LONG_ERRORS)))

    assert [(error.line, error.reason) for error in errors] == [
        (4, "wrong-type"),
        (5, "score-out-of-range"),
        (6, "wrong-field-count"),
        (7, "wrong-field-count"),
        (8, "missing-field"),
        (11, "missing-field"),
        (12, "score-out-of-range"),
    ]
    assert [(score.student_id, score.score) for score in scores] == [
        ("A-01", 14),
        ("A-07", 13.5),
        ("B-03", 20),
    ]


def test_long_format_error_messages_name_line_and_value() -> None:
    _, errors = split(list(read_gradebook(LONG_ERRORS)))
    messages = {error.line: str(error) for error in errors}

    assert messages[4].startswith("Line 4: column score:")
    assert "'abc'" in messages[4]
    assert "25" in messages[5]
    assert "expected 5 fields, found 4" in messages[6]
    assert "expected 5 fields, found 6" in messages[7]
    assert "class" in messages[8]
    assert "column score" not in messages[8]  # a row error, not a score error
    assert "empty" in messages[11]


def test_row_errors_are_invalid_record_errors() -> None:
    _, errors = split(list(read_gradebook(LONG_ERRORS)))

    for error in errors:
        assert isinstance(error, InvalidRecordError)


def test_quoted_cell_with_separator() -> None:
    scores, _ = split(list(read_gradebook(LONG_ERRORS)))

    assert scores[1].subject == "Math, advanced"


def test_wide_format_with_mapping_options() -> None:
    scores, errors = split(list(read_gradebook(WIDE, **WIDE_OPTIONS)))

    assert [(s.student_id, s.period, s.score) for s in scores] == [
        ("Ana", "G1", 5),
        ("Ana", "G2", 6),
        ("Ana", "G3", 6),
        ("Bruno", "G1", 12),
        ("Bruno", "G2", 13.5),
        ("Bruno", "G3", 14),
        ("Chloé", "G1", 19),
        ("Chloé", "G2", 18),
        ("Chloé", "G3", 20),
        ("Eve", "G1", 8),
        ("Eve", "G2", 9),
        ("Eve", "G3", 10),
    ]
    assert {score.subject for score in scores} == {"Math"}
    assert [score.class_ for score in scores[::3]] == ["GP", "GP", "MS", "GP"]
    assert [(error.line, error.reason) for error in errors] == [
        (6, "missing-field"),
        (6, "score-out-of-range"),
        (6, "wrong-type"),
    ]


def test_wide_format_errors_name_column() -> None:
    _, errors = split(list(read_gradebook(WIDE, **WIDE_OPTIONS)))

    assert [str(error).split(":")[1].strip() for error in errors] == [
        "column G1",
        "column G2",
        "column G3",
    ]


def test_wide_format_subject_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pupil,form,course,Q1,Q2\nP1,A,Math,12,13\nP2,B,Physics,7,8\n",
    )

    items = list(
        read_gradebook(
            path,
            subject_col="course",
            class_col="form",
            student_col="pupil",
            score_cols=["Q1", "Q2"],
        )
    )

    assert items == [
        Score("A", "Math", 12, student_id="P1", period="Q1"),
        Score("A", "Math", 13, student_id="P1", period="Q2"),
        Score("B", "Physics", 7, student_id="P2", period="Q1"),
        Score("B", "Physics", 8, student_id="P2", period="Q2"),
    ]


def test_wide_format_subset_of_score_columns() -> None:
    options = dict(WIDE_OPTIONS, score_cols=["G3"])

    scores, errors = split(list(read_gradebook(WIDE, **options)))

    assert [score.score for score in scores] == [6, 14, 20, 10]
    assert [(error.line, error.reason) for error in errors] == [(6, "wrong-type")]


def test_semicolon_file_without_sep_hints_separator() -> None:
    with pytest.raises(GradebookError) as caught:
        read_gradebook(WIDE, subject="Math", class_col="school", score_cols=["G1"])

    message = str(caught.value)
    assert "--sep ';'" in message
    assert "'school'" in message
    assert "'G1'" in message


def test_missing_columns_all_listed() -> None:
    with pytest.raises(GradebookError) as caught:
        read_gradebook(WIDE, sep=";", class_col="klass", score_cols=["G1", "G9"])

    message = str(caught.value)
    assert "'klass'" in message
    assert "'subject'" in message
    assert "'G9'" in message
    assert "'G1'" not in message.split("Its columns")[0]
    assert "name, school, age, G1, G2, G3" in message  # the columns it has
    assert "--sep" not in message


def test_long_format_missing_score_column(tmp_path: Path) -> None:
    path = write(tmp_path, "class,subject,grade\nA,Math,12\n")

    with pytest.raises(GradebookError) as caught:
        read_gradebook(path)

    assert "'score'" in str(caught.value)
    assert "class, subject, grade" in str(caught.value)


def test_errors_raised_before_iteration(tmp_path: Path) -> None:
    # Calling read_gradebook, without iterating, already checks the file.
    with pytest.raises(GradebookError):
        read_gradebook(tmp_path / "absent.csv")
    with pytest.raises(GradebookError):
        read_gradebook(WIDE, sep=";")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"

    with pytest.raises(GradebookError) as caught:
        read_gradebook(path)

    assert str(path) in str(caught.value)
    assert "No such file" in str(caught.value)


def test_directory_not_a_gradebook(tmp_path: Path) -> None:
    with pytest.raises(GradebookError):
        read_gradebook(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(GradebookError) as caught:
        read_gradebook(write(tmp_path, ""))

    assert "empty" in str(caught.value)


def test_header_only_file(tmp_path: Path) -> None:
    assert list(read_gradebook(write(tmp_path, "class,subject,score\n"))) == []


def test_byte_order_mark_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffclass,subject,score\nA,Math,12\n")

    assert list(read_gradebook(path)) == [Score("A", "Math", 12)]


def test_windows_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, "class,subject,score\r\nA,Math,12\r\n\r\nB,Math,13\r\n")

    assert [score.score for score in read_gradebook(path)] == [12, 13]


def test_decimal_comma_semicolon_file(tmp_path: Path) -> None:
    path = write(tmp_path, "class;subject;score\nA;Math;12,5\nA;Math;0,25\n")

    assert [score.score for score in read_gradebook(path, sep=";")] == [12.5, 0.25]


def test_tab_separated_file(tmp_path: Path) -> None:
    path = write(tmp_path, "class\tsubject\tscore\nA\tMath\t12\n")

    assert list(read_gradebook(path, sep="\t")) == [Score("A", "Math", 12)]


def test_multiline_cell_reported_at_first_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'class,subject,score\nA,"Math\nadvanced",abc\nB,Math,12\nC,Math,99\n',
    )

    scores, errors = split(list(read_gradebook(path)))

    assert [(error.line, error.reason) for error in errors] == [
        (2, "wrong-type"),
        (5, "score-out-of-range"),
    ]
    assert [score.class_ for score in scores] == ["B"]


def test_non_utf8_file_names_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, "class,subject,score\nA,Français,12\n", "latin-1")

    with pytest.raises(GradebookError) as caught:
        list(read_gradebook(path))

    assert str(path) in str(caught.value)
    assert "not valid UTF-8" in str(caught.value)
    assert "encoding='latin-1'" in str(caught.value)


def test_encoding_option(tmp_path: Path) -> None:
    path = write(tmp_path, "class,subject,score\nA,Français,12\n", "latin-1")

    assert list(read_gradebook(path, encoding="latin-1")) == [
        Score("A", "Français", 12)
    ]


def test_subject_and_subject_col_rejected() -> None:
    with pytest.raises(GradebookError) as caught:
        read_gradebook(WIDE, sep=";", subject="Math", subject_col="course")

    assert "not both" in str(caught.value)


@pytest.mark.parametrize("subject", ["", "  "])
def test_empty_subject_rejected(subject: str) -> None:
    with pytest.raises(GradebookError):
        read_gradebook(WIDE, sep=";", subject=subject, score_cols=["G1"])


@pytest.mark.parametrize("sep", ["", ";;"])
def test_invalid_separator_rejected(sep: str) -> None:
    with pytest.raises(GradebookError) as caught:
        read_gradebook(WIDE, sep=sep)

    assert repr(sep) in str(caught.value)


def test_empty_score_columns_rejected() -> None:
    with pytest.raises(GradebookError):
        read_gradebook(WIDE, sep=";", subject="Math", class_col="school", score_cols=[])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14", 14),
        (" 7 ", 7),
        ("14.5", 14.5),
        ("14,5", 14.5),
        ("0,25", 0.25),
        (".5", 0.5),
        ("1e1", 10),
        ("20.0", 20),
    ],
)
def test_parse_score_text_valid(text: str, expected: float) -> None:
    value = parse_score_text(text)

    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "missing-field"),
        ("   ", "missing-field"),
        ("abc", "wrong-type"),
        ("1,234.5", "wrong-type"),
        ("1,2,3", "wrong-type"),
        ("nan", "wrong-type"),
        ("inf", "wrong-type"),
        ("1_4", "wrong-type"),
        ("١٤", "wrong-type"),
        ("14/20", "wrong-type"),
    ],
)
def test_parse_score_text_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        parse_score_text(text)

    assert caught.value.reason == reason


def test_headerless_gradebook_suggests_column_options(tmp_path: Path) -> None:
    path = write(tmp_path, "A,Math,12\nB,Math,13\n")

    with pytest.raises(GradebookError) as caught:
        read_gradebook(path)

    message = str(caught.value)
    assert "Its columns are: A, Math, 12" in message
    for option in ("class_col", "subject_col", "score_cols"):
        assert option in message
    for option in ("--class-col", "--subject-col", "--score-cols"):
        assert option in message


def test_unknown_encoding_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "class,subject,score\nA,Math,12\n")

    with pytest.raises(GradebookError, match="'bogus'"):
        read_gradebook(path, encoding="bogus")


def test_encoding_error_names_cli_option(tmp_path: Path) -> None:
    path = write(tmp_path, "class,subject,score\nA,Français,12\n", "latin-1")

    with pytest.raises(GradebookError, match="--encoding latin-1"):
        list(read_gradebook(path))
