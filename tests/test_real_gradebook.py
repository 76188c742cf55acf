"""Replay the real mathematics gradebook through Kafka and check its averages.

The gradebook (395 students, periods G1, G2 and G3, fields separated by ';')
lives outside the project. Its reference figures were computed from the file
with pandas, independently of gradelab; the test skips when it is absent.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from gradelab.config import Settings

pytestmark = pytest.mark.kafka

GRADELAB = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "gradelab"

# Published with the gradebook: count, mean (4 decimals), min and max by period.
REFERENCE_CSV = [
    "period,count,mean,min,max",
    "G1,395,10.9089,3,19",
    "G2,395,10.7139,0,19",
    "G3,395,10.4152,0,20",
]


def gradelab(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("GRADELAB_") or name == "GRADELAB_HOME"
    }
    return subprocess.run(
        [str(GRADELAB), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_real_gradebook_averages_by_period(
    shared_gradebook: Path, settings: Settings, kafka: str
) -> None:
    topic = settings.topic

    produced = gradelab(
        "produce",
        "--csv",
        str(shared_gradebook),
        "--sep",
        ";",
        "--subject",
        "Math",
        "--class-col",
        "school",
        "--score-cols",
        "G1,G2,G3",
        "--topic",
        topic,
        "--bootstrap-server",
        kafka,
    )
    averages = gradelab(
        "averages",
        "--topic",
        topic,
        "--by",
        "period",
        "--from-beginning",
        "--idle-timeout",
        "5",
        "--format",
        "csv",
        "--bootstrap-server",
        kafka,
    )

    assert produced.returncode == 0, produced.stderr
    assert "Sent 1185 record(s)" in produced.stdout
    assert "skipped 0" in produced.stdout
    assert averages.returncode == 0, averages.stderr
    assert averages.stdout.strip().splitlines() == REFERENCE_CSV


def test_real_gradebook_matches_pandas(shared_gradebook: Path) -> None:
    # Cross-check the reference figures against the file itself with pandas,
    # so the expected output above is not taken on trust.
    frame = pd.read_csv(shared_gradebook, sep=";")
    lines = ["period,count,mean,min,max"]
    for period in ("G1", "G2", "G3"):
        column = frame[period]
        lines.append(
            f"{period},{column.count()},{column.mean():.4f},"
            f"{column.min()},{column.max()}"
        )

    assert lines == REFERENCE_CSV
