"""The course's console producer, rebuilt on gradelab.

Like the original script, it sends one score every few seconds as a JSON
record ``{"class", "subject", "score"}`` (plus ``student_id``, ``period`` and
``ts``) and prints each one once the broker has acknowledged it::

    python apps/producer.py                      # every 2 s, until Ctrl-C
    python apps/producer.py --interval 0.5 --count 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from gradelab.cli import add_connection_arguments
from gradelab.config import Settings
from gradelab.errors import GradelabError
from gradelab.producer import ScoreProducer
from gradelab.simulate import simulate_scores


def build_parser() -> argparse.ArgumentParser:
    """Build the producer's command-line parser."""
    parser = argparse.ArgumentParser(
        prog="producer.py",
        description="Send one simulated score to Kafka every few seconds.",
    )
    add_connection_arguments(parser, verb="write")
    parser.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between two scores (default 2)",
    )
    parser.add_argument(
        "--count", type=int, help="stop after this many scores (default: never)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Send scores until ``--count`` is reached or Ctrl-C; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # "not >= 0" also rejects nan, which every comparison fails.
    if not args.interval >= 0:
        parser.error(f"Invalid --interval {args.interval:g}: expected seconds >= 0")
    if args.count is not None and args.count < 1:
        parser.error(f"Invalid --count {args.count}: expected 1 or more")
    try:
        settings = Settings.load(
            bootstrap_servers=args.bootstrap_servers, topic=args.topic
        )
        with ScoreProducer(settings) as producer:
            print(
                f"Sending to {settings.topic} at {settings.bootstrap_servers}"
                + ("; press Ctrl-C to stop." if args.count is None else "."),
                file=sys.stderr,
            )
            for number, score in enumerate(simulate_scores(args.count, seed=args.seed)):
                if number:
                    time.sleep(args.interval)
                producer.send(score)
                # Wait for the acknowledgement, so "sent" means stored.
                producer.flush()
                print(f"Sent {json.dumps(score.to_dict())}", flush=True)
    except GradelabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
