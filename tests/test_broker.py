"""Tests for gradelab.broker, against real Kafka JVMs on free loopback ports.

Each broker kind (single node, 3-node cluster, single node with SASL) starts
once per module in its own temporary state directory, away from the shared
broker on port 9092. The jars come from the default gradelab home, so only
the first run downloads them.
"""

from __future__ import annotations

import random
import secrets
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from gradelab import broker
from gradelab._broker_credentials import prepare_passwords
from gradelab._broker_processes import is_alive, port_in_use, process_command_line
from gradelab.config import Settings
from gradelab.errors import (
    AuthenticationFailedError,
    BrokerUnavailableError,
    ConfigError,
    LocalBrokerError,
)

RECORD_COUNT = 20_000


def _free_base_port(nodes: int) -> int:
    """Return a port whose client and controller ports are all free."""
    for _ in range(200):
        port = random.randrange(20_000, 30_000)
        ports = [port + i for i in range(nodes)]
        ports += [p + broker.CONTROLLER_PORT_OFFSET for p in ports]
        if not any(port_in_use(p) for p in ports):
            return port
    raise RuntimeError("No free loopback ports between 20000 and 30100.")


def _read_properties(path: Path) -> dict[str, str]:
    properties = {}
    for line in path.read_text("utf-8").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            properties[key] = value
    return properties


def _start_or_fail(**arguments: object) -> broker.BrokerInfo:
    try:
        return broker.start(**arguments)
    except Exception:
        broker.stop(arguments["state_dir"])
        raise


def _consume_values(topic: str, count: int, **options: object) -> list[bytes]:
    """Read ``count`` values of ``topic`` from the beginning, within 30 seconds."""
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", **options)
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            values += [record.value for record in records]
    consumer.close()
    return values


@pytest.fixture(scope="module")
def single_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Start a single-node broker for this module and yield its state directory."""
    state_dir = tmp_path_factory.mktemp("single-node")
    _start_or_fail(port=_free_base_port(1), state_dir=state_dir)
    yield state_dir
    broker.stop(state_dir)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Start a 3-node cluster for this module and yield its state directory."""
    state_dir = tmp_path_factory.mktemp("cluster")
    _start_or_fail(nodes=3, port=_free_base_port(3), state_dir=state_dir)
    yield state_dir
    broker.stop(state_dir)


@pytest.fixture(scope="module")
def sasl_password() -> str:
    return f"Lab-{secrets.token_hex(8)}-pass"


@pytest.fixture(scope="module")
def secured_node(
    tmp_path_factory: pytest.TempPathFactory, sasl_password: str
) -> Iterator[Path]:
    """Start a single node that requires SCRAM and yield its state directory."""
    state_dir = tmp_path_factory.mktemp("secured-node")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADELAB_SASL_PASSWORD", sasl_password)
        _start_or_fail(auth=True, port=_free_base_port(1), state_dir=state_dir)
    yield state_dir
    broker.stop(state_dir)


def _secured_settings(state_dir: Path) -> Settings:
    environ = {"GRADELAB_CREDENTIALS_FILE": str(state_dir / "credentials.env")}
    bootstrap_servers = broker.status(state_dir).bootstrap_servers
    return Settings.load(environ=environ, bootstrap_servers=bootstrap_servers)


# --- Installation and pure checks --------------------------------------------


def test_gradelab_home_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADELAB_HOME", str(tmp_path))
    assert broker.gradelab_home() == tmp_path


def test_gradelab_home_in_checkout(monkeypatch):
    monkeypatch.delenv("GRADELAB_HOME", raising=False)
    repository = Path(broker.__file__).resolve().parent.parent
    assert broker.gradelab_home() == repository / ".gradelab"


def test_install_names_missing_java_and_maven(monkeypatch, tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalBrokerError) as error:
        broker.install(home=tmp_path / "home")
    message = str(error.value)
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "apt-get install maven" in message
    assert not (tmp_path / "home" / "kafka-4.1.1" / "libs").exists()


def test_install_names_only_missing_maven(monkeypatch, tmp_path):
    java_bin = tmp_path / "bin"
    java_bin.mkdir()
    (java_bin / "java").symlink_to(shutil.which("java"))
    monkeypatch.setenv("PATH", str(java_bin))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalBrokerError) as error:
        broker.install(home=tmp_path / "home")
    message = str(error.value)
    assert "apt-get install maven" in message
    assert "openjdk" not in message


def test_install_redoes_unfinished_download(monkeypatch, tmp_path):
    # Jars without the marker file are what an interrupted Maven run leaves.
    libs = tmp_path / "kafka-4.1.1" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-4.1.1.jar").write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalBrokerError, match="mvn"):
        broker.install(home=tmp_path)


def test_install_reuses_complete_download():
    libs = broker.install()
    started = time.monotonic()
    assert broker.install() == libs
    assert time.monotonic() - started < 1.0
    assert (libs.parent / "installed.json").is_file()
    assert (libs / "kafka-tools-4.1.1.jar").is_file()


def test_tool_command_runs_producer_performance():
    command = broker.tool_command("org.apache.kafka.tools.ProducerPerformance", "-h")
    assert command[1:3] == ["-cp", str(broker.install() / "*")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert "usage: producer-performance" in result.stdout + result.stderr


def test_start_rejects_unsupported_node_count(tmp_path):
    with pytest.raises(ConfigError, match="Invalid node count 2"):
        broker.start(nodes=2, state_dir=tmp_path)


def test_start_rejects_invalid_username(tmp_path):
    with pytest.raises(ConfigError, match="Invalid SASL user name"):
        broker.start(auth=True, username="a,b", state_dir=tmp_path)


def test_start_busy_client_port(tmp_path):
    port = _free_base_port(1)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        with pytest.raises(LocalBrokerError) as error:
            broker.start(port=port, state_dir=tmp_path)
    message = str(error.value)
    assert f"Port {port} " in message
    assert "client listener" in message
    assert "--port" in message


def test_start_busy_controller_port(tmp_path):
    port = _free_base_port(1)
    controller_port = port + broker.CONTROLLER_PORT_OFFSET
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", controller_port))
        blocker.listen()
        with pytest.raises(LocalBrokerError) as error:
            broker.start(port=port, state_dir=tmp_path)
    assert f"Port {controller_port} " in str(error.value)
    assert "controller listener" in str(error.value)


def test_start_rejects_other_layout_when_stopped(tmp_path):
    port = _free_base_port(1)
    (tmp_path / "state.json").write_text(
        '{"cluster_id": "AAAAAAAAAAAAAAAAAAAAAA", "nodes": 1, "auth": false, '
        f'"username": null, "port": {port}, "pids": {{}}}}'
    )
    with pytest.raises(LocalBrokerError) as error:
        broker.start(nodes=3, port=port, state_dir=tmp_path)
    assert "contains a single node without authentication" in str(error.value)
    assert "a 3-node cluster without authentication" in str(error.value)


def test_stop_without_broker_returns_empty(tmp_path):
    assert broker.stop(tmp_path) == []


def test_status_without_broker(tmp_path):
    status = broker.status(tmp_path)
    assert not status.running
    assert not status.answering
    assert status.bootstrap_servers is None


def test_wait_until_ready_times_out_without_broker():
    port = _free_base_port(1)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as error:
        broker.wait_until_ready(f"localhost:{port}", timeout=1.0)
    assert time.monotonic() - started < 3
    assert f"localhost:{port}" in str(error.value)
    assert "no TCP connection within 1 s" in str(error.value)


def test_wait_until_ready_rejects_unknown_option():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ConfigError, match="Invalid Kafka client options"):
            broker.wait_until_ready(f"127.0.0.1:{port}", timeout=5, acks="all")


def test_prepare_passwords_generates_private_file(monkeypatch, tmp_path):
    monkeypatch.delenv("GRADELAB_SASL_PASSWORD", raising=False)
    password, inter_broker_password = prepare_passwords(tmp_path, "student")
    credentials = tmp_path / "credentials.env"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    lines = credentials.read_text().splitlines()
    assert "GRADELAB_SECURITY_PROTOCOL=SASL_PLAINTEXT" in lines
    assert "GRADELAB_SASL_MECHANISM=SCRAM-SHA-256" in lines
    assert "GRADELAB_SASL_USERNAME=student" in lines
    assert f"GRADELAB_SASL_PASSWORD={password}" in lines
    assert len(password) >= 20
    assert password != inter_broker_password
    assert prepare_passwords(tmp_path, "student") == (password, inter_broker_password)


def test_prepare_passwords_rejects_changed_password(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADELAB_SASL_PASSWORD", "first-password")
    prepare_passwords(tmp_path, "student")
    monkeypatch.setenv("GRADELAB_SASL_PASSWORD", "second-password")
    with pytest.raises(LocalBrokerError) as error:
        prepare_passwords(tmp_path, "student")
    assert "GRADELAB_SASL_PASSWORD differs" in str(error.value)
    assert "second-password" not in str(error.value)


def test_prepare_passwords_rejects_unstorable_password(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADELAB_SASL_PASSWORD", '"quoted"')
    with pytest.raises(ConfigError, match="cannot be stored"):
        prepare_passwords(tmp_path, "student")


# --- Single node --------------------------------------------------------------


@pytest.mark.slow
def test_start_stop_lifecycle(single_node):
    first = broker.status(single_node)
    assert first.running
    assert first.answering
    assert first.nodes == 1
    assert len(first.pids) == 1
    port = int(first.bootstrap_servers.rpartition(":")[2])

    again = broker.start(port=port, state_dir=single_node)
    assert again.already_running
    assert again.pids == first.pids
    assert again.bootstrap_servers == first.bootstrap_servers

    producer = KafkaProducer(bootstrap_servers=first.bootstrap_servers)
    producer.send("lifecycle", b"kept across restarts").get(timeout=30)
    producer.close()

    started = time.monotonic()
    assert broker.stop(single_node) == list(first.pids)
    assert not is_alive(first.pids[0])
    assert time.monotonic() - started < 30
    stopped = broker.status(single_node)
    assert not stopped.running
    assert not stopped.answering
    assert broker.stop(single_node) == []

    restarted = broker.start(port=port, state_dir=single_node)
    assert not restarted.already_running
    assert restarted.pids != first.pids
    values = _consume_values(
        "lifecycle", 1, bootstrap_servers=restarted.bootstrap_servers
    )
    assert values == [b"kept across restarts"]


@pytest.mark.slow
def test_start_while_running_rejects_other_layout(single_node):
    with pytest.raises(LocalBrokerError, match="Stop it first"):
        broker.start(nodes=3, state_dir=single_node)


@pytest.mark.slow
def test_single_node_properties(single_node):
    status = broker.status(single_node)
    port = int(status.bootstrap_servers.rpartition(":")[2])
    path = single_node / "config" / "server-1.properties"
    properties = _read_properties(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert properties["process.roles"] == "broker,controller"
    assert properties["node.id"] == "1"
    assert properties["controller.quorum.voters"] == f"1@localhost:{port + 100}"
    assert properties["listeners"] == (
        f"CLIENT://localhost:{port},CONTROLLER://localhost:{port + 100}"
    )
    assert properties["advertised.listeners"] == f"CLIENT://localhost:{port}"
    assert properties["listener.security.protocol.map"] == (
        "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    )
    assert properties["num.partitions"] == "3"
    assert properties["default.replication.factor"] == "1"
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["transaction.state.log.replication.factor"] == "1"
    assert properties["group.initial.rebalance.delay.ms"] == "0"
    assert properties["auto.create.topics.enable"] == "true"
    assert properties["log.dirs"] == str(single_node / "data" / "node-1")
    assert "sasl.enabled.mechanisms" not in properties


@pytest.mark.slow
def test_single_node_writes_broker_log(single_node):
    log_file = broker.status(single_node).log_files[0]
    assert log_file == single_node / "logs" / "node-1.log"
    assert "Kafka Server started" in log_file.read_text()


@pytest.mark.slow
def test_auto_created_topic_has_three_partitions(single_node):
    bootstrap_servers = broker.status(single_node).bootstrap_servers
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers)
    producer.send("auto-created", b"x").get(timeout=30)
    partitions = producer.partitions_for("auto-created")
    producer.close()
    assert partitions == {0, 1, 2}


@pytest.mark.slow
def test_wait_until_ready_sasl_on_plaintext_listener(single_node):
    bootstrap_servers = broker.status(single_node).bootstrap_servers
    started = time.monotonic()
    with pytest.raises(AuthenticationFailedError) as error:
        broker.wait_until_ready(
            bootstrap_servers,
            timeout=30,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username="student",
            sasl_plain_password="secret",
        )
    assert time.monotonic() - started < 5
    assert "rejected the SASL handshake" in str(error.value)
    assert "GRADELAB_SECURITY_PROTOCOL" in str(error.value)


@pytest.mark.slow
def test_start_reports_jvm_exit(monkeypatch, tmp_path):
    monkeypatch.setattr(broker, "JVM_OPTIONS", ("-XX:+NoSuchGradelabOption",))
    port = _free_base_port(1)
    with pytest.raises(LocalBrokerError) as error:
        broker.start(port=port, state_dir=tmp_path, timeout=60)
    message = str(error.value)
    assert "exited during start" in message
    assert "Unrecognized VM option 'NoSuchGradelabOption'" in message
    assert str(tmp_path / "logs" / "node-1.out") in message
    assert not broker.status(tmp_path).running
    assert not port_in_use(port)


# --- 3-node cluster -----------------------------------------------------------


@pytest.mark.slow
def test_cluster_properties(cluster):
    status = broker.status(cluster)
    port = int(status.bootstrap_servers.split(",")[0].rpartition(":")[2])
    assert status.bootstrap_servers == (
        f"localhost:{port},localhost:{port + 1},localhost:{port + 2}"
    )
    voters = (
        f"1@localhost:{port + 100},2@localhost:{port + 101},3@localhost:{port + 102}"
    )
    for node_id in (1, 2, 3):
        properties = _read_properties(
            cluster / "config" / f"server-{node_id}.properties"
        )
        client_port = port + node_id - 1
        assert properties["node.id"] == str(node_id)
        assert properties["controller.quorum.voters"] == voters
        assert properties["listeners"] == (
            f"CLIENT://localhost:{client_port},"
            f"CONTROLLER://localhost:{client_port + 100}"
        )
        assert properties["advertised.listeners"] == f"CLIENT://localhost:{client_port}"
        assert properties["log.dirs"] == str(cluster / "data" / f"node-{node_id}")
        assert properties["default.replication.factor"] == "3"
        assert properties["min.insync.replicas"] == "2"
        assert properties["offsets.topic.replication.factor"] == "3"
        assert properties["transaction.state.log.replication.factor"] == "3"
        assert properties["transaction.state.log.min.isr"] == "2"


@pytest.mark.slow
def test_kill_node_rejects_unknown_node(cluster):
    with pytest.raises(ConfigError, match="nodes 1 to 3"):
        broker.kill_node(4, cluster)


def _partition_leader(bootstrap_servers: str, topic: str, partition: int) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        for _ in range(100):
            (description,) = admin.describe_topics([topic])
            for entry in description["partitions"]:
                ready = len(entry["isr_nodes"]) == 3 and entry["leader_id"] >= 0
                if entry["partition_index"] == partition and ready:
                    return entry["leader_id"]
            time.sleep(0.2)
    finally:
        admin.close()
    raise AssertionError(f"Partition {partition} of {topic} never had 3 in sync.")


def _read_all_values(bootstrap_servers: str, topic: str) -> list[bytes]:
    """Read every record of ``topic`` from the beginning, without a group."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False
    )
    partitions = [TopicPartition(topic, p) for p in range(3)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    end_offsets = consumer.end_offsets(partitions)
    values = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(consumer.position(p) >= end_offsets[p] for p in partitions):
            break
        for records in consumer.poll(timeout_ms=1000).values():
            values += [record.value for record in records]
    consumer.close()
    return values


@pytest.mark.slow
def test_cluster_keeps_acknowledged_records_when_leader_dies(cluster):
    status = broker.status(cluster)
    bootstrap_servers = status.bootstrap_servers
    topic = "failover"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])
    admin.close()
    leader = _partition_leader(bootstrap_servers, topic, partition=0)

    # A consumer group member reads throughout, to show it carries on.
    seen: set[int] = set()
    stop_reading = threading.Event()

    def read_in_group() -> None:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            group_id="failover-readers",
            auto_offset_reset="earliest",
        )
        while not stop_reading.is_set():
            for records in consumer.poll(timeout_ms=500).values():
                seen.update(int(record.value) for record in records)
        consumer.close()

    reader = threading.Thread(target=read_in_group, daemon=True)
    reader.start()

    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
    )
    futures = []
    killed_pid = None
    for record_id in range(RECORD_COUNT):
        if record_id == RECORD_COUNT // 2:
            killed_pid = broker.kill_node(leader, cluster)
        value = str(record_id).encode()
        futures.append(producer.send(topic, key=value[-2:], value=value))
    producer.flush(timeout=120)
    producer.close()
    acknowledged = {i for i, future in enumerate(futures) if future.succeeded()}

    assert killed_pid is not None
    assert not is_alive(killed_pid)
    assert len(broker.status(cluster).pids) == 2
    with pytest.raises(LocalBrokerError, match="is not running"):
        broker.kill_node(leader, cluster)
    assert len(acknowledged) == RECORD_COUNT

    stored = [int(value) for value in _read_all_values(bootstrap_servers, topic)]
    assert len(stored) == len(set(stored)), "the log contains duplicate records"
    assert acknowledged <= set(stored)

    deadline = time.monotonic() + 60
    while not acknowledged <= seen and time.monotonic() < deadline:
        time.sleep(0.5)
    stop_reading.set()
    reader.join(timeout=30)
    assert acknowledged <= seen, f"the group consumer missed {len(acknowledged - seen)}"

    broker.start_node(leader, cluster)
    restored = broker.status(cluster)
    assert len(restored.pids) == 3
    assert restored.answering


# --- SASL/SCRAM ---------------------------------------------------------------


@pytest.mark.slow
def test_secured_node_credentials_file(secured_node, sasl_password):
    credentials = secured_node / "credentials.env"
    status = broker.status(secured_node)
    assert status.auth
    assert status.answering
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    settings = _secured_settings(secured_node)
    assert settings.security_protocol == "SASL_PLAINTEXT"
    assert settings.sasl_mechanism == "SCRAM-SHA-256"
    assert settings.sasl_username == "gradelab"
    assert settings.sasl_password == sasl_password


@pytest.mark.slow
def test_secured_node_accepts_right_password(secured_node):
    options = _secured_settings(secured_node).kafka_options()
    producer = KafkaProducer(**options)
    producer.send("secured", b"authenticated").get(timeout=30)
    producer.close()
    assert _consume_values("secured", 1, **options) == [b"authenticated"]


@pytest.mark.slow
def test_secured_node_rejects_wrong_password_fast(secured_node):
    options = _secured_settings(secured_node).kafka_options()
    bootstrap_servers = ",".join(options.pop("bootstrap_servers"))
    options["sasl_plain_password"] = "not-the-password"
    started = time.monotonic()
    with pytest.raises(AuthenticationFailedError) as error:
        broker.wait_until_ready(bootstrap_servers, timeout=60, **options)
    assert time.monotonic() - started < 5
    assert "rejected the SCRAM-SHA-256 credentials of user 'gradelab'" in str(
        error.value
    )
    assert "not-the-password" not in str(error.value)


@pytest.mark.slow
def test_secured_node_rejects_plaintext_client(secured_node):
    bootstrap_servers = broker.status(secured_node).bootstrap_servers
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError):
        broker.wait_until_ready(bootstrap_servers, timeout=3)
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_secured_node_keeps_password_out_of_logs(secured_node, sasl_password):
    secret_file = secured_node / "inter-broker.secret"
    inter_broker_password = secret_file.read_text().strip()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    for path in secured_node.rglob("*"):
        if path.is_dir() or path.name == "credentials.env":
            continue
        content = path.read_bytes()
        assert sasl_password.encode() not in content, path
        if path.name != "inter-broker.secret" and path.suffix != ".properties":
            assert inter_broker_password.encode() not in content, path
    for pid in broker.status(secured_node).pids:
        command_line = process_command_line(pid)
        assert command_line is not None
        assert sasl_password not in command_line
        environment = Path(f"/proc/{pid}/environ")
        if environment.exists():
            assert sasl_password.encode() not in environment.read_bytes()


@pytest.mark.slow
def test_secured_node_restart_reuses_password(secured_node, monkeypatch):
    status = broker.status(secured_node)
    port = int(status.bootstrap_servers.rpartition(":")[2])
    broker.stop(secured_node)
    try:
        monkeypatch.setenv("GRADELAB_SASL_PASSWORD", "another-password")
        with pytest.raises(LocalBrokerError, match="GRADELAB_SASL_PASSWORD differs"):
            broker.start(auth=True, port=port, state_dir=secured_node)
        assert not broker.status(secured_node).running
    finally:
        monkeypatch.delenv("GRADELAB_SASL_PASSWORD")
        info = broker.start(auth=True, port=port, state_dir=secured_node)
    assert not info.already_running
    assert info.credentials_file == secured_node / "credentials.env"
    options = _secured_settings(secured_node).kafka_options()
    bootstrap_servers = ",".join(options.pop("bootstrap_servers"))
    broker.wait_until_ready(bootstrap_servers, timeout=30, **options)
