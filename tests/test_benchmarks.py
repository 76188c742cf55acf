"""Tests for benchmarks/run.py: one tiny run against the real broker.

The figures of a run depend on the machine, so nothing here checks a speed;
the tests check that every measurement runs, counts the records it should,
and that the ratios, targets, table and chart agree with the JSON.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kafka import KafkaAdminClient

from gradelab.config import Settings
from gradelab.consumer import make_consumer
from gradelab.producer import make_producer

RUN_SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
TINY = ["--records", "2000", "--produce-records", "1000", "--repeat", "1"]
TINY += ["--latency-seconds", "1"]


def load_run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_run", RUN_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the benchmark once in a tiny configuration; return its files."""
    directory = tmp_path_factory.mktemp("bench")
    output, chart = directory / "results.json", directory / "ratios.png"
    completed = subprocess.run(
        [sys.executable, str(RUN_SCRIPT), "--bootstrap-server", kafka, *TINY]
        + ["--output", str(output), "--chart", str(chart)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return {
        "results": json.loads(output.read_text(encoding="utf-8")),
        "stdout": completed.stdout,
        "output": output,
        "chart": chart,
        "kafka": kafka,
    }


def test_benchmark_produce_counts(tiny_run: dict[str, Any]) -> None:
    produce = tiny_run["results"]["produce"]

    for side in ("gradelab", "bare"):
        assert [run["records"] for run in produce[side]["runs"]] == [1000]
        assert produce[side]["records_per_second"] > 0
        assert produce[side]["cpu_us_per_record"] > 0
    assert tiny_run["results"]["average"]["java_produce"]["records_written"] == 2000


def test_benchmark_average_counts(tiny_run: dict[str, Any]) -> None:
    average = tiny_run["results"]["average"]

    assert [run["records"] for run in average["gradelab"]["runs"]] == [2000]
    assert [run["averaged"] for run in average["gradelab"]["runs"]] == [2000]
    assert [run["invalid"] for run in average["gradelab"]["runs"]] == [0]
    assert [run["records"] for run in average["bare"]["runs"]] == [2000]
    assert average["java"]["records"] == 2000
    assert average["java"]["records_per_second"] > 0


def test_benchmark_memory_and_latency(tiny_run: dict[str, Any]) -> None:
    results = tiny_run["results"]
    memory, latency = results["memory"], results["latency"]

    assert memory["records"] == [200, 2000]
    small, large = memory["peak_rss_mib"]
    assert small > 0
    assert memory["growth_mib"] == pytest.approx(large - small)
    assert latency["records"] == 1000
    assert latency["rate"] == 1000
    assert 0 < latency["median_ms"] <= latency["p99_ms"] <= latency["max_ms"]


def test_benchmark_ratios_from_throughputs(tiny_run: dict[str, Any]) -> None:
    results = tiny_run["results"]
    produce, average = results["produce"], results["average"]

    assert results["ratios"]["produce"] == pytest.approx(
        produce["gradelab"]["records_per_second"]
        / produce["bare"]["records_per_second"]
    )
    assert results["ratios"]["average"] == pytest.approx(
        average["gradelab"]["records_per_second"]
        / average["bare"]["records_per_second"]
    )


def test_benchmark_targets_judged(tiny_run: dict[str, Any]) -> None:
    results = tiny_run["results"]
    by_value = {target["value"]: target for target in results["targets"]}

    assert len(results["targets"]) == 4
    average = by_value[results["ratios"]["average"]]
    assert average["met"] == (results["ratios"]["average"] >= 0.9)
    latency = by_value[results["latency"]["p99_ms"]]
    assert latency["met"] == (results["latency"]["p99_ms"] < 100)
    memory = by_value[results["memory"]["growth_mib"]]
    assert memory["met"] == (results["memory"]["growth_mib"] <= 10)


def test_benchmark_machine_recorded(tiny_run: dict[str, Any]) -> None:
    machine = tiny_run["results"]["machine"]

    assert machine["cores"] >= 1
    assert machine["python"].count(".") == 2
    assert machine["kafka"]
    assert machine["kafka_python"]
    assert machine["cpu"]


def test_benchmark_table_printed(tiny_run: dict[str, Any]) -> None:
    stdout = tiny_run["stdout"]

    assert "gradelab / bare" in stdout
    assert f"{tiny_run['results']['ratios']['average']:.2f}" in stdout
    for target in tiny_run["results"]["targets"]:
        assert target["target"] in stdout


def test_benchmark_chart_is_png(tiny_run: dict[str, Any]) -> None:
    assert tiny_run["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_topics_deleted(tiny_run: dict[str, Any]) -> None:
    run_id = tiny_run["results"]["run_id"]
    admin = KafkaAdminClient(bootstrap_servers=tiny_run["kafka"])
    try:
        left = [topic for topic in admin.list_topics() if topic.startswith(run_id)]
    finally:
        admin.close()

    assert left == []


def test_benchmark_report_reprints_table(
    tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    chart = tmp_path / "again.png"

    completed = subprocess.run(
        [sys.executable, str(RUN_SCRIPT), "--report", str(tiny_run["output"])]
        + ["--chart", str(chart)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == tiny_run["stdout"]
    assert chart.exists()


@pytest.mark.parametrize("argument", ["--records", "--repeat", "--produce-records"])
def test_benchmark_zero_count_rejected(argument: str) -> None:
    completed = subprocess.run(
        [sys.executable, str(RUN_SCRIPT), argument, "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 2
    assert "invalid count '0'" in completed.stderr


def test_benchmark_bare_producer_matches_gradelab(settings: Settings) -> None:
    run = load_run_module()
    producer = make_producer(settings)
    try:
        config = producer.config
    finally:
        producer.close()

    for name, value in run.PRODUCER_CONFIG.items():
        if name == "acks":
            assert config[name] in ("all", -1)  # kafka-python stores "all" as -1
        else:
            assert config[name] == value, name


def test_benchmark_bare_consumer_matches_gradelab(settings: Settings) -> None:
    run = load_run_module()
    consumer = make_consumer(settings, from_beginning=True)
    try:
        config = consumer.config
    finally:
        consumer.close()

    for name, value in run.CONSUMER_CONFIG.items():
        assert config[name] == value, name


def test_percentile_nearest_rank() -> None:
    run = load_run_module()
    values = [float(number) for number in range(1, 101)]

    assert run._percentile(values, 99) == 99.0
    assert run._percentile(values, 50) == 50.0
    assert run._percentile([7.0], 99) == 7.0
