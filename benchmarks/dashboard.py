"""Benchmark of apps/dashboard.py: records per second and Tk responsiveness.

Runs the real dashboard under a private Xvfb display against the local broker
(``gradelab broker start``), in two phases, each on a fresh topic:

1. catch-up: the topic is filled with simulated scores first, then the
   dashboard reads it from the beginning. Its rate is the rate at which it
   can consume, with nothing else competing for the CPU but the broker.
2. live: the dashboard is running when simulator producers (``gradelab
   produce --simulate``, one process each) send as fast as they can. It keeps
   up if it has received every record shortly after the producers finish.

For both, the dashboard's ``--dump-state`` reports the worst and the 99th
percentile delay of a periodic ``after()`` callback (every 50 ms, the first
2 s left out), which is how long the Tk event loop was unresponsive.

Usage::

    python benchmarks/dashboard.py [--records 300000] [--producers 2]

This is a benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from gradelab.broker import KAFKA_VERSION
from gradelab.config import Settings
from gradelab.producer import ensure_topic

REPOSITORY = Path(__file__).resolve().parent.parent
DASHBOARD = REPOSITORY / "apps" / "dashboard.py"
# Seconds the live phase's dashboard stays open after the producers finish.
DRAIN_SECONDS = 5.0


def machine() -> dict[str, str]:
    """Return the CPU model, core count, Python and Kafka versions and load."""
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "kafka": KAFKA_VERSION,
        "load average (1 min)": f"{os.getloadavg()[0]:.2f}",
    }


def start_display() -> tuple[subprocess.Popen, str]:
    """Start a private Xvfb server and return it with its display name."""
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x800x24"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        number = pipe.readline().strip()
    return server, f":{number}"


def environment(display: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPOSITORY)
    if display is not None:
        env["DISPLAY"] = display
    return env


def produce(settings: Settings, count: int, seed: int) -> subprocess.Popen:
    """Start a simulator producer process sending as fast as it can."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradelab.cli",
            "produce",
            f"--bootstrap-server={settings.bootstrap_servers}",
            f"--topic={settings.topic}",
            f"--simulate={count}",
            f"--seed={seed}",
        ],
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_dashboard(
    display: str, settings: Settings, exit_after: float, *options: str
) -> tuple[subprocess.Popen, Path]:
    dump = Path(tempfile.mkdtemp()) / "state.json"
    process = subprocess.Popen(
        [
            sys.executable,
            str(DASHBOARD),
            f"--bootstrap-server={settings.bootstrap_servers}",
            f"--topic={settings.topic}",
            "--by=class,subject",
            f"--exit-after={exit_after}",
            f"--dump-state={dump}",
            *options,
        ],
        env=environment(display),
    )
    return process, dump


def fresh_settings(name: str) -> Settings:
    settings = Settings.load(topic=f"bench-dashboard-{name}-{uuid.uuid4().hex[:8]}")
    ensure_topic(settings, partitions=3)
    return settings


def catch_up(display: str, records: int) -> dict[str, float]:
    """Fill a topic, then time the dashboard reading it from the beginning."""
    settings = fresh_settings("catch-up")
    started = time.monotonic()
    producer = produce(settings, records, seed=1)
    producer.wait()
    produce_seconds = time.monotonic() - started
    # Generous: about 15 s of start-up and reading at 10,000 records/s.
    exit_after = 15 + records / 10_000
    dashboard, dump = run_dashboard(display, settings, exit_after, "--from-beginning")
    dashboard.wait()
    state = json.loads(dump.read_text())
    return _figures(state, records, produce_seconds)


def live(display: str, records: int, producers: int) -> dict[str, float]:
    """Time the dashboard while producers send as fast as they can."""
    settings = fresh_settings("live")
    # Long enough for the dashboard to start; it is closed after the drain.
    dashboard, dump = run_dashboard(display, settings, 3600)
    time.sleep(8)
    per_producer = records // producers
    started = time.monotonic()
    processes = [produce(settings, per_producer, seed) for seed in range(producers)]
    for process in processes:
        process.wait()
    produce_seconds = time.monotonic() - started
    time.sleep(DRAIN_SECONDS)
    dashboard.terminate()
    dashboard.wait()
    state = json.loads(dump.read_text())
    return _figures(state, per_producer * producers, produce_seconds)


def _figures(state: dict, produced: int, produce_seconds: float) -> dict[str, float]:
    first = _seconds(state["first_record_time"])
    last = _seconds(state["last_record_time"])
    received = state["received"]
    return {
        "records produced": produced,
        "producer rate (records/s)": round(produced / produce_seconds),
        "records received by the dashboard": received,
        "dashboard rate, first to last record (records/s)": round(
            received / (last - first)
        )
        if last and first and last > first
        else 0,
        "worst after() delay (ms)": state["loop_delay_max_ms"],
        "99th percentile after() delay (ms)": state["loop_delay_p99_ms"],
    }


def _seconds(moment: str | None) -> float | None:
    if moment is None:
        return None
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records", type=int, default=300_000, help="records per phase"
    )
    parser.add_argument(
        "--producers", type=int, default=2, help="producer processes in the live phase"
    )
    args = parser.parse_args()
    server, display = start_display()
    try:
        print("machine:")
        for name, value in machine().items():
            print(f"  {name}: {value}")
        for name, figures in (
            ("catch-up", catch_up(display, args.records)),
            ("live", live(display, args.records, args.producers)),
        ):
            print(f"{name}:")
            for label, value in figures.items():
                print(f"  {label}: {value:,}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
