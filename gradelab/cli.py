"""The ``gradelab`` command line: broker, produce, consume, averages and dlq.

The library logs and raises; this module is the only place that prints, and
it turns every :class:`~gradelab.errors.GradelabError` into a one-line
message and exit status 1 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from gradelab import broker
from gradelab.averages import STAT_COLUMNS, Averages, parse_group_fields
from gradelab.checkpoint import stream_checkpointed_averages
from gradelab.config import DEFAULT_BOOTSTRAP_SERVERS, DEFAULT_TOPIC, Settings
from gradelab.consumer import (
    ScoreConsumer,
    require_topic,
    stream_averages,
    topic_exists,
)
from gradelab.dlq import (
    DeadLetterPublisher,
    check_dlq_topic,
    export_dead_letters,
    read_dead_letters,
    replay_dead_letters,
)
from gradelab.errors import ConfigError, GradelabError
from gradelab.gradebook import read_gradebook
from gradelab.producer import produce_scores
from gradelab.record import format_timestamp
from gradelab.simulate import simulate_scores

__all__ = ["add_connection_arguments", "build_parser", "format_averages", "main"]

logger = logging.getLogger("gradelab")

# --simulate without a number: stream until interrupted. argparse converts a
# string const with type=int, so the marker is an object no typed N can be.
FOREVER = object()
# How often ``averages --follow`` checks whether a missing topic was created.
TOPIC_WAIT_SECONDS = 2.0


def add_connection_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, verb: str = "use"
) -> None:
    """Add ``--bootstrap-server`` and ``--topic``, shared by every command and app.

    Both default to None, so :meth:`Settings.load` falls back to the
    environment and then to the built-in defaults.
    """
    parser.add_argument(
        "--bootstrap-server",
        dest="bootstrap_servers",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers, comma-separated (default: "
        f"$GRADELAB_BOOTSTRAP_SERVERS or {DEFAULT_BOOTSTRAP_SERVERS})",
    )
    parser.add_argument(
        "--topic",
        help=f"topic to {verb} (default: $GRADELAB_TOPIC or {DEFAULT_TOPIC})",
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with all subcommands."""
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection")
    add_connection_arguments(group)
    group.add_argument(
        "-v", "--verbose", action="store_true", help="log progress at INFO level"
    )

    parser = argparse.ArgumentParser(
        prog="gradelab",
        description="Stream student scores through Apache Kafka and average them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_broker_parser(commands)
    _add_produce_parser(commands, connection)
    _add_consume_parser(commands, connection)
    _add_averages_parser(commands, connection)
    _add_dlq_parser(commands, connection)
    return parser


def _add_broker_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "broker", help="start, stop or inspect the local Kafka broker"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start the local broker (no Docker)")
    start.add_argument(
        "--nodes",
        type=int,
        choices=(1, 3),
        default=1,
        help="1 broker, or a 3-node cluster with replication factor 3 (default 1)",
    )
    start.add_argument(
        "--auth",
        action="store_true",
        help="require SASL/SCRAM authentication and create a user",
    )
    start.add_argument(
        "--port", type=int, default=9092, help="client port of the first node"
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        help="seconds to wait for the broker to respond (default 90)",
    )
    actions.add_parser("stop", help="stop the local broker and wait for it to exit")
    actions.add_parser("status", help="show whether the local broker is running")
    parser.set_defaults(handler=run_broker)


def _add_produce_parser(
    commands: argparse._SubParsersAction, connection: argparse.ArgumentParser
) -> None:
    parser = commands.add_parser(
        "produce",
        parents=[connection],
        help="send simulated scores or a gradebook to Kafka",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--simulate",
        nargs="?",
        const=FOREVER,
        type=int,
        metavar="N",
        help="send N simulated scores; without N, stream until Ctrl-C",
    )
    source.add_argument("--csv", metavar="FILE", help="replay a gradebook CSV file")
    simulation = parser.add_argument_group("simulation")
    simulation.add_argument("--seed", type=int, default=0, help="random seed")
    simulation.add_argument(
        "--classes",
        type=_count_or_names,
        default=3,
        metavar="N|NAME,...",
        help="how many classes (named A, B, ...), or their names (default 3)",
    )
    simulation.add_argument(
        "--subjects",
        type=_count_or_names,
        default=4,
        metavar="N|NAME,...",
        help="how many subjects (1 to 6), or their names, for example "
        "Math,History (default 4)",
    )
    simulation.add_argument(
        "--students", type=int, default=25, help="students per class"
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="records per second (default: as fast as possible)",
    )
    gradebook = parser.add_argument_group("gradebook columns")
    gradebook.add_argument("--sep", default=",", help="field separator (default ,)")
    gradebook.add_argument(
        "--encoding",
        default="utf-8-sig",
        help="text encoding of the file, for example latin-1 (default utf-8-sig)",
    )
    gradebook.add_argument("--subject", help="one subject name for every row")
    gradebook.add_argument("--subject-col", help="column holding the subject")
    gradebook.add_argument("--class-col", help="column holding the class")
    gradebook.add_argument("--student-col", help="column holding the student id")
    gradebook.add_argument(
        "--score-cols",
        metavar="COL1,COL2,...",
        help="score columns of a wide gradebook; each becomes a record whose "
        "period is the column name",
    )
    parser.set_defaults(handler=run_produce)


def _add_consume_parser(
    commands: argparse._SubParsersAction, connection: argparse.ArgumentParser
) -> None:
    parser = commands.add_parser(
        "consume", parents=[connection], help="print each score record as it arrives"
    )
    _add_reading_options(parser)
    parser.add_argument("--max-records", type=int, help="stop after this many records")
    parser.set_defaults(handler=run_consume)


def _add_averages_parser(
    commands: argparse._SubParsersAction, connection: argparse.ArgumentParser
) -> None:
    parser = commands.add_parser(
        "averages",
        parents=[connection],
        help="print exact streaming averages (count, mean, min, max)",
    )
    _add_reading_options(parser)
    parser.add_argument(
        "--by",
        default="subject",
        help="fields to group by, from class, subject, period, student_id "
        "(default subject; for example class,subject)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep consuming and refresh the table in place until Ctrl-C "
        "(no --idle-timeout); waits for a topic that does not exist yet",
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format (default table)",
    )
    dead_letters = parser.add_argument_group("dead letters")
    dead_letters.add_argument(
        "--dlq-topic",
        metavar="TOPIC",
        help="topic that receives invalid records (default: <topic>.dlq)",
    )
    dead_letters.add_argument(
        "--no-dlq",
        action="store_true",
        help="only log invalid records instead of sending them to the DLQ topic",
    )
    parser.set_defaults(handler=run_averages)


def _add_dlq_parser(
    commands: argparse._SubParsersAction, connection: argparse.ArgumentParser
) -> None:
    parser = commands.add_parser(
        "dlq",
        parents=[connection],
        help="list, export or replay the records the averages rejected",
        description="List the dead-letter records of a topic with their reasons. "
        "To fix them: --export FILE, edit each value in FILE, then --replay FILE.",
    )
    parser.add_argument(
        "--dlq-topic",
        metavar="TOPIC",
        help="dead-letter topic to read (default: <topic>.dlq)",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--export",
        metavar="FILE",
        help="write the dead letters not yet replayed as JSON lines to FILE",
    )
    action.add_argument(
        "--replay",
        metavar="FILE",
        help="validate the edited values in FILE and send the valid ones back "
        "to their original topic",
    )
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="listing format (default table)",
    )
    parser.set_defaults(handler=run_dlq)


def _add_reading_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start from the earliest record when the group has no offset "
        "(for averages --group: when a partition has no saved snapshot)",
    )
    parser.add_argument(
        "--group",
        help="consumer group id (default: no group); with averages, the "
        "averages are saved with their offsets and survive restarts",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="stop after this many seconds without a new record",
    )


def _check_positive(option: str, value: float | None, allow_zero: bool = False) -> None:
    """Reject a negative (or zero) option value before anything connects."""
    if value is None or value > 0 or (allow_zero and value == 0):
        return
    expected = "0 or more" if allow_zero else "a positive number"
    raise ConfigError(f"Invalid {option} {value:g}: expected {expected}.")


def _check_reading_bounds(args: argparse.Namespace) -> None:
    _check_positive("--idle-timeout", args.idle_timeout)
    _check_positive("--max-records", getattr(args, "max_records", None))
    if args.group is not None and not args.group.strip():
        raise ConfigError(
            f"Invalid --group {args.group!r}: expected a consumer group name, for "
            "example --group averages; leave --group out to read without a group."
        )
    if getattr(args, "no_dlq", False) and args.dlq_topic is not None:
        raise ConfigError(
            f"--no-dlq and --dlq-topic {args.dlq_topic} contradict each other: "
            "pass --dlq-topic to send invalid records there, or --no-dlq to only "
            "log them."
        )
    if getattr(args, "follow", False) and args.idle_timeout is not None:
        raise ConfigError(
            f"--follow and --idle-timeout {args.idle_timeout:g} contradict each "
            "other: --follow runs until Ctrl-C; leave out one of them."
        )


def _wait_for_topic(settings: Settings) -> None:
    """Wait until ``settings.topic`` exists, telling the user once."""
    if topic_exists(settings):
        return
    print(
        f"warning: topic {settings.topic!r} does not exist at "
        f"{settings.bootstrap_servers} yet; waiting for it to be created "
        "(check the name, or produce to it). Press Ctrl-C to stop.",
        file=sys.stderr,
    )
    while not topic_exists(settings):
        time.sleep(TOPIC_WAIT_SECONDS)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(bootstrap_servers=args.bootstrap_servers, topic=args.topic)


def run_broker(args: argparse.Namespace) -> int:
    """Start, stop or report on the local broker."""
    if args.action == "start":
        info = broker.start(
            nodes=args.nodes, auth=args.auth, port=args.port, timeout=args.timeout
        )
        if info.already_running:
            print(f"A broker is already running at {info.bootstrap_servers}.")
        else:
            print(f"Kafka {broker.KAFKA_VERSION} started at {info.bootstrap_servers}.")
            print(f"Logs: {', '.join(str(path) for path in info.log_files)}")
        if info.credentials_file is not None:
            print(
                f"Client credentials are in {info.credentials_file}; use them with: "
                f"export GRADELAB_CREDENTIALS_FILE={info.credentials_file}"
            )
        print(f"bootstrap servers: {info.bootstrap_servers}")
        return 0
    if args.action == "stop":
        pids = broker.stop()
        if pids:
            print(f"Stopped the local broker (process {', '.join(map(str, pids))}).")
        else:
            print("No local broker was running.")
        return 0
    status = broker.status()
    if not status.running:
        print("The local broker is not running. Start it with: gradelab broker start")
        return 3
    state = "answering" if status.answering else "NOT answering"
    nodes = f"{status.nodes} node(s)"
    if len(status.pids) < status.nodes:
        nodes = f"{len(status.pids)} of {status.nodes} nodes running"
    print(
        f"The local broker is running ({nodes}, process "
        f"{', '.join(map(str, status.pids))}) and {state} at "
        f"{status.bootstrap_servers}."
    )
    print(f"Logs: {', '.join(str(path) for path in status.log_files)}")
    return 0 if status.answering else 1


def run_produce(args: argparse.Namespace) -> int:
    """Send simulated scores or a gradebook and report what was acknowledged."""
    settings = _settings(args)
    if args.csv is not None:
        total = None
        scores = read_gradebook(
            args.csv,
            sep=args.sep,
            encoding=args.encoding,
            subject=args.subject,
            subject_col=args.subject_col,
            class_col=args.class_col,
            student_col=args.student_col,
            score_cols=_split_columns(args.score_cols),
        )
        scores = _report_row_errors(scores)
    else:
        count = None if args.simulate is FOREVER else args.simulate
        _check_positive("--simulate", count, allow_zero=True)
        total = count
        scores = simulate_scores(
            count,
            seed=args.seed,
            classes=args.classes,
            subjects=args.subjects,
            students=args.students,
        )
    if args.rate is not None and args.rate <= 0:
        raise GradelabError(f"Invalid --rate {args.rate:g}: expected a positive rate.")
    with tqdm(total=total, unit=" records", disable=None, file=sys.stderr) as bar:
        try:
            report = produce_scores(
                settings, scores, progress=bar.update, rate=args.rate
            )
        except KeyboardInterrupt:
            print(
                "Interrupted; records sent before Ctrl-C were flushed.", file=sys.stderr
            )
            return 130
    print(
        f"Sent {report.sent} record(s) to {settings.topic} at "
        f"{settings.bootstrap_servers}; skipped {report.skipped} invalid row(s)."
    )
    return 0


def _count_or_names(text: str) -> int | list[str]:
    """Parse ``--classes``/``--subjects``: a count, or comma-separated names."""
    try:
        return int(text)
    except ValueError:
        return [name.strip() for name in text.split(",") if name.strip()]


def _split_columns(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [column.strip() for column in text.split(",") if column.strip()]


def _report_row_errors(items):
    for item in items:
        if isinstance(item, GradelabError):
            print(f"skipped: {item}", file=sys.stderr)
        yield item


def run_consume(args: argparse.Namespace) -> int:
    """Print one line per score record, like the original course consumer."""
    _check_reading_bounds(args)
    settings = _settings(args)
    require_topic(settings)
    with ScoreConsumer(
        settings, group_id=args.group, from_beginning=args.from_beginning
    ) as consumer:
        print(
            f"Reading {settings.topic} at {settings.bootstrap_servers}; "
            "press Ctrl-C to stop.",
            file=sys.stderr,
        )
        try:
            for batch in consumer.iter_batches(
                idle_timeout=args.idle_timeout, max_records=args.max_records
            ):
                for record, score in batch:
                    print(_format_record(record, score), flush=False)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
    print(
        f"Read {consumer.received} record(s), {consumer.invalid_count} invalid.",
        file=sys.stderr,
    )
    return 0


def _format_record(record: Any, score: Any) -> str:
    parts = [
        f"p{record.partition}@{record.offset}",
        f"class={score.class_}",
        f"subject={score.subject}",
        f"score={score.score:g}",
    ]
    if score.student_id is not None:
        parts.append(f"student={score.student_id}")
    if score.period is not None:
        parts.append(f"period={score.period}")
    if score.ts is not None:
        parts.append(f"ts={format_timestamp(score.ts)}")
    return "  ".join(parts)


def run_averages(args: argparse.Namespace) -> int:
    """Consume and print averages once idle, or live with ``--follow``."""
    _check_reading_bounds(args)
    settings = _settings(args)
    by = parse_group_fields(args.by)
    if not args.follow and args.idle_timeout is None:
        args.idle_timeout = 5.0
    live = _LiveTable(args.format) if args.follow else None
    idle_timeout = None if args.follow else args.idle_timeout
    dlq_topic = None if args.no_dlq else check_dlq_topic(settings.topic, args.dlq_topic)
    if args.follow:
        _wait_for_topic(settings)
    else:
        require_topic(settings)
    dead_letters = None
    if dlq_topic is not None:
        dead_letters = DeadLetterPublisher(settings, dlq_topic)
    try:
        if args.group:
            summary = stream_checkpointed_averages(
                settings,
                args.group,
                by=by,
                idle_timeout=idle_timeout,
                from_beginning=args.from_beginning,
                dead_letters=dead_letters,
                on_batch=live.update if live else None,
            )
        else:
            summary = stream_averages(
                settings,
                by=by,
                idle_timeout=idle_timeout,
                from_beginning=args.from_beginning,
                on_batch=live.update if live else None,
                on_invalid=dead_letters,
            )
    except KeyboardInterrupt:
        if live is None or live.averages is None:
            return 130
        print(format_averages(live.averages, args.format))
        return 0
    finally:
        if dead_letters is not None:
            dead_letters.close()
    print(format_averages(summary.averages, args.format))
    invalid = sum(summary.invalid.values())
    destination = "logged" if dead_letters is None else f"sent to {dead_letters.topic}"
    read = f"{summary.received} record(s) read"
    if summary.read_in_run is not None:  # a group resumes from its saved state
        read = (
            f"{summary.read_in_run} record(s) read in this run; averages cover "
            f"{summary.received} record(s)"
        )
    print(f"{read}, {invalid} invalid {destination}.", file=sys.stderr)
    return 0


def run_dlq(args: argparse.Namespace) -> int:
    """List, export or replay the dead-letter records of a topic."""
    settings = _settings(args)
    dlq_topic = check_dlq_topic(settings.topic, args.dlq_topic)
    if args.replay:
        report = replay_dead_letters(settings, args.replay, dlq_topic)
        for problem in report.invalid:
            print(f"still invalid, not sent: {problem}", file=sys.stderr)
        for problem in report.rejected:
            print(f"rejected, not sent: {problem}", file=sys.stderr)
        print(
            f"Sent {report.sent} corrected record(s) back; {len(report.invalid)} "
            f"still invalid; {report.already_replayed} replayed before; "
            f"{len(report.rejected)} rejected (not dead letters of {settings.topic})."
        )
        return 1 if report.invalid or report.rejected else 0
    letters = read_dead_letters(settings, dlq_topic)
    if args.export:
        pending = [letter for letter in letters if not letter.replayed]
        count = export_dead_letters(pending, args.export)
        print(
            f"Wrote {count} dead letter(s) to {args.export}. Fix each value, "
            f"then run: gradelab dlq --topic {settings.topic} --replay {args.export}"
        )
        return 0
    if args.format == "json":
        print(json.dumps([_dead_letter_row(letter) for letter in letters], indent=2))
        return 0
    for letter in letters:
        row = _dead_letter_row(letter)
        status = "  (replayed)" if letter.replayed else ""
        print(f"{letter.origin}  {letter.reason}{status}  {row['value']}")
    print(f"{len(letters)} dead letter(s) in {dlq_topic}.", file=sys.stderr)
    return 0


def _dead_letter_row(letter: Any) -> dict[str, Any]:
    value = letter.value or b""
    preview = value[:80].decode("utf-8", "backslashreplace")
    if len(value) > 80:
        preview += f"... ({len(value)} bytes)"
    return {
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "reason": letter.reason,
        "error": letter.error,
        "value": preview,
        "replayed": letter.replayed,
    }


class _LiveTable:
    """Redraw the averages at most once a second while ``--follow`` runs."""

    def __init__(self, output_format: str) -> None:
        self.output_format = output_format
        self.averages: Averages | None = None
        self._last_draw = 0.0

    def update(self, averages: Averages) -> None:
        self.averages = averages
        now = time.monotonic()
        if now - self._last_draw < 1.0:
            return
        self._last_draw = now
        text = format_averages(averages, self.output_format)
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[H\x1b[2J")  # cursor home, clear screen
        sys.stdout.write(f"{text}\n")
        sys.stdout.flush()


def format_averages(averages: Averages, output_format: str = "table") -> str:
    """Format averages as an aligned table, CSV or JSON.

    CSV is a header row, then one row per group sorted by group: the group
    columns, ``count``, ``mean`` (4 decimals), ``min`` and ``max``.
    """
    rows = averages.rows()
    columns = [*averages.by, *STAT_COLUMNS]
    if output_format == "json":
        return json.dumps(rows, indent=2)
    cells = [[_format_cell(row[column], column) for column in columns] for row in rows]
    if output_format == "csv":
        lines = [",".join(columns)]
        lines += [",".join(_csv_escape(cell) for cell in row) for row in cells]
        return "\n".join(lines)
    widths = [
        max(len(column), *(len(row[i]) for row in cells)) if cells else len(column)
        for i, column in enumerate(columns)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    for row in cells:
        lines.append(
            "  ".join(
                cell.rjust(w) if column in STAT_COLUMNS else cell.ljust(w)
                for cell, w, column in zip(row, widths, columns, strict=True)
            )
        )
    if not cells:
        lines.append("(no scores yet)")
    return "\n".join(lines)


def _format_cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if column == "mean":
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _csv_escape(cell: str) -> str:
    if any(char in cell for char in ',"\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gradelab`` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "verbose", False):
        # kafka-python logs every reconnect attempt at WARNING; gradelab
        # reports a missing broker itself, in one sentence.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        return args.handler(args)
    except GradelabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (``gradelab averages | head``). Point
        # stdout at /dev/null so flushing it at exit cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
