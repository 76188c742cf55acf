"""Tests that every exercise check passes with the solution and fails when wrong.

Each master notebook runs once with its solutions. Then, in the same kernel,
otter-grader's check from the student version runs for every question twice:
as is, where it must pass, and after a wrong answer replaces the solution,
where it must fail. The namespace is restored after each wrong answer.
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
STUDENT_DIR = REPOSITORY / "build" / "student"
ARTIFACTS = REPOSITORY / "build" / "notebooks" / "exercises"

WRONG_ANSWERS = {
    "01-producing-scores": {
        "q1_make_score": 'history_value = Score("B", "History", 16).to_json()',
        "q2_send_and_acknowledge": "def send_score(producer, topic, score):\n"
        "    return None",
        "q3_simulated_subjects": 'simulated_subjects = {"Math"}',
    },
    "02-consuming-scores": {
        "q1_count_by_partition": "def count_by_partition(records):\n"
        "    return {0: len(records)}",
        "q2_replay_new_group": "exercise_records = replayed[:10]",
        "q3_committed_offsets": "def committed_offsets(group):\n    return {}",
    },
    "03-averages-with-pandas": {
        "q1_running_mean": "def running_mean(values):\n"
        "    return [sum(values) / len(values)] * len(values)",
        "q2_class_subject": "class_subject = scores.groupby('subject')['score']"
        ".mean().reset_index().rename(columns={'score': 'mean'})",
        "q3_merge_averages": "merged = Averages(by='subject')",
    },
    "04-partitions-and-groups": {
        "q1_partition_of_keys": "by_partition = {0: subjects}",
        "q2_merge_members": "def merge_members(parts):\n    return parts[0]",
        "q3_busiest_member": "busiest = min(members, key=lambda m: "
        "m.averages.count).name",
    },
    "05-time-and-windows": {
        "q1_window_start": "def window_of(ts, size):\n    return ts",
        "q2_math_per_minute": "math_per_minute = "
        "frame.groupby('subject')['score'].mean()",
        "q3_lateness": "minimum_lateness = 125",
    },
    "06-when-things-go-wrong": {
        "q1_reason_code": "def reason_of(value):\n    return None",
        "q2_dead_letter_reasons": "reasons = Counter()",
        "q3_guarantee": "guarantee = 'exactly once'",
    },
    "07-real-data-and-live-view": {
        "q1_wide_row": "def row_to_scores(row):\n    return []",
        "q2_final_mean": "final_by_school = raw.groupby('school')['G1'].mean()",
    },
}

CHECK_CELL = """
import json as _json
import os as _os
import otter as _otter

_os.chdir({workdir!r})
_grader = _otter.Notebook({student!r})
_results = {{}}
for _question, _wrong in {wrong!r}.items():
    _passed = _grader.check(_question, global_env=globals()).passed_all
    _saved = dict(globals())
    exec(_wrong, globals())
    _failed = not _grader.check(_question, global_env=globals()).passed_all
    globals().update(_saved)
    _results[_question] = [_passed, _failed]
print(_json.dumps(_results))
"""


@pytest.fixture(scope="session")
def student_notebooks() -> Path:
    subprocess.run(
        ["make", "--no-print-directory", "student"],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
    )
    return STUDENT_DIR


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_exercise_checks_pass_and_fail(
    kafka: str, student_notebooks: Path, name: str, tmp_path: Path
) -> None:
    master = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    questions = [
        line.split(":", 1)[1].strip()
        for cell in master.cells
        if cell.cell_type == "raw" and "BEGIN QUESTION" in cell.source
        for line in cell.source.splitlines()
        if line.startswith("name:")
    ]
    assert sorted(questions) == sorted(WRONG_ANSWERS[name])
    source = CHECK_CELL.format(
        workdir=str(tmp_path),
        student=str(student_notebooks / f"{name}.ipynb"),
        wrong=WRONG_ANSWERS[name],
    )
    master.cells.append(nbformat.v4.new_code_cell(source))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    output = ARTIFACTS / f"{name}.ipynb"
    executed = papermill.execute_notebook(
        master,
        str(output),
        parameters={"bootstrap_servers": kafka},
        kernel_name="gradelab",
        cwd=str(NOTEBOOKS_DIR),
        execution_timeout=120,
        progress_bar=False,
    )
    text = "".join(o.get("text", "") for o in executed.cells[-1].outputs)
    results = json.loads(text.strip().splitlines()[-1])
    assert sorted(results) == sorted(WRONG_ANSWERS[name])
    for question, (passed, failed) in results.items():
        assert passed, f"{question}: the check fails with the solution"
        assert failed, f"{question}: the check passes with a wrong answer"
