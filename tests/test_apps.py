"""Tests of the console apps in apps/: the producer and the consumer scripts.

Each script runs as a subprocess, as a student would run it, against the
real broker and a fresh topic.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gradelab.config import Settings
from gradelab.producer import ensure_topic, make_producer

REPOSITORY = Path(__file__).resolve().parent.parent
APPS = REPOSITORY / "apps"


def _run_app(name: str, *args: str, **environment: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADELAB_")}
    # Import the working tree's gradelab whatever the virtualenv points at.
    env["PYTHONPATH"] = str(REPOSITORY)
    env.update(environment)
    return subprocess.run(
        [sys.executable, str(APPS / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.kafka
def test_producer_then_consumer_round_trip(settings: Settings) -> None:
    connection = (
        f"--bootstrap-server={settings.bootstrap_servers}",
        f"--topic={settings.topic}",
    )

    produced = _run_app("producer.py", *connection, "--interval=0.05", "--count=5")

    assert produced.returncode == 0, produced.stderr
    sent = [
        json.loads(line.removeprefix("Sent ")) for line in produced.stdout.splitlines()
    ]
    assert len(sent) == 5

    consumed = _run_app(
        "consumer.py",
        *connection,
        "--from-beginning",
        "--max-records=5",
        "--idle-timeout=20",
    )

    assert consumed.returncode == 0, consumed.stderr
    lines = consumed.stdout.splitlines()
    assert len(lines) == 5
    printed = sorted(line.split(" (partition")[0] for line in lines)
    expected = sorted(
        f"Received class={record['class']} subject={record['subject']} "
        f"score={record['score']:g}"
        for record in sent
    )
    assert printed == expected


@pytest.mark.kafka
def test_consumer_skips_invalid_records(settings: Settings) -> None:
    ensure_topic(settings)
    producer = make_producer(settings)
    producer.send(settings.topic, key=b"Math", value=b"not json")
    producer.send(
        settings.topic,
        key=b"Math",
        value=b'{"class": "B", "subject": "Math", "score": 12.5}',
    )
    producer.flush()
    producer.close()

    consumed = _run_app(
        "consumer.py",
        f"--bootstrap-server={settings.bootstrap_servers}",
        f"--topic={settings.topic}",
        "--from-beginning",
        "--max-records=2",
        "--idle-timeout=20",
    )

    assert consumed.returncode == 0, consumed.stderr
    lines = consumed.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Received class=B subject=Math score=12.5 (partition ")
    assert "not-json" in consumed.stderr


@pytest.mark.parametrize("name", ["producer.py", "consumer.py"])
def test_app_without_broker_prints_error(name: str) -> None:
    result = _run_app(
        name,
        f"--bootstrap-server=localhost:{_free_port()}",
        "--topic=scores",
        GRADELAB_CONNECT_TIMEOUT="1",
    )

    assert result.returncode == 1
    assert result.stderr.startswith("error: No Kafka broker answered")
    assert "gradelab broker start" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "option", "message"),
    [
        ("producer.py", "--interval=-1", "Invalid --interval -1: expected seconds"),
        ("producer.py", "--interval=nan", "Invalid --interval nan: expected seconds"),
        ("producer.py", "--count=0", "Invalid --count 0: expected 1 or more"),
        ("producer.py", "--count=-3", "Invalid --count -3: expected 1 or more"),
        ("consumer.py", "--max-records=-1", "Invalid --max-records -1: expected 1"),
        ("consumer.py", "--max-records=0", "Invalid --max-records 0: expected 1"),
        ("consumer.py", "--idle-timeout=-2", "Invalid --idle-timeout -2: expected"),
        ("consumer.py", "--idle-timeout=0", "Invalid --idle-timeout 0: expected"),
    ],
)
def test_app_rejects_invalid_option(name: str, option: str, message: str) -> None:
    result = _run_app(name, option)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("name", "options", "endless"),
    [
        ("producer.py", ("--interval=0", "--count=1"), False),
        ("consumer.py", ("--idle-timeout=1",), False),
        ("consumer.py", (), True),
    ],
)
def test_app_mentions_ctrl_c_when_endless(
    settings: Settings, name: str, options: tuple[str, ...], endless: bool
) -> None:
    ensure_topic(settings)
    command = [
        sys.executable,
        str(APPS / name),
        f"--bootstrap-server={settings.bootstrap_servers}",
        f"--topic={settings.topic}",
        *options,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADELAB_")}
    env["PYTHONPATH"] = str(REPOSITORY)
    app = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)

    # The first line comes once connected; an endless consumer is then stopped.
    first_line = app.stderr.readline()
    if endless:
        app.send_signal(signal.SIGINT)
    app.communicate(timeout=60)

    assert first_line.startswith((f"Sending to {settings.topic}", "Reading "))
    assert ("press Ctrl-C to stop" in first_line) is endless
