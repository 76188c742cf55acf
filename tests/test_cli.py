"""Tests for the ``gradelab`` command, run as a subprocess on the real broker."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gradelab.averages import average_scores
from gradelab.config import Settings
from gradelab.consumer import read_scores, topic_exists
from gradelab.gradebook import read_gradebook
from gradelab.producer import ensure_topic
from gradelab.record import Score
from gradelab.simulate import simulate_scores

REPOSITORY = Path(__file__).resolve().parent.parent
GRADELAB = REPOSITORY / ".venv" / "bin" / "gradelab"
DATA = Path(__file__).parent / "data"
WIDE_OPTIONS = [
    "--sep",
    ";",
    "--subject",
    "Math",
    "--class-col",
    "school",
    "--student-col",
    "name",
    "--score-cols",
    "G1,G2,G3",
]


def gradelab(
    *args: str, environment: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run ``.venv/bin/gradelab`` with ``args`` and capture its output."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("GRADELAB_") or name == "GRADELAB_HOME"
    }
    env.update(environment or {})
    return subprocess.run(
        [str(GRADELAB), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def produce(kafka: str, topic: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``gradelab produce`` into ``topic``."""
    return gradelab("produce", *options, "--bootstrap-server", kafka, "--topic", topic)


def averages(kafka: str, topic: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``gradelab averages`` over ``topic`` from its first record."""
    return gradelab(
        "averages",
        "--bootstrap-server",
        kafka,
        "--topic",
        topic,
        "--from-beginning",
        "--idle-timeout",
        "1",
        *options,
    )


def run_concurrently(
    commands: dict[str, list[str]],
    environments: dict[str, dict[str, str]] | None = None,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run several ``gradelab`` commands in parallel; return results by name."""
    environments = environments or {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            name: pool.submit(gradelab, *args, environment=environments.get(name))
            for name, args in commands.items()
        }
        return {name: future.result() for name, future in futures.items()}


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def assert_one_error(result: subprocess.CompletedProcess[str]) -> str:
    """Check the exit status 1 and a single ``error:`` line; return that line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def expected_csv(scores: list[Score], by: str) -> list[dict[str, str]]:
    """Format the averages of ``scores`` as the CSV output should show them."""
    frame = average_scores(scores, by=by)
    rows = []
    for record in frame.to_dict("records"):
        row = {}
        for column, value in record.items():
            if column == "mean":
                row[column] = f"{value:.4f}"
            elif column in ("min", "max"):
                row[column] = f"{value:g}"
            else:
                row[column] = str(value)
        rows.append(row)
    return rows


@pytest.fixture
def topic(settings: Settings) -> str:
    return settings.topic


HELP_COMMANDS = {
    "gradelab": [],
    "produce": ["produce"],
    "consume": ["consume"],
    "averages": ["averages"],
    "broker": ["broker"],
    "broker-start": ["broker", "start"],
    "broker-stop": ["broker", "stop"],
    "broker-status": ["broker", "status"],
}


@pytest.fixture(scope="module")
def help_results() -> dict[str, subprocess.CompletedProcess[str]]:
    """Run every ``--help`` at once; each is a separate process."""
    return run_concurrently(
        {name: [*command, "--help"] for name, command in HELP_COMMANDS.items()}
    )


@pytest.mark.parametrize("name", HELP_COMMANDS)
def test_help_works(
    help_results: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    result = help_results[name]

    assert_ok(result)
    assert result.stdout.startswith("usage: gradelab")
    assert result.stderr == ""


def test_help_documents_options(
    help_results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    produce_help = help_results["produce"].stdout
    averages_help = help_results["averages"].stdout

    for option in ("--simulate", "--csv", "--seed", "--rate", "--score-cols"):
        assert option in produce_help
    for option in ("--by", "--idle-timeout", "--format", "--from-beginning"):
        assert option in averages_help


def test_no_command_is_usage_error() -> None:
    result = gradelab()

    assert result.returncode == 2
    assert "usage: gradelab" in result.stderr


@pytest.mark.kafka
def test_produce_simulate_then_averages_csv(kafka: str, topic: str) -> None:
    produced = produce(kafka, topic, "--simulate", "240", "--seed", "5")
    result = averages(kafka, topic, "--format", "csv")

    assert_ok(produced)
    assert "Sent 240 record(s)" in produced.stdout
    assert_ok(result)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "subject,count,mean,min,max"
    assert csv_rows(result.stdout) == expected_csv(
        list(simulate_scores(240, seed=5)), "subject"
    )


@pytest.mark.kafka
def test_averages_by_class_subject(kafka: str, topic: str) -> None:
    simulation = ["--seed", "2", "--classes", "2", "--subjects", "3"]
    assert_ok(
        produce(kafka, topic, "--simulate", "120", *simulation, "--students", "4")
    )

    result = averages(kafka, topic, "--by", "class,subject", "--format", "csv")

    assert_ok(result)
    rows = csv_rows(result.stdout)
    scores = list(simulate_scores(120, seed=2, classes=2, subjects=3, students=4))
    assert result.stdout.splitlines()[0] == "class,subject,count,mean,min,max"
    assert len(rows) == 6
    assert rows == expected_csv(scores, "class,subject")


@pytest.mark.kafka
def test_averages_json_and_table(kafka: str, topic: str) -> None:
    assert_ok(produce(kafka, topic, "--simulate", "60", "--subjects", "2"))

    as_json = averages(kafka, topic, "--by", "subject", "--format", "json")
    as_table = averages(kafka, topic, "--by", "subject", "--format", "table")

    assert_ok(as_json)
    rows = json.loads(as_json.stdout)
    expected = average_scores(list(simulate_scores(60, subjects=2)), by="subject")
    assert [row["subject"] for row in rows] == list(expected["subject"])
    assert [row["count"] for row in rows] == list(expected["count"])
    assert [row["mean"] for row in rows] == pytest.approx(list(expected["mean"]))
    assert_ok(as_table)
    table = as_table.stdout.strip().splitlines()
    assert table[0].split() == ["subject", "count", "mean", "min", "max"]
    assert len(table) == 3
    for line, subject in zip(table[1:], expected["subject"], strict=True):
        assert line.split()[0] == subject


@pytest.mark.kafka
def test_averages_empty_topic_table(kafka: str, settings: Settings) -> None:
    ensure_topic(settings)

    result = averages(kafka, settings.topic)

    assert_ok(result)
    assert "(no scores yet)" in result.stdout


@pytest.mark.kafka
def test_produce_csv_long(kafka: str, topic: str) -> None:
    produced = produce(kafka, topic, "--csv", str(DATA / "long.csv"))
    result = averages(kafka, topic, "--by", "subject", "--format", "csv")

    assert_ok(produced)
    assert "Sent 5 record(s)" in produced.stdout
    assert "skipped 0" in produced.stdout
    assert_ok(result)
    scores = list(read_gradebook(DATA / "long.csv"))
    assert csv_rows(result.stdout) == expected_csv(scores, "subject")


@pytest.mark.kafka
def test_produce_csv_bad_rows_reported(kafka: str, topic: str) -> None:
    result = produce(kafka, topic, "--csv", str(DATA / "long_errors.csv"))
    by_subject = averages(kafka, topic, "--by", "subject", "--format", "csv")

    assert_ok(result)
    assert "Sent 3 record(s)" in result.stdout
    assert "skipped 7" in result.stdout
    reported = [line for line in result.stderr.splitlines() if "Line " in line]
    # "Math, advanced" contains the separator, so the CSV output quotes it.
    assert '"Math, advanced"' in by_subject.stdout
    scores = list(read_gradebook(DATA / "long_errors.csv"))
    valid = [score for score in scores if isinstance(score, Score)]
    assert csv_rows(by_subject.stdout) == expected_csv(valid, "subject")
    assert [line.split("Line ")[1].split(":")[0] for line in reported] == [
        "4",
        "5",
        "6",
        "7",
        "8",
        "11",
        "12",
    ]


@pytest.mark.kafka
def test_produce_csv_wide(kafka: str, topic: str) -> None:
    wide = str(DATA / "wide_semicolon.csv")
    produced = produce(kafka, topic, "--csv", wide, *WIDE_OPTIONS)
    result = averages(kafka, topic, "--by", "period", "--format", "csv")

    assert_ok(produced)
    assert "Sent 12 record(s)" in produced.stdout
    assert "skipped 3" in produced.stdout
    assert_ok(result)
    scores = [
        item
        for item in read_gradebook(
            DATA / "wide_semicolon.csv",
            sep=";",
            subject="Math",
            class_col="school",
            student_col="name",
            score_cols=["G1", "G2", "G3"],
        )
        if isinstance(item, Score)
    ]
    assert csv_rows(result.stdout) == expected_csv(scores, "period")


@pytest.mark.kafka
def test_consume_prints_one_line_per_record(kafka: str, topic: str) -> None:
    assert_ok(produce(kafka, topic, "--simulate", "30"))
    reading = ["--from-beginning", "--idle-timeout", "1", "--topic", topic]
    reading += ["--bootstrap-server", kafka]

    everything = gradelab("consume", *reading)
    bounded = gradelab("consume", *reading, "--max-records", "10")

    assert_ok(everything)
    lines = everything.stdout.strip().splitlines()
    assert len(lines) == 30
    for line in lines:
        assert "class=" in line
        assert "subject=" in line
        assert "score=" in line
    assert "Read 30 record(s), 0 invalid." in everything.stderr
    assert_ok(bounded)
    assert len(bounded.stdout.strip().splitlines()) == 10


DEAD = "127.0.0.1:1"  # nothing listens on port 1
WIDE = str(DATA / "wide_semicolon.csv")
MISSING_CSV = str(DATA / "absent.csv")
SHORT_TIMEOUT = {"GRADELAB_CONNECT_TIMEOUT": "1"}

# Name -> (arguments, environment, text the error line must contain). Every
# case is rejected before a broker is needed, except the "unreachable" ones.
ERROR_CASES: dict[str, tuple[list[str], dict[str, str], str]] = {
    "by-unknown": (
        ["averages", "--by", "bogus", "--bootstrap-server", DEAD],
        {},
        "'bogus'",
    ),
    "by-repeated": (
        ["averages", "--by", "class,class", "--bootstrap-server", DEAD],
        {},
        "'class,class'",
    ),
    "by-empty": (["averages", "--by", ",", "--bootstrap-server", DEAD], {}, "','"),
    "csv-missing": (
        ["produce", "--csv", MISSING_CSV, "--bootstrap-server", DEAD],
        {},
        MISSING_CSV,
    ),
    "csv-missing-column": (
        ["produce", "--csv", WIDE, "--subject", "Math", "--score-cols", "G1"]
        + ["--bootstrap-server", DEAD],
        {},
        "--sep ';'",
    ),
    "unreachable-produce": (
        ["produce", "--simulate", "3", "--bootstrap-server", DEAD],
        SHORT_TIMEOUT,
        "gradelab broker start",
    ),
    "unreachable-consume": (
        ["consume", "--idle-timeout", "1", "--bootstrap-server", DEAD],
        SHORT_TIMEOUT,
        "gradelab broker start",
    ),
    "unreachable-averages": (
        ["averages", "--idle-timeout", "1", "--bootstrap-server", DEAD],
        SHORT_TIMEOUT,
        "gradelab broker start",
    ),
    "dlq-topic-is-source": (
        ["averages", "--topic", "loop1", "--dlq-topic", "loop1"]
        + ["--bootstrap-server", DEAD],
        {},
        "'loop1' is the topic being read",
    ),
    "dlq-listing-topic-is-source": (
        ["dlq", "--topic", "loop1", "--dlq-topic", "loop1", "--bootstrap-server", DEAD],
        {},
        "'loop1' is the topic being read",
    ),
    "group-empty": (
        ["averages", "--group", "", "--bootstrap-server", DEAD],
        {},
        "--group ''",
    ),
    "consume-group-blank": (
        ["consume", "--group", " ", "--bootstrap-server", DEAD],
        {},
        "--group ' '",
    ),
    "no-dlq-with-dlq-topic": (
        ["averages", "--no-dlq", "--dlq-topic", "bad", "--bootstrap-server", DEAD],
        {},
        "--no-dlq and --dlq-topic bad",
    ),
    "follow-with-idle-timeout": (
        ["averages", "--follow", "--idle-timeout", "3", "--bootstrap-server", DEAD],
        {},
        "--follow and --idle-timeout 3",
    ),
    "address-no-port": (
        ["averages", "--bootstrap-server", "localhost"],
        {},
        "'localhost'",
    ),
    "address-bad-port": (
        ["averages", "--bootstrap-server", "localhost:port"],
        {},
        "'localhost:port'",
    ),
    "address-empty": (["consume", "--bootstrap-server", ""], {}, "empty"),
    "address-environment": (
        ["consume"],
        {"GRADELAB_BOOTSTRAP_SERVERS": "no-port-here"},
        "'no-port-here'",
    ),
    "simulate-negative": (
        ["produce", "--simulate", "-2", "--bootstrap-server", DEAD],
        SHORT_TIMEOUT,
        "-2",
    ),
    "simulate-subjects": (
        ["produce", "--simulate", "5", "--subjects", "9", "--bootstrap-server", DEAD],
        SHORT_TIMEOUT,
        "9",
    ),
    "rate-zero": (
        ["produce", "--simulate", "5", "--rate", "0", "--bootstrap-server", DEAD],
        SHORT_TIMEOUT,
        "--rate",
    ),
    "topic-invalid": (
        [
            "produce",
            "--simulate",
            "5",
            "--topic",
            "no spaces",
            "--bootstrap-server",
            DEAD,
        ],
        SHORT_TIMEOUT,
        "'no spaces'",
    ),
}


@pytest.fixture(scope="module")
def error_results() -> dict[str, subprocess.CompletedProcess[str]]:
    """Run every error case at once; each is a separate process."""
    return run_concurrently(
        {name: args for name, (args, _env, _text) in ERROR_CASES.items()},
        {name: env for name, (_args, env, _text) in ERROR_CASES.items()},
    )


@pytest.mark.parametrize("name", ERROR_CASES)
def test_error_one_line_no_traceback(
    error_results: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    _args, _env, text = ERROR_CASES[name]

    line = assert_one_error(error_results[name])

    assert text in line
    if not name.startswith("unreachable"):
        assert "No Kafka broker answered" not in line  # rejected before connecting


@pytest.mark.parametrize(
    "command",
    [
        ["averages", "--idle-timeout", "-1"],
        ["consume", "--idle-timeout", "-1"],
        ["consume", "--max-records", "-1"],
    ],
)
def test_negative_reading_bounds_rejected(command: list[str]) -> None:
    result = gradelab(*command, "--bootstrap-server", DEAD, environment=SHORT_TIMEOUT)

    line = assert_one_error(result)
    assert "No Kafka broker answered" not in line


def test_simulate_minus_one_rejected() -> None:
    result = gradelab(
        "produce",
        "--simulate",
        "-1",
        "--bootstrap-server",
        DEAD,
        environment=SHORT_TIMEOUT,
    )

    line = assert_one_error(result)
    assert "No Kafka broker answered" not in line


def test_module_entry_point_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gradelab.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPOSITORY,
    )

    assert result.returncode == 0
    assert "usage:" in result.stdout


@pytest.mark.kafka
def test_produce_simulate_stops_on_interrupt(settings: Settings, kafka: str) -> None:
    command = [str(GRADELAB), "produce", "--simulate", "--rate", "200"]
    command += ["--bootstrap-server", kafka, "--topic", settings.topic]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # Interrupt only once the endless stream has reached the topic.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(read_scores(settings, max_records=1, timeout=1)):
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Interrupted" in stderr
    assert stdout == ""
    assert len(read_scores(settings, timeout=1)) > 0


def on_broker(kafka: str, topic: str) -> bool:
    """Whether ``topic`` exists, checked without creating it."""
    return topic_exists(Settings(bootstrap_servers=kafka), topic)


@pytest.mark.kafka
@pytest.mark.parametrize("command", ["averages", "consume"])
def test_reading_missing_topic_fails_and_creates_nothing(
    kafka: str, topic: str, command: str
) -> None:
    result = gradelab(
        command, "--bootstrap-server", kafka, "--topic", topic,
        "--from-beginning", "--idle-timeout", "1",
    )  # fmt: skip

    line = assert_one_error(result)
    assert f"Topic {topic!r} does not exist at {kafka}" in line
    assert not on_broker(kafka, topic)
    assert not on_broker(kafka, f"{topic}.dlq")


@pytest.mark.kafka
def test_averages_follow_waits_for_missing_topic(kafka: str, topic: str) -> None:
    command = [str(GRADELAB), "averages", "--follow", "--format", "csv"]
    command += ["--bootstrap-server", kafka, "--topic", topic, "--from-beginning"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        warning = process.stderr.readline()
        assert process.poll() is None, warning
        created = on_broker(kafka, topic)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)

    assert f"topic {topic!r} does not exist" in warning
    assert "waiting" in warning
    assert not created


@pytest.mark.kafka
def test_averages_no_dlq_topic_without_dead_letters(kafka: str, topic: str) -> None:
    assert_ok(produce(kafka, topic, "--simulate", "20"))

    assert_ok(averages(kafka, topic))

    assert not on_broker(kafka, f"{topic}.dlq")


@pytest.mark.kafka
def test_averages_closed_stdout_exits_quietly(kafka: str, topic: str) -> None:
    assert_ok(produce(kafka, topic, "--simulate", "200"))
    reader, writer = os.pipe()
    os.close(reader)  # like `| head` once it has read enough
    try:
        result = subprocess.run(
            [str(GRADELAB), "averages", "--by", "class,subject", "--format", "csv"]
            + ["--bootstrap-server", kafka, "--topic", topic, "--from-beginning"]
            + ["--idle-timeout", "1"],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=90,
            check=False,
        )
    finally:
        os.close(writer)

    assert result.returncode == 1
    assert result.stderr == ""


@pytest.mark.kafka
def test_produce_simulate_named_subjects_and_classes(kafka: str, topic: str) -> None:
    classes, subjects = ["6A", "6B"], ["Math", "History"]

    produced = produce(
        kafka, topic, "--simulate", "40", "--classes", ",".join(classes),
        "--subjects", ",".join(subjects),
    )  # fmt: skip
    result = averages(kafka, topic, "--by", "class,subject", "--format", "csv")

    assert_ok(produced)
    assert_ok(result)
    expected = list(simulate_scores(40, classes=classes, subjects=subjects))
    assert csv_rows(result.stdout) == expected_csv(expected, "class,subject")


@pytest.mark.kafka
def test_produce_csv_encoding_option(kafka: str, topic: str, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("class,subject,score\nA,Français,12\n".encode("latin-1"))

    refused = produce(kafka, topic, "--csv", str(path))
    produced = produce(kafka, topic, "--csv", str(path), "--encoding", "latin-1")
    result = averages(kafka, topic, "--format", "json")

    assert "--encoding latin-1" in assert_one_error(refused)
    assert_ok(produced)
    assert [row["subject"] for row in json.loads(result.stdout)] == ["Français"]


@pytest.mark.kafka
def test_averages_group_resume_reports_this_run(kafka: str, topic: str) -> None:
    group = f"{topic}-group"
    assert_ok(produce(kafka, topic, "--simulate", "20"))
    first = averages(kafka, topic, "--group", group)
    assert_ok(produce(kafka, topic, "--simulate", "10"))

    second = averages(kafka, topic, "--group", group)

    assert_ok(first)
    assert_ok(second)
    assert "20 record(s) read in this run; averages cover 20 record(s)" in (
        first.stderr
    )
    assert "--from-beginning" not in first.stderr
    assert "10 record(s) read in this run; averages cover 30 record(s)" in (
        second.stderr
    )
    assert f"--group {group}-2" in second.stderr
