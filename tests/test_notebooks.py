"""Tests for the course notebooks: committed form, two full runs, student version.

The course runs with papermill against the session broker, twice in a row,
because re-running is what students do. Executed copies are kept under
``build/notebooks/`` as test artifacts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import papermill
import pytest

REPOSITORY = Path(__file__).resolve().parent.parent

NOTEBOOKS_DIR = REPOSITORY / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]-*.ipynb"))
ARTIFACTS = REPOSITORY / "build" / "notebooks"
STUDENT_DIR = REPOSITORY / "build" / "student"
KERNEL = "gradelab"
# Seconds per cell. Every Kafka read in the notebooks stops after max_wait (at
# most 60 s), so a cell that reaches this limit is stuck, not slow.
CELL_TIMEOUT = 120
MAX_COLUMNS = 79


def test_course_has_seven_numbered_notebooks() -> None:
    assert [path.name[:2] for path in NOTEBOOKS] == [f"0{n}" for n in range(1, 8)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_committed_form(path) -> None:
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert notebook.metadata.kernelspec.name == KERNEL
    assert all(not cell.outputs for cell in code), "commit without outputs"
    assert all(cell.execution_count is None for cell in code)
    for cell in code:
        for line in cell.source.splitlines():
            assert len(line) <= MAX_COLUMNS, f"line too long: {line!r}"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "one cell tagged parameters"
    assert "bootstrap_servers" in tagged[0].source
    assert "topic" in tagged[0].source
    assert notebook.cells[0].source.startswith("# ")
    questions = [c for c in notebook.cells if "BEGIN QUESTION" in c.source]
    assert 2 <= len(questions) <= 4, "two to four exercises"


RUNS = [(run, path) for run in (1, 2) for path in NOTEBOOKS]


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize(
    ("run", "path"), RUNS, ids=[f"run{run}-{path.stem[:2]}" for run, path in RUNS]
)
def test_notebook_executes(kafka: str, run: int, path) -> None:
    output = ARTIFACTS / f"run{run}" / path.name
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(path),
        str(output),
        parameters={"bootstrap_servers": kafka},
        kernel_name=KERNEL,
        cwd=str(NOTEBOOKS_DIR),
        execution_timeout=CELL_TIMEOUT,
        progress_bar=False,
    )


@pytest.fixture(scope="session")
def student_version() -> list:
    subprocess.run(
        ["make", "--no-print-directory", "student"],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
    )
    return sorted(STUDENT_DIR.glob("[0-9][0-9]-*.ipynb"))


@pytest.mark.kafka
@pytest.mark.slow
def test_student_version_runs_to_first_exercise(kafka: str, student_version) -> None:
    assert len(student_version) == len(NOTEBOOKS)
    for path in student_version:
        notebook = nbformat.read(path, as_version=4)
        text = json.dumps(notebook.cells)
        assert "# BEGIN SOLUTION" not in text, f"{path.name} has solutions"
        answers = [
            index
            for index, cell in enumerate(notebook.cells)
            if "otter_answer_cell" in cell.metadata.get("tags", [])
        ]
        assert answers, f"{path.name} has no exercise"
        notebook.cells = notebook.cells[: answers[0]]
        head = ARTIFACTS / "student" / path.name
        head.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, head)
        papermill.execute_notebook(
            str(head),
            str(head),
            parameters={"bootstrap_servers": kafka},
            kernel_name=KERNEL,
            cwd=str(STUDENT_DIR),
            execution_timeout=CELL_TIMEOUT,
            progress_bar=False,
        )
