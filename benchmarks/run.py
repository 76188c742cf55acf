"""Benchmark gradelab against the Kafka client it is built on, in one run.

Every run writes to fresh topics (three partitions each) on a running broker
and measures:

- produce throughput: gradelab's ``produce --simulate`` path
  (:func:`gradelab.producer.produce_scores` over
  :func:`gradelab.simulate.simulate_scores`), a bare kafka-python producer
  sending the same JSON payloads with the same settings, and Kafka's Java
  ``ProducerPerformance`` tool;
- consume-and-average throughput over one topic of ``--records`` records:
  :func:`gradelab.consumer.stream_averages`, a bare kafka-python loop that
  only iterates the records, and Kafka's Java ``ConsumerPerformance`` tool;
- peak RSS of the averaging run at a tenth of ``--records`` and at all of them;
- end-to-end latency at a steady rate: from each record's Kafka timestamp to
  the moment the averaging consumer has added it to its averages.

Each Python measurement runs in a process of its own, so none inherits the
memory, threads or warm caches of another. The Python runs are repeated and
alternate between gradelab and bare kafka-python, and each side keeps its best
run: on a shared machine the best run is the one least slowed by others.

Usage::

    python benchmarks/run.py                       # 1,000,000 records
    python benchmarks/run.py --quick               # 100,000 records, one pass
    python benchmarks/run.py --report benchmarks/results.json --chart out.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kafka
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

from gradelab import broker
from gradelab.averages import Averages
from gradelab.config import Settings
from gradelab.connection import connect
from gradelab.consumer import ScoreConsumer, stream_averages
from gradelab.producer import ensure_topic, produce_scores
from gradelab.simulate import simulate_scores

BENCHMARKS = Path(__file__).resolve().parent
NOTEBOOKS = BENCHMARKS.parent / "notebooks"
NOTEBOOK_KERNEL = "gradelab"  # installed by `make kernel`

# The settings of gradelab's clients (gradelab.producer.make_producer and
# gradelab.consumer.make_consumer), given to the bare kafka-python clients
# so that both sides do the same Kafka work.
PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    "batch_size": 64 * 1024,
}
CONSUMER_CONFIG: dict[str, Any] = {
    "group_id": None,
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
    "max_poll_records": 10_000,
    "fetch_max_bytes": 4 * 1024 * 1024,
    "max_partition_fetch_bytes": 1024 * 1024,
}
PARTITIONS = 3
SEED = 1
# Distinct payloads in the Java producer's payload file; it sends them in
# random order, as many times as needed.
PAYLOAD_FILE_RECORDS = 100_000
READY = "ready"

# Targets: minimum gradelab / bare throughput ratios, maximum growth of the
# peak RSS from a tenth of the records to all of them, maximum p99 latency,
# maximum time to execute the whole course.
MIN_RATIO = 0.9
MAX_MEMORY_GROWTH_MIB = 10.0
MAX_P99_LATENCY_MS = 100.0
MAX_NOTEBOOK_SECONDS = 180.0


# --- Workers: one measurement each, in a child process ----------------------


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(bootstrap_servers=args.bootstrap_server, topic=args.topic)


def _measured(records: int, started: float, cpu_started: float) -> dict[str, Any]:
    """Return the figures every worker reports, from its start times."""
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {
        "records": records,
        "seconds": seconds,
        "records_per_second": records / seconds,
        "cpu_us_per_record": cpu_seconds / records * 1e6 if records else None,
        "peak_rss_mib": peak_rss_kib / 1024,
    }


def produce_gradelab(args: argparse.Namespace) -> dict[str, Any]:
    """Send simulated scores the way ``gradelab produce --simulate N`` does."""
    settings = _settings(args)
    started, cpu_started = time.perf_counter(), time.process_time()
    report = produce_scores(settings, simulate_scores(args.count, seed=args.seed))
    return _measured(report.sent, started, cpu_started)


def produce_bare(args: argparse.Namespace) -> dict[str, Any]:
    """Send the same kind of payloads with a plain KafkaProducer.

    The keys and values are encoded before the clock starts, so this side
    measures the Kafka client alone.
    """
    settings = _settings(args)
    records = [
        (score.key(), score.to_json())
        for score in simulate_scores(args.count, seed=args.seed)
    ]
    started, cpu_started = time.perf_counter(), time.process_time()
    producer = KafkaProducer(**settings.kafka_options(), **PRODUCER_CONFIG)
    for key, value in records:
        producer.send(args.topic, key=key, value=value)
    producer.flush()
    producer.close()
    return _measured(len(records), started, cpu_started)


def average_gradelab(args: argparse.Namespace) -> dict[str, Any]:
    """Average the first ``count`` records of the topic by subject."""
    settings = _settings(args)
    deadline = time.monotonic() + args.timeout
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = stream_averages(
        settings,
        by="subject",
        idle_timeout=None,
        from_beginning=True,
        max_records=args.count,
        stop=lambda: time.monotonic() > deadline,
    )
    result = _measured(summary.received, started, cpu_started)
    result["averaged"] = summary.averages.count
    result["invalid"] = sum(summary.invalid.values())
    return result


def average_bare(args: argparse.Namespace) -> dict[str, Any]:
    """Iterate the first ``count`` records of the topic, without decoding them."""
    settings = _settings(args)
    deadline = time.monotonic() + args.timeout
    started, cpu_started = time.perf_counter(), time.process_time()
    consumer = KafkaConsumer(**settings.kafka_options(), **CONSUMER_CONFIG)
    consumer.subscribe([args.topic])
    received = 0
    while received < args.count and time.monotonic() < deadline:
        batches = consumer.poll(
            timeout_ms=200, max_records=min(10_000, args.count - received)
        )
        for records in batches.values():
            for _record in records:
                received += 1
    consumer.close()
    return _measured(received, started, cpu_started)


def latency_consumer(args: argparse.Namespace) -> dict[str, Any]:
    """Average ``count`` new records and time each one from its Kafka timestamp.

    The loop is the one in :func:`gradelab.consumer.stream_averages`; it is
    repeated here because that function hands ``on_batch`` the averages but
    not the records, whose timestamps are needed.
    """
    settings = _settings(args)
    deadline = time.monotonic() + args.timeout
    averages = Averages(by="subject")
    add = averages.add
    latencies_ms: list[float] = []
    with ScoreConsumer(settings, from_beginning=True) as consumer:
        while not consumer.consumer.assignment():
            consumer.poll(timeout=0.2)
        print(READY, flush=True)  # the parent starts the producer now
        for batch in consumer.iter_batches(
            max_records=args.count, stop=lambda: time.monotonic() > deadline
        ):
            for _record, score in batch:
                add(score)
            applied_ms = time.time() * 1000
            latencies_ms.extend(applied_ms - record.timestamp for record, _ in batch)
    latencies_ms.sort()
    count = len(latencies_ms)
    return {
        "records": count,
        "median_ms": statistics.median(latencies_ms) if count else None,
        "p99_ms": _percentile(latencies_ms, 99) if count else None,
        "max_ms": latencies_ms[-1] if count else None,
    }


def latency_producer(args: argparse.Namespace) -> dict[str, Any]:
    """Send ``count`` simulated scores at ``rate`` records per second."""
    settings = _settings(args)
    started, cpu_started = time.perf_counter(), time.process_time()
    report = produce_scores(
        settings, simulate_scores(args.count, seed=args.seed), rate=args.rate
    )
    return _measured(report.sent, started, cpu_started)


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """Return the nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


WORKERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "produce-gradelab": produce_gradelab,
    "produce-bare": produce_bare,
    "average-gradelab": average_gradelab,
    "average-bare": average_bare,
    "latency-consumer": latency_consumer,
    "latency-producer": latency_producer,
}


# --- The run: topics, child processes and the Java tools --------------------


class Benchmark:
    """One benchmark run: its topics, its child processes and its results."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.settings = Settings.load(bootstrap_servers=options.bootstrap_server)
        self.run_id = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def new_topic(self, name: str) -> str:
        """Create a fresh topic for this run and return its name."""
        topic = f"{self.run_id}-{name}"
        ensure_topic(self.settings, topic=topic, partitions=PARTITIONS)
        return topic

    def delete_topics(self) -> None:
        """Delete every topic named after this run, to give the disk space back.

        That includes the topics the notebooks create from the topic name
        they are given.
        """
        admin = connect(
            KafkaAdminClient, self.settings, **self.settings.kafka_options()
        )
        try:
            topics = [t for t in admin.list_topics() if t.startswith(self.run_id)]
            if topics:
                admin.delete_topics(topics)
        finally:
            admin.close()

    def worker(self, kind: str, topic: str, count: int, **extra: Any) -> dict[str, Any]:
        """Run one worker in a child process and return what it measured."""
        command = self._worker_command(kind, topic, count, **extra)
        timeout = self._worker_timeout(count)
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout + 30
            )
        except subprocess.TimeoutExpired as exc:
            raise SystemExit(
                f"The {kind} benchmark on {topic} did not finish in {timeout + 30:.0f} "
                "s. Check that the broker is answering: gradelab broker status"
            ) from exc
        return _worker_result(
            kind, completed.returncode, completed.stdout, completed.stderr
        )

    def _worker_command(
        self, kind: str, topic: str, count: int, **extra: Any
    ) -> list[str]:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            kind,
            "--bootstrap-server",
            self.settings.bootstrap_servers,
            "--topic",
            topic,
            "--count",
            str(count),
            "--timeout",
            str(self._worker_timeout(count)),
        ]
        for name, value in extra.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        return command

    def _worker_timeout(self, count: int) -> float:
        # Generous: the slowest side on a busy two-core machine runs at a few
        # thousand records per second; a steady-rate run takes count / rate.
        return 60 + count / min(2000, self.options.rate)

    def end_offsets(self, topic: str) -> int:
        """Return the number of records in ``topic`` (the sum of end offsets)."""
        consumer = KafkaConsumer(**self.settings.kafka_options())
        try:
            partitions = [
                kafka.TopicPartition(topic, p)
                for p in consumer.partitions_for_topic(topic) or ()
            ]
            return sum(consumer.end_offsets(partitions).values())
        finally:
            consumer.close()

    def java_producer(
        self, topic: str, count: int, payload_file: Path
    ) -> dict[str, Any]:
        """Run Kafka's ProducerPerformance tool with gradelab's producer settings."""
        properties = [
            f"bootstrap.servers={self.settings.bootstrap_servers}",
            "acks=all",
            "enable.idempotence=true",
            f"linger.ms={PRODUCER_CONFIG['linger_ms']}",
            f"batch.size={PRODUCER_CONFIG['batch_size']}",
        ]
        command = broker.tool_command(
            "org.apache.kafka.tools.ProducerPerformance",
            *("--topic", topic, "--num-records", str(count)),
            *("--payload-file", str(payload_file), "--throughput", "-1"),
            "--producer-props",
            *properties,
        )
        output = _run_tool(command, self._worker_timeout(count))
        match = re.search(r"(\d+) records sent, ([\d.]+) records/sec", output)
        if match is None:
            raise SystemExit(
                f"Unexpected ProducerPerformance output:\n{output[-2000:]}"
            )
        return {"records": int(match[1]), "records_per_second": float(match[2])}

    def java_consumer(self, topic: str, count: int) -> dict[str, Any]:
        """Run Kafka's ConsumerPerformance tool over the first ``count`` records."""
        command = broker.tool_command(
            "org.apache.kafka.tools.ConsumerPerformance",
            *("--bootstrap-server", self.settings.bootstrap_servers),
            *("--topic", topic, "--messages", str(count)),
            *("--group", f"{self.run_id}-java", "--timeout", "30000"),
        )
        output = _run_tool(command, self._worker_timeout(count))
        lines = [line for line in output.splitlines() if line.strip()]
        header_index = next(
            (i for i, line in enumerate(lines) if line.startswith("start.time")), None
        )
        if header_index is None or header_index + 1 >= len(lines):
            raise SystemExit(
                f"Unexpected ConsumerPerformance output:\n{output[-2000:]}"
            )
        names = [name.strip() for name in lines[header_index].split(",")]
        values = [value.strip() for value in lines[header_index + 1].split(",")]
        row = dict(zip(names, values, strict=False))
        # fetch.nMsg.sec leaves out the time the consumer group took to form,
        # which the Python consumers, without a group, do not spend.
        return {
            "records": int(float(row["data.consumed.in.nMsg"])),
            "records_per_second": float(row["fetch.nMsg.sec"]),
            "records_per_second_with_group_join": float(row["nMsg.sec"]),
        }

    def latency(self, topic: str, count: int, rate: float) -> dict[str, Any]:
        """Run the steady-rate producer against a waiting averaging consumer."""
        consumer_command = self._worker_command("latency-consumer", topic, count)
        with subprocess.Popen(
            consumer_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as consumer:
            assert consumer.stdout is not None
            first_line = consumer.stdout.readline().strip()
            if first_line != READY:
                consumer.kill()
                _, stderr = consumer.communicate()
                raise SystemExit(f"The latency consumer failed to start:\n{stderr}")
            producer = self.worker("latency-producer", topic, count, rate=rate)
            stdout, stderr = consumer.communicate(timeout=self._worker_timeout(count))
        result = _worker_result("latency-consumer", consumer.returncode, stdout, stderr)
        result["rate"] = rate
        result["achieved_rate"] = producer["records"] / producer["seconds"]
        return result


def _run_tool(command: list[str], timeout: float) -> str:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        raise SystemExit(
            f"{command[3]} failed with exit status {completed.returncode}:\n"
            f"{completed.stderr[-2000:]}"
        )
    return completed.stdout


def _worker_result(
    kind: str, returncode: int, stdout: str, stderr: str
) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    if returncode != 0 or not lines:
        raise SystemExit(
            f"The {kind} benchmark failed with exit status {returncode}:\n"
            f"{stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarize repeated runs: the best and the median throughput."""
    rates = [run["records_per_second"] for run in runs]
    cpu = [run["cpu_us_per_record"] for run in runs if run.get("cpu_us_per_record")]
    return {
        "records_per_second": max(rates),
        "median_records_per_second": statistics.median(rates),
        "cpu_us_per_record": min(cpu) if cpu else None,
        "runs": runs,
    }


def run_benchmark(options: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement and return the results as a JSON-ready dict."""
    bench = Benchmark(options)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    results: dict[str, Any] = {
        "run_id": bench.run_id,
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "records": options.records,
            "produce_records": options.produce_records,
            "memory_records": [options.records // 10, options.records],
            "repeat": options.repeat,
            "latency_seconds": options.latency_seconds,
            "rate": options.rate,
            "partitions": PARTITIONS,
            "bootstrap_servers": bench.settings.bootstrap_servers,
            "producer": PRODUCER_CONFIG,
            "consumer": CONSUMER_CONFIG,
        },
    }
    try:
        results["produce"] = _measure_produce(bench, options)
        results["average"], results["memory"] = _measure_average(bench, options)
        results["latency"] = _measure_latency(bench, options)
        if options.notebooks:
            results["notebooks"] = _measure_notebooks(bench)
    finally:
        if not options.keep_topics:
            bench.delete_topics()
    results["machine"]["load_average"] = [load_before[0], os.getloadavg()[0]]
    results["duration_seconds"] = (datetime.now(UTC) - started).total_seconds()
    results["ratios"] = ratios(results)
    results["targets"] = targets(results)
    return results


def _measure_produce(bench: Benchmark, options: argparse.Namespace) -> dict[str, Any]:
    count = options.produce_records
    runs: dict[str, list[dict[str, Any]]] = {"gradelab": [], "bare": []}
    for repeat in range(options.repeat):
        # Alternate which side goes first, so that a slow spell on the
        # machine does not always fall on the same side.
        sides = ["bare", "gradelab"] if repeat % 2 == 0 else ["gradelab", "bare"]
        for side in sides:
            topic = bench.new_topic(f"produce-{side}-{repeat}")
            result = bench.worker(f"produce-{side}", topic, count, seed=SEED)
            written = bench.end_offsets(topic)
            if written != count:
                raise SystemExit(f"{topic} has {written} records, expected {count}.")
            runs[side].append(result)
            _progress(
                f"produce {side:8} {repeat + 1}/{options.repeat}: "
                f"{result['records_per_second']:,.0f} records/s"
            )
    return {side: _best(side_runs) for side, side_runs in runs.items()}


def _measure_average(
    bench: Benchmark, options: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any]]:
    count = options.records
    small = max(1, count // 10)
    topic = bench.new_topic("average")
    payload_file = Path(options.work_dir) / f"{bench.run_id}-payloads.txt"
    _write_payloads(payload_file, min(count, PAYLOAD_FILE_RECORDS))
    try:
        java_produce = bench.java_producer(topic, count, payload_file)
    finally:
        payload_file.unlink(missing_ok=True)
    # The tool's final count can be a little under the records it wrote, so
    # the topic itself is checked: every consumer below reads all of it.
    java_produce["records_written"] = bench.end_offsets(topic)
    if java_produce["records_written"] != count:
        raise SystemExit(
            f"{topic} has {java_produce['records_written']} records, expected {count}."
        )
    _progress(f"produce java: {java_produce['records_per_second']:,.0f} records/s")

    runs: dict[str, list[dict[str, Any]]] = {"gradelab": [], "bare": []}
    small_runs = []
    for repeat in range(options.repeat):
        sides = ["bare", "gradelab"] if repeat % 2 == 0 else ["gradelab", "bare"]
        for side in sides:
            result = bench.worker(f"average-{side}", topic, count)
            if result["records"] != count:
                raise SystemExit(
                    f"The {side} consumer read {result['records']} of {count} records."
                )
            runs[side].append(result)
            _progress(
                f"average {side:8} {repeat + 1}/{options.repeat}: "
                f"{result['records_per_second']:,.0f} records/s, "
                f"peak RSS {result['peak_rss_mib']:.1f} MiB"
            )
        small_runs.append(bench.worker("average-gradelab", topic, small))
    java = bench.java_consumer(topic, count)
    _progress(f"average java: {java['records_per_second']:,.0f} records/s")

    average = {side: _best(side_runs) for side, side_runs in runs.items()}
    average["java"] = java
    peak_small = max(run["peak_rss_mib"] for run in small_runs)
    peak_large = max(run["peak_rss_mib"] for run in runs["gradelab"])
    memory = {
        "records": [small, count],
        "peak_rss_mib": [peak_small, peak_large],
        "growth_mib": peak_large - peak_small,
        "bare_peak_rss_mib": max(run["peak_rss_mib"] for run in runs["bare"]),
    }
    return {"java_produce": java_produce, **average}, memory


def _measure_latency(bench: Benchmark, options: argparse.Namespace) -> dict[str, Any]:
    count = max(1, int(options.rate * options.latency_seconds))
    topic = bench.new_topic("latency")
    result = bench.latency(topic, count, options.rate)
    _progress(
        f"latency at {options.rate:,.0f} records/s: median "
        f"{result['median_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
    )
    return result


def _measure_notebooks(bench: Benchmark) -> dict[str, Any]:
    """Execute every course notebook once under papermill, as the tests do."""
    import papermill

    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as output_dir:
        for path in sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")):
            started = time.perf_counter()
            try:
                papermill.execute_notebook(
                    str(path),
                    str(Path(output_dir) / path.name),
                    parameters={
                        "bootstrap_servers": bench.settings.bootstrap_servers,
                        "topic": f"{bench.run_id}-{path.stem[:2]}",
                    },
                    kernel_name=NOTEBOOK_KERNEL,
                    cwd=str(path.parent),
                    execution_timeout=300,
                    progress_bar=False,
                )
            except Exception as exc:  # any failure: the course did not run
                failed[path.name] = f"{type(exc).__name__}: {exc}"[:500]
            seconds[path.name] = time.perf_counter() - started
            outcome = "FAILED" if path.name in failed else "ok"
            _progress(f"notebook {path.name}: {seconds[path.name]:.1f} s, {outcome}")
    return {
        "seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "failed": failed,
    }


def _write_payloads(path: Path, count: int) -> None:
    """Write one score record value per line, for ProducerPerformance."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        for score in simulate_scores(count, seed=SEED):
            file.write(score.to_json() + b"\n")


# --- Results: machine, ratios, targets, table and chart ---------------------


def machine_info() -> dict[str, Any]:
    """Describe the machine and the software versions the figures depend on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import crc32c  # noqa: F401  # kafka-python checks CRCs in C when present

        crc = "crc32c (C)"
    except ImportError:
        crc = "kafka-python's pure Python CRC-32C"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kafka": broker.KAFKA_VERSION,
        "kafka_python": kafka.__version__,
        "crc32c": crc,
        "platform": platform.platform(),
    }


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Return gradelab / bare kafka-python for throughput and CPU time per record."""
    produce, average = results["produce"], results["average"]
    return {
        # Median over the repeats of each run's pair (run n of gradelab over
        # run n of bare), which ran one after the other.
        "produce_paired_median": _paired_median(produce),
        "average_paired_median": _paired_median(average),
        "produce": produce["gradelab"]["records_per_second"]
        / produce["bare"]["records_per_second"],
        "average": average["gradelab"]["records_per_second"]
        / average["bare"]["records_per_second"],
        "produce_cpu": produce["gradelab"]["cpu_us_per_record"]
        / produce["bare"]["cpu_us_per_record"],
        "average_cpu": average["gradelab"]["cpu_us_per_record"]
        / average["bare"]["cpu_us_per_record"],
    }


def _paired_median(measure: dict[str, Any]) -> float:
    pairs = zip(measure["gradelab"]["runs"], measure["bare"]["runs"], strict=True)
    return statistics.median(
        gradelab["records_per_second"] / bare["records_per_second"]
        for gradelab, bare in pairs
    )


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare the results with the targets; ``met`` is True where one is met."""
    small, large = results["memory"]["records"]
    checks = [
        (
            "averaging throughput / bare kafka-python",
            f">= {MIN_RATIO}",
            results["ratios"]["average"],
            results["ratios"]["average"] >= MIN_RATIO,
        ),
        (
            "produce throughput / bare kafka-python",
            f">= {MIN_RATIO}",
            results["ratios"]["produce"],
            results["ratios"]["produce"] >= MIN_RATIO,
        ),
        (
            f"peak RSS growth from {small:,} to {large:,} records, MiB",
            f"<= {MAX_MEMORY_GROWTH_MIB:g}",
            results["memory"]["growth_mib"],
            results["memory"]["growth_mib"] <= MAX_MEMORY_GROWTH_MIB,
        ),
        (
            f"p99 latency at {results['latency']['rate']:,.0f} records/s, ms",
            f"< {MAX_P99_LATENCY_MS:g}",
            results["latency"]["p99_ms"],
            results["latency"]["p99_ms"] < MAX_P99_LATENCY_MS,
        ),
    ]
    if "notebooks" in results:
        total = results["notebooks"]["total_seconds"]
        checks.append(
            (
                "course notebooks under papermill, s",
                f"< {MAX_NOTEBOOK_SECONDS:g}, every notebook without error",
                total,
                total < MAX_NOTEBOOK_SECONDS and not results["notebooks"]["failed"],
            )
        )
    return [
        {"target": name, "required": required, "value": value, "met": met}
        for name, required, value, met in checks
    ]


def format_table(results: dict[str, Any]) -> str:
    """Format the results as the plain-text table the run prints."""
    produce, average = results["produce"], results["average"]
    config, memory, latency = results["config"], results["memory"], results["latency"]
    best_of = f"best of {config['repeat']}"
    rows = [
        ("", "gradelab", "bare kafka-python", "Java tool", "gradelab / bare"),
        (
            f"produce, records/s ({config['produce_records']:,}, {best_of})",
            f"{produce['gradelab']['records_per_second']:,.0f}",
            f"{produce['bare']['records_per_second']:,.0f}",
            f"{average['java_produce']['records_per_second']:,.0f}",
            f"{results['ratios']['produce']:.2f}",
        ),
        (
            "produce, CPU µs/record",
            f"{produce['gradelab']['cpu_us_per_record']:.1f}",
            f"{produce['bare']['cpu_us_per_record']:.1f}",
            "",
            f"{results['ratios']['produce_cpu']:.2f}",
        ),
        (
            f"consume and average, records/s ({config['records']:,}, {best_of})",
            f"{average['gradelab']['records_per_second']:,.0f}",
            f"{average['bare']['records_per_second']:,.0f}",
            f"{average['java']['records_per_second']:,.0f}",
            f"{results['ratios']['average']:.2f}",
        ),
        (
            "consume and average, CPU µs/record",
            f"{average['gradelab']['cpu_us_per_record']:.1f}",
            f"{average['bare']['cpu_us_per_record']:.1f}",
            "",
            f"{results['ratios']['average_cpu']:.2f}",
        ),
        (
            f"peak RSS, MiB ({memory['records'][0]:,} / {memory['records'][1]:,})",
            f"{memory['peak_rss_mib'][0]:.1f} / {memory['peak_rss_mib'][1]:.1f}",
            f"- / {memory['bare_peak_rss_mib']:.1f}",
            "",
            "",
        ),
        (
            f"latency at {latency['rate']:,.0f} records/s, median / p99 ms",
            f"{latency['median_ms']:.1f} / {latency['p99_ms']:.1f}",
            "",
            "",
            "",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.append("")
    for target in results["targets"]:
        verdict = "holds" if target["met"] else "DOES NOT HOLD"
        lines.append(
            f"{verdict:13}  {target['target']}: {target['value']:.2f} "
            f"(target {target['required']})"
        )
    return "\n".join(lines)


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Draw the gradelab / bare kafka-python ratios as a small bar chart (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = ["produce", "consume and average"]
    ratio = results["ratios"]
    throughput = [ratio["produce"], ratio["average"]]
    cpu = [1 / ratio["produce_cpu"], 1 / ratio["average_cpu"]]
    positions = [0.0, 1.0]
    figure, axes = plt.subplots(figsize=(7, 3.6), dpi=100)
    bars = axes.bar(
        [p - 0.18 for p in positions],
        throughput,
        width=0.36,
        label="records/s: gradelab / bare",
    )
    cpu_bars = axes.bar(
        [p + 0.18 for p in positions],
        cpu,
        width=0.36,
        label="CPU time per record: bare / gradelab",
    )
    axes.bar_label(bars, fmt="%.2f")
    axes.bar_label(cpu_bars, fmt="%.2f")
    axes.axhline(
        MIN_RATIO,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"target {MIN_RATIO}",
    )
    axes.set_xticks(positions, labels)
    axes.set_xlim(-0.55, 1.55)
    axes.set_ylim(0, max(1.15, *throughput, *cpu) * 1.1)
    axes.set_ylabel("ratio (1 = as fast as bare)")
    machine = results["machine"]
    axes.set_title(
        f"gradelab against bare kafka-python {machine['kafka_python']}, "
        f"{results['started'][:10]}",
        fontsize="medium",
    )
    axes.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize="small"
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# --- Command line -----------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected 1 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected a positive number"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the benchmark's argument parser."""
    parser = argparse.ArgumentParser(
        description="Benchmark gradelab against bare kafka-python and Kafka's "
        "Java tools on a running broker, print a table and write JSON.",
    )
    parser.add_argument(
        "--bootstrap-server",
        help="Kafka bootstrap servers (default: $GRADELAB_BOOTSTRAP_SERVERS or "
        "localhost:9092)",
    )
    parser.add_argument(
        "--records",
        type=_positive_int,
        help="records in the consume-and-average topic (default 1,000,000, or "
        "100,000 with --quick); the peak RSS is measured at a tenth of them and "
        "at all of them",
    )
    parser.add_argument(
        "--produce-records",
        type=_positive_int,
        help="records per Python produce run (default: --records / 10)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=3,
        help="runs of each Python measurement; the best counts (default 3)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=_positive_float,
        default=20.0,
        help="seconds of the steady-rate latency run (default 20)",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=1000.0,
        help="records per second in the latency run (default 1000)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100,000 records, one run of each measurement and 5 s of latency",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCHMARKS / "results.json",
        help="where to write the results as JSON (default benchmarks/results.json)",
    )
    parser.add_argument("--chart", type=Path, help="also draw the ratios to this PNG")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="print the table (and draw --chart) from saved results; run nothing",
    )
    parser.add_argument(
        "--notebooks",
        action="store_true",
        help="also time the course notebooks under papermill (needs `make kernel`)",
    )
    parser.add_argument(
        "--keep-topics",
        action="store_true",
        help="leave the benchmark topics on the broker instead of deleting them",
    )
    parser.add_argument(
        "--work-dir",
        default=os.environ.get("TMPDIR", "/tmp"),
        help="directory for the Java producer's payload file (default $TMPDIR)",
    )
    # One measurement in this process; the run starts these as child processes.
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, a worker or a report, and return the exit status."""
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.worker:
        print(json.dumps(WORKERS[options.worker](options)), flush=True)
        return 0
    if options.report:
        results = json.loads(options.report.read_text(encoding="utf-8"))
    else:
        if options.quick:
            options.repeat = 1
            options.latency_seconds = 5.0
        if options.records is None:
            options.records = 100_000 if options.quick else 1_000_000
        if options.produce_records is None:
            options.produce_records = max(1, options.records // 10)
        results = run_benchmark(options)
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
        _progress(f"Wrote {options.output}")
    if options.chart:
        write_chart(results, options.chart)
        _progress(f"Wrote {options.chart}")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
