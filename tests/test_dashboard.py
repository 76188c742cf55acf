"""Tests of apps/dashboard.py: the real Tk window under Xvfb, the real broker.

Each test runs the dashboard as a subprocess on a private Xvfb display,
replays a known stream to a fresh topic, and checks the table's contents from
``--dump-state``, which the window writes when it closes. Set
``GRADELAB_SAVE_SCREENSHOT=docs/dashboard.png`` to keep the screenshot that
``test_dashboard_shows_replayed_stream`` takes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tkinter
from collections.abc import Iterator
from pathlib import Path
from tkinter import font as tkfont

import pandas as pd
import pytest
from PIL import Image, ImageGrab

from gradelab.averages import average_scores
from gradelab.config import Settings
from gradelab.gradebook import read_gradebook
from gradelab.producer import ensure_topic, make_producer, produce_scores
from gradelab.record import Score
from gradelab.simulate import simulate_scores

REPOSITORY = Path(__file__).resolve().parent.parent
DASHBOARD = REPOSITORY / "apps" / "dashboard.py"
INVALID_VALUES = (b"{", b'{"class": "A", "subject": "Math", "score": -1}')
# Seconds the window stays open in the replay tests: enough to start, connect
# and read a few thousand records on a busy 2-core machine.
EXIT_AFTER = 10.0
# The reference figures published with the mathematics gradebook (UCI Student
# Performance, student-mat.csv): period, count, mean rounded to 4 decimals.
GRADEBOOK_REFERENCE = {"G1": (395, 10.9089), "G2": (395, 10.7139), "G3": (395, 10.4152)}
# The dashboard must exit within this many seconds of a close request.
CLOSE_DEADLINE = 2.0
# matplotlib's "tab:blue", the colour of the chart's bars.
BAR_COLOUR = (31, 119, 180)
# Read at import, because a fixture clears GRADELAB_* variables for each test.
SCREENSHOT_PATH = os.environ.get("GRADELAB_SAVE_SCREENSHOT")

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """Start a private Xvfb server; yield its display name, such as ``:5``."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed; `make test-tools` installs it.")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [
            "Xvfb",
            "-displayfd",
            str(write_end),
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
        ],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        # Xvfb writes the display number it chose once it accepts clients.
        number = pipe.readline().strip()
    if not number:
        server.kill()
        pytest.fail("Xvfb exited without choosing a display.")
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def _run_dashboard(
    display: str, *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DASHBOARD), *args],
        env=_environment(display),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _start_dashboard(display: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(DASHBOARD), *args],
        env=_environment(display),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _environment(display: str | None = None) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("GRADELAB_")
    }
    if display is not None:
        environment["DISPLAY"] = display
    # Import the working tree's gradelab whatever the virtualenv points at.
    environment["PYTHONPATH"] = str(REPOSITORY)
    return environment


def _text_width(display: str, text: str) -> int:
    """Return the pixels that ``text`` takes in Tk's default heading font."""
    root = tkinter.Tk(screenName=display)
    try:
        return tkfont.nametofont("TkHeadingFont").measure(text)
    finally:
        root.destroy()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _produce_known_stream(settings: Settings, count: int) -> list[Score]:
    scores = list(simulate_scores(count, seed=21, start_time=1_767_225_600))
    ensure_topic(settings, partitions=3)
    produce_scores(settings, scores)
    producer = make_producer(settings)
    for value in INVALID_VALUES:
        producer.send(settings.topic, key=b"Math", value=value)
    producer.flush()
    producer.close()
    return scores


def _assert_table(state: dict, expected: pd.DataFrame, by: list[str]) -> None:
    rows = state["rows"]
    assert state["by"] == by
    assert len(rows) == len(expected)
    for row, expected_row in zip(rows, expected.to_dict("records"), strict=True):
        for field in by:
            assert row[field] == expected_row[field]
        assert row["count"] == expected_row["count"]
        assert row["mean"] == pytest.approx(expected_row["mean"], abs=1e-9)
        assert row["min"] == expected_row["min"]
        assert row["max"] == expected_row["max"]


def _grab_window(display: str, deadline: float, bars: bool = False) -> Image.Image:
    """Return a screenshot of the window once it is drawn.

    With ``bars``, wait until the chart shows at least one bar, found by the
    bar colour (matplotlib's ``tab:blue``).
    """
    image = None
    while time.monotonic() < deadline:
        image = ImageGrab.grab(xdisplay=display)
        box = image.getbbox()
        # Xvfb's root window is black; the dashboard covers part of it.
        if box is not None and len(image.crop(box).getcolors(1 << 16) or []) > 64:
            window = image.crop(box)
            if not bars or _count_pixels(window, BAR_COLOUR) > 1000:
                return window
        time.sleep(0.5)
    raise AssertionError(
        f"The window was not drawn in time: {image and image.getbbox()}"
    )


def _count_pixels(image: Image.Image, colour: tuple[int, int, int]) -> int:
    counts = {pixel: count for count, pixel in image.convert("RGB").getcolors(1 << 20)}
    return counts.get(colour, 0)


def test_dashboard_shows_replayed_stream(
    display: str, settings: Settings, tmp_path: Path
) -> None:
    scores = _produce_known_stream(settings, count=3000)
    dump = tmp_path / "state.json"
    process = _start_dashboard(
        display,
        f"--bootstrap-server={settings.bootstrap_servers}",
        f"--topic={settings.topic}",
        "--from-beginning",
        "--by=subject",
        f"--exit-after={EXIT_AFTER}",
        f"--dump-state={dump}",
    )
    try:
        screenshot = _grab_window(display, time.monotonic() + EXIT_AFTER, bars=True)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr

    state = json.loads(dump.read_text())
    _assert_table(state, average_scores(scores, by="subject"), ["subject"])
    assert state["received"] == len(scores) + len(INVALID_VALUES)
    assert state["invalid"] == len(INVALID_VALUES)
    assert state["count"] == len(scores)
    assert state["connection"] == "connected"
    assert state["columns"] == ["Subject", "Count", "Mean", "Min", "Max"]
    assert f"{len(scores) + len(INVALID_VALUES):,} records" in state["status"]

    width, height = screenshot.size
    assert width >= 800
    assert height >= 480
    if SCREENSHOT_PATH:
        screenshot.convert("P", palette=Image.Palette.ADAPTIVE, colors=128).save(
            REPOSITORY / SCREENSHOT_PATH, optimize=True
        )


@pytest.mark.slow
def test_dashboard_gradebook_by_period(
    display: str, settings: Settings, shared_gradebook: Path, tmp_path: Path
) -> None:
    mapping = {
        "sep": ";",
        "subject": "Math",
        "class_col": "school",
        "score_cols": ["G1", "G2", "G3"],
    }
    report = produce_scores(settings, read_gradebook(shared_gradebook, **mapping))
    assert report.skipped == 0
    dump = tmp_path / "state.json"

    result = _run_dashboard(
        display,
        f"--bootstrap-server={settings.bootstrap_servers}",
        f"--topic={settings.topic}",
        "--from-beginning",
        "--by=period",
        f"--exit-after={EXIT_AFTER}",
        f"--dump-state={dump}",
    )

    assert result.returncode == 0, result.stderr
    state = json.loads(dump.read_text())
    # Independently of gradelab: pandas on the raw file.
    frame = pd.read_csv(shared_gradebook, sep=";")
    periods = frame[["G1", "G2", "G3"]].melt(var_name="period", value_name="score")
    expected = (
        periods.groupby("period")["score"]
        .agg(["count", "mean", "min", "max"])
        .reset_index()
    )
    _assert_table(state, expected, ["period"])
    for row in state["rows"]:
        count, mean = GRADEBOOK_REFERENCE[row["period"]]
        assert row["count"] == count
        assert round(row["mean"], 4) == mean
    assert state["invalid"] == 0


def test_dashboard_closes_quickly_under_load(
    display: str, settings: Settings, tmp_path: Path
) -> None:
    ensure_topic(settings, partitions=3)
    producer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradelab.cli",
            "produce",
            "--simulate",
            f"--bootstrap-server={settings.bootstrap_servers}",
            f"--topic={settings.topic}",
        ],
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dump = tmp_path / "state.json"
    dashboard = _start_dashboard(
        display,
        f"--bootstrap-server={settings.bootstrap_servers}",
        f"--topic={settings.topic}",
        "--by=class,subject",
        f"--dump-state={dump}",
    )
    try:
        _grab_window(display, time.monotonic() + 60)
        # The window is up; let records flow for a while before closing it.
        time.sleep(4)
        assert dashboard.poll() is None, dashboard.stderr.read()
        closed_at = time.monotonic()
        dashboard.send_signal(signal.SIGTERM)
        _, stderr = dashboard.communicate(timeout=30)
        elapsed = time.monotonic() - closed_at
    finally:
        dashboard.kill()
        producer.terminate()
        producer.wait(timeout=30)

    state = json.loads(dump.read_text())
    assert dashboard.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert state["received"] > 0
    assert state["records_per_second"] > 0, state["status"]
    assert elapsed < CLOSE_DEADLINE, (
        f"closing took {elapsed:.2f} s at {state['records_per_second']:.0f} records/s"
    )


@pytest.mark.parametrize(
    ("lang", "message", "columns"),
    [
        ("en", "No Kafka broker answered", ["Subject", "Count", "Mean", "Min", "Max"]),
        ("fr", "Aucun broker Kafka ne répond", ["Matière", "Effectif", "Moyenne"]),
    ],
)
def test_dashboard_without_broker_shows_command(
    display: str, tmp_path: Path, lang: str, message: str, columns: list[str]
) -> None:
    dump = tmp_path / "state.json"
    address = f"localhost:{_free_port()}"

    result = _run_dashboard(
        display,
        f"--bootstrap-server={address}",
        f"--lang={lang}",
        "--exit-after=5",
        f"--dump-state={dump}",
    )

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    state = json.loads(dump.read_text())
    assert state["connection"] == "unavailable"
    assert state["status"].startswith(message)
    assert address in state["status"]
    assert "gradelab broker start" in state["status"]
    assert state["columns"][: len(columns)] == columns
    assert state["rows"] == []
    for heading, width in zip(state["columns"], state["column_widths"], strict=True):
        # The heading's padding takes a few pixels on each side of its text.
        assert width >= _text_width(display, heading) + 8, f"{heading} is cut"


def test_dashboard_rejects_unsupported_grouping(display: str) -> None:
    result = _run_dashboard(display, "--by=student_id", "--exit-after=1")

    assert result.returncode == 2
    assert "Invalid live grouping 'student_id'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing/state.json", "does not exist: create it first"),
        (".", "is a directory: give a file name"),
    ],
)
def test_dashboard_rejects_unwritable_dump_state(
    tmp_path: Path, name: str, message: str
) -> None:
    dump = tmp_path / name

    # The path is checked before the window opens, so no display is needed.
    result = subprocess.run(
        [sys.executable, str(DASHBOARD), f"--dump-state={dump}", "--exit-after=1"],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert f"Invalid --dump-state {dump}: " in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_dashboard_reports_failed_state_write(display: str, tmp_path: Path) -> None:
    # A link into a missing folder passes the start-up check, as a folder
    # removed while the window is open would, and fails when written.
    dump = tmp_path / "state.json"
    dump.symlink_to(tmp_path / "removed" / "state.json")

    result = _run_dashboard(
        display,
        f"--bootstrap-server=localhost:{_free_port()}",
        "--exit-after=2",
        f"--dump-state={dump}",
    )

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        f"error: cannot write the state file {dump}: No such file or directory."
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_dashboard_group_counts_once_after_sigkill(
    display: str, settings: Settings, tmp_path: Path
) -> None:
    total = 30_000
    ensure_topic(settings, partitions=3)
    connection = (
        f"--bootstrap-server={settings.bootstrap_servers}",
        f"--topic={settings.topic}",
    )
    producer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradelab.cli",
            "produce",
            *connection,
            f"--simulate={total}",
            "--seed=4",
            "--rate=3000",
        ],
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    group_options = (*connection, f"--group={settings.topic}-view", "--from-beginning")
    first = _start_dashboard(display, *group_options)
    try:
        _grab_window(display, time.monotonic() + 60)
        time.sleep(3)
        assert producer.poll() is None, "the producer finished before the kill"
        first.kill()
        first.wait(timeout=10)
        _, produce_errors = producer.communicate(timeout=120)
    finally:
        first.kill()
        producer.kill()
    assert producer.returncode == 0, produce_errors

    dump = tmp_path / "state.json"
    # The killed member keeps its partitions until its session times out
    # (10 s), so the restarted one waits for them first.
    result = _run_dashboard(
        display, *group_options, "--exit-after=30", f"--dump-state={dump}", "-v"
    )

    assert result.returncode == 0, result.stderr
    # The restart resumed from what the killed dashboard had saved.
    restored = [
        int(count)
        for count in re.findall(r"Restored .* \((\d+) records counted\)", result.stderr)
    ]
    assert len(restored) == 3, result.stderr[-2000:]
    assert 0 < sum(restored) < total
    state = json.loads(dump.read_text())
    expected = average_scores(list(simulate_scores(total, seed=4)), by="subject")
    _assert_table(state, expected, ["subject"])
    assert state["received"] == total
    assert state["count"] == total
