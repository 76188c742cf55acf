"""The course's console consumer, rebuilt on gradelab.

Like the original script, it prints each score record as it arrives; records
that are not valid scores are skipped with a warning::

    python apps/consumer.py --from-beginning
    python apps/consumer.py --group teachers --max-records 100
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from gradelab.cli import add_connection_arguments
from gradelab.config import Settings
from gradelab.consumer import ScoreConsumer
from gradelab.errors import GradelabError


def build_parser() -> argparse.ArgumentParser:
    """Build the consumer's command-line parser."""
    parser = argparse.ArgumentParser(
        prog="consumer.py", description="Print each score record from Kafka."
    )
    add_connection_arguments(parser, verb="read")
    parser.add_argument("--group", help="consumer group id (default: no group)")
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start from the earliest record when there is no committed offset",
    )
    parser.add_argument("--max-records", type=int, help="stop after this many records")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="stop after this many seconds without a new record",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print records until stopped; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_records is not None and args.max_records < 1:
        parser.error(f"Invalid --max-records {args.max_records}: expected 1 or more")
    if args.idle_timeout is not None and not args.idle_timeout > 0:
        parser.error(
            f"Invalid --idle-timeout {args.idle_timeout:g}: expected seconds > 0"
        )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # kafka-python logs every failed connection; the error below reports it once.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        settings = Settings.load(
            bootstrap_servers=args.bootstrap_servers, topic=args.topic
        )
        with ScoreConsumer(
            settings, group_id=args.group, from_beginning=args.from_beginning
        ) as consumer:
            endless = args.max_records is None and args.idle_timeout is None
            print(
                f"Reading {settings.topic} at {settings.bootstrap_servers}"
                + ("; press Ctrl-C to stop." if endless else "."),
                file=sys.stderr,
            )
            for batch in consumer.iter_batches(
                idle_timeout=args.idle_timeout, max_records=args.max_records
            ):
                for record, score in batch:
                    print(
                        f"Received class={score.class_} subject={score.subject} "
                        f"score={score.score:g} (partition {record.partition}, "
                        f"offset {record.offset})",
                        flush=True,
                    )
    except GradelabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
