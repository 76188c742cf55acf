"""Checkpointed averages: exact after SIGKILL, with records still arriving.

The consumers are real ``gradelab averages --group G --follow`` processes,
killed with SIGKILL and restarted while a producer thread keeps sending
scores (and a few invalid records) to the real broker. The expected averages
are computed with pandas from every record the producer had acknowledged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from kafka import KafkaConsumer, TopicPartition

from gradelab.averages import Averages, RunningStats, average_scores
from gradelab.checkpoint import (
    SESSION_TIMEOUT_MS,
    CheckpointedAverages,
    PartitionState,
    state_topic_for,
    stream_checkpointed_averages,
)
from gradelab.config import Settings
from gradelab.consumer import StreamSummary
from gradelab.dlq import read_dead_letters
from gradelab.producer import make_producer, produce_scores
from gradelab.record import Score
from gradelab.simulate import simulate_scores

GRADELAB = [sys.executable, "-m", "gradelab.cli"]
# The default partitioner (murmur2 of the key) puts two of these subjects in
# each of three partitions, so every member of a 3-member group has work.
SUBJECTS = ("Math", "Physics", "English", "Music", "Geography", "Spanish")
# One record in this many is invalid and must end in the dead-letter topic.
INVALID_EVERY = 1000
KILLS = 5


class ScoreStream(threading.Thread):
    """Send scores in small chunks until stopped and ``minimum`` were sent."""

    def __init__(self, settings: Settings, minimum: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.minimum = minimum
        self.chunk = max(int(rate / 10), 1)
        self.stop_requested = threading.Event()
        self.scores: list[Score] = []
        self.invalid = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._send()
        except BaseException as exc:  # reported by the test thread
            self.error = exc

    def _send(self) -> None:
        producer = make_producer(self.settings)
        futures = []
        scores = simulate_scores(None, seed=5, subjects=SUBJECTS, start_time=1.7e9)
        sent = 0
        while sent < self.minimum or not self.stop_requested.is_set():
            for _ in range(self.chunk):
                sent += 1
                if sent % INVALID_EVERY == 0:
                    value = f'{{"class": "A", "subject": "Math", "score": {sent}}}'
                    future = producer.send(
                        self.settings.topic, key=b"Math", value=value.encode()
                    )
                    self.invalid += 1
                else:
                    score = next(scores)
                    future = producer.send(
                        self.settings.topic, key=score.key(), value=score.to_json()
                    )
                    self.scores.append(score)
                futures.append(future)
            time.sleep(0.1)
        producer.flush()
        for future in futures:
            future.get(timeout=30)  # raises if a record was not acknowledged
        producer.close()

    @property
    def total(self) -> int:
        return len(self.scores) + self.invalid

    def finish(self) -> None:
        self.stop_requested.set()
        self.join(timeout=300)
        assert not self.is_alive(), "the producer thread did not finish"
        if self.error is not None:
            raise self.error


def _expected_rows(scores: list[Score]) -> list[dict]:
    frame = pd.DataFrame([score.to_dict() for score in scores])
    expected = average_scores(frame, by="subject")
    return expected.to_dict("records")


def _assert_rows_equal(actual: list[dict], expected: list[dict]) -> None:
    assert [row["subject"] for row in actual] == [row["subject"] for row in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got["count"] == want["count"], got["subject"]
        assert got["mean"] == pytest.approx(want["mean"], rel=1e-12), got["subject"]
        assert got["min"] == want["min"], got["subject"]
        assert got["max"] == want["max"], got["subject"]


def _start_member(settings: Settings, group: str, log_dir: Path, name: str):
    stdout = open(log_dir / f"{name}.out", "w")  # noqa: SIM115 - closed by caller
    stderr = open(log_dir / f"{name}.err", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [
            *GRADELAB,
            "averages",
            "--bootstrap-server",
            settings.bootstrap_servers,
            "--topic",
            settings.topic,
            "--group",
            group,
            "--follow",
            "--from-beginning",
            "--format",
            "json",
            "--verbose",
        ],
        stdout=stdout,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    stdout.close()
    stderr.close()
    return process


def _wait_for_output(path: Path, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.stat().st_size > 0:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _last_json_document(text: str):
    decoder = json.JSONDecoder()
    position, last = 0, None
    while True:
        start = text.find("[", position)
        if start < 0:
            return last
        try:
            last, position = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            return last


def _run_final(settings: Settings, group: str, log_dir: Path) -> tuple[str, str]:
    """Run ``gradelab averages --group`` once to idle; return stdout and stderr."""
    # No --from-beginning: every partition must come from its snapshot, so a
    # lost snapshot shows up as missing scores instead of a silent re-read.
    stdout_path = log_dir / "final.out"
    stderr_path = log_dir / "final.err"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [
                *GRADELAB,
                "averages",
                "--bootstrap-server",
                settings.bootstrap_servers,
                "--topic",
                settings.topic,
                "--group",
                group,
                "--idle-timeout",
                "3",
                "--format",
                "json",
                "--verbose",
            ],
            stdout=stdout,
            stderr=stderr,
        )
        try:
            process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log = stderr_path.read_text()
    assert process.returncode == 0, log[-3000:]
    return stdout_path.read_text(), log


def _latest_snapshots(settings: Settings, group: str) -> dict[int, PartitionState]:
    state_topic = state_topic_for(group, settings.topic)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    partition = TopicPartition(state_topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    end = consumer.end_offsets([partition])[partition]
    latest: dict[int, PartitionState] = {}
    while consumer.position(partition) < end:
        for record in consumer.poll(timeout_ms=1000).get(partition, []):
            state = PartitionState.from_json(record.value)
            latest[state.partition] = state
    consumer.close()
    return latest


def _wait_until_caught_up(settings: Settings, group: str, timeout: float) -> None:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    partitions = [TopicPartition(settings.topic, number) for number in range(3)]
    end = consumer.end_offsets(partitions)
    consumer.close()
    deadline = time.monotonic() + timeout
    while True:
        snapshots = _latest_snapshots(settings, group)
        behind = {
            tp.partition: (snapshots.get(tp.partition), end[tp])
            for tp in partitions
            if tp.partition not in snapshots
            or snapshots[tp.partition].next_offset < end[tp]
        }
        if not behind:
            return
        assert time.monotonic() < deadline, f"the group did not catch up: {behind}"
        time.sleep(0.5)


def test_checkpoint_survives_repeated_sigkill(kafka, topic_factory, tmp_path):
    topic = topic_factory(partitions=3)
    settings = Settings(bootstrap_servers=kafka, topic=topic)
    group = f"{topic}-averages"
    seed = int(time.time())
    rng = random.Random(seed)
    stream = ScoreStream(settings, minimum=50_000, rate=2000)
    stream.start()

    kills = 0
    killed_while_printing = 0
    try:
        while kills < KILLS:
            name = f"member-{kills}"
            process = _start_member(settings, group, tmp_path, name)
            # Most kills land while the member prints averages; some land
            # earlier, during the group join or the restore of snapshots.
            if rng.random() < 0.7:
                printing = _wait_for_output(tmp_path / f"{name}.out", process, 90)
                killed_while_printing += printing
                time.sleep(rng.uniform(0.0, 2.0))
            else:
                time.sleep(rng.uniform(0.5, 6.0))
            assert process.poll() is None, (tmp_path / f"{name}.err").read_text()
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            kills += 1
            assert stream.is_alive(), "records stopped arriving before the last kill"
    finally:
        stream.finish()

    assert killed_while_printing >= 1, f"seed {seed}: no kill hit a running member"
    assert stream.total >= 50_000

    # Killed members stay in the group until their sessions time out, and a
    # final run that joined before then would own only some partitions.
    time.sleep(SESSION_TIMEOUT_MS / 1000 + 2)
    output, log = _run_final(settings, group, tmp_path)
    _assert_rows_equal(json.loads(output), _expected_rows(stream.scores))
    assert f"averages cover {stream.total} record(s), {stream.invalid} invalid" in log

    letters = read_dead_letters(settings)
    assert len(letters) == stream.invalid
    assert Counter(letter.reason for letter in letters) == {
        "score-out-of-range": stream.invalid
    }


def test_checkpoint_member_death_moves_state(kafka, topic_factory, tmp_path):
    topic = topic_factory(partitions=3)
    settings = Settings(bootstrap_servers=kafka, topic=topic)
    group = f"{topic}-averages"
    stream = ScoreStream(settings, minimum=20_000, rate=1500)
    stream.start()
    members = {}
    try:
        for name in ("member-a", "member-b", "member-c"):
            members[name] = _start_member(settings, group, tmp_path, name)
        for name, process in members.items():
            assert _wait_for_output(tmp_path / f"{name}.out", process, 90), (
                tmp_path / f"{name}.err"
            ).read_text()
        time.sleep(random.uniform(0.5, 2.0))
        members["member-b"].send_signal(signal.SIGKILL)
        members["member-b"].wait(timeout=30)
        # Records keep arriving while the group notices the death and moves
        # member-b's partition to the others.
        time.sleep(12)
    finally:
        stream.finish()

    _wait_until_caught_up(settings, group, timeout=120)
    survivors = Averages(by="subject")
    for name in ("member-a", "member-c"):
        process = members[name]
        assert process.poll() is None, (tmp_path / f"{name}.err").read_text()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        rows = _last_json_document((tmp_path / f"{name}.out").read_text())
        assert rows, f"{name} printed no averages"
        for row in rows:
            stats = RunningStats(
                row["count"], row["mean"] * row["count"], row["min"], row["max"]
            )
            # Subjects live in one partition each, so no subject appears twice.
            assert (row["subject"],) not in survivors.groups
            survivors.groups[(row["subject"],)] = stats
    _assert_rows_equal(survivors.rows(), _expected_rows(stream.scores))

    output, log = _run_final(settings, group, tmp_path)
    _assert_rows_equal(json.loads(output), _expected_rows(stream.scores))
    assert f"averages cover {stream.total} record(s), {stream.invalid} invalid" in log


def test_checkpoint_snapshot_round_trips():
    averages = Averages(by="subject")
    averages.add(Score("A", "Math", 12))
    averages.add(Score("B", "Math", 15.5))
    state = PartitionState("scores", 2, 41, averages, 42, Counter({"not-json": 1}))
    restored = PartitionState.from_json(state.to_json())
    assert restored.topic == "scores"
    assert restored.partition == 2
    assert restored.next_offset == 41
    assert restored.received == 42
    assert restored.invalid == {"not-json": 1}
    assert restored.averages.rows() == averages.rows()
    assert restored.snapshot_key() == b"scores/2/subject"


def test_checkpoint_state_topic_name_checked():
    assert state_topic_for("dashboard", "student-scores") == (
        "dashboard.student-scores.state"
    )
    with pytest.raises(ValueError, match="group id"):
        state_topic_for("my group!", "student-scores")


def test_checkpoint_waiting_for_assignment_is_reported(settings, topic_factory, caplog):
    caplog.set_level(logging.WARNING, logger="gradelab.checkpoint")
    settings = dataclasses.replace(settings, topic=topic_factory(partitions=1))
    group = f"{settings.topic}-group"
    holder = CheckpointedAverages(settings, group, from_beginning=True)
    deadline = time.monotonic() + 60
    while not holder._scores.consumer.assignment() and time.monotonic() < deadline:
        holder.poll_once()
    result: dict = {}

    def join() -> None:
        with CheckpointedAverages(settings, group, from_beginning=True) as member:
            result["summary"] = member.run(idle_timeout=1)

    joiner = threading.Thread(target=join)
    joiner.start()
    try:
        # The holder stops polling, so the joiner waits until it leaves.
        while "Waiting for the consumer group" not in caplog.text:
            assert joiner.is_alive() and time.monotonic() < deadline, caplog.text
            time.sleep(0.2)
    finally:
        holder.close()
        joiner.join(timeout=60)

    assert group in caplog.text
    assert "summary" in result


def test_checkpoint_summary_separates_this_run(kafka, topic_factory, caplog):
    caplog.set_level(logging.WARNING, logger="gradelab.checkpoint")
    settings = Settings(bootstrap_servers=kafka, topic=topic_factory(partitions=2))
    group = f"{settings.topic}-group"
    scores = list(simulate_scores(30, seed=3))

    def run() -> StreamSummary:
        return stream_checkpointed_averages(
            settings, group, idle_timeout=1, from_beginning=True
        )

    produce_scores(settings, scores[:20])
    first = run()
    told_first = "--from-beginning" in caplog.text
    produce_scores(settings, scores[20:])
    second = run()

    assert (first.received, first.read_in_run) == (20, 20)
    assert (second.received, second.read_in_run) == (30, 10)
    assert not told_first
    assert "--from-beginning" in caplog.text
    assert f"--group {group}-2" in caplog.text
