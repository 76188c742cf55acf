"""Configuration files of the local broker: server properties and log4j2.

Node ``n`` (numbered from 1) of a cluster whose first client port is ``port``
listens for clients on ``localhost:port + n - 1`` and for the controller
quorum on ``localhost:port + 100 + n - 1``. :mod:`gradelab.broker` decides
where the files go and when they are rewritten.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from gradelab._kafka_install import KAFKA_VERSION

__all__ = [
    "CONTROLLER_PORT_OFFSET",
    "INTER_BROKER_USERNAME",
    "SCRAM_MECHANISM",
    "client_port",
    "controller_port",
    "log4j_config",
    "scram_argument",
    "server_properties",
    "write_private_file",
    "write_properties",
]

CONTROLLER_PORT_OFFSET = 100
SCRAM_MECHANISM = "SCRAM-SHA-256"
SCRAM_ITERATIONS = 8192
# The brokers authenticate to each other as this SCRAM user, so the student's
# password is stored only in credentials.env and never in a server config.
INTER_BROKER_USERNAME = "gradelab-broker"


def client_port(port: int, node_id: int) -> int:
    """Return the client port of node ``node_id`` when node 1 uses ``port``."""
    return port + node_id - 1


def controller_port(port: int, node_id: int) -> int:
    """Return the controller port of node ``node_id`` when node 1 uses ``port``."""
    return port + CONTROLLER_PORT_OFFSET + node_id - 1


def server_properties(
    *,
    node_id: int,
    nodes: int,
    port: int,
    auth: bool,
    data_dir: Path,
    inter_broker_password: str = "",
) -> dict[str, str]:
    """Build the server properties of one combined broker+controller node.

    Every node is a voter of a static controller quorum. Topics get 3
    partitions and a replication factor of ``min(nodes, 3)``. With 3 replicas,
    a write with ``acks=all`` needs 2 of them in sync.
    """
    replication = min(nodes, 3)
    min_insync = 2 if replication >= 3 else 1
    node_ids = range(1, nodes + 1)
    voters = ",".join(f"{n}@localhost:{controller_port(port, n)}" for n in node_ids)
    client_protocol = "SASL_PLAINTEXT" if auth else "PLAINTEXT"
    own_client_port = client_port(port, node_id)
    properties = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": (
            f"CLIENT://localhost:{own_client_port},"
            f"CONTROLLER://localhost:{controller_port(port, node_id)}"
        ),
        "advertised.listeners": f"CLIENT://localhost:{own_client_port}",
        "listener.security.protocol.map": (
            f"CLIENT:{client_protocol},CONTROLLER:PLAINTEXT"
        ),
        "inter.broker.listener.name": "CLIENT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(data_dir),
        "num.partitions": "3",
        "default.replication.factor": str(replication),
        "min.insync.replicas": str(min_insync),
        "offsets.topic.replication.factor": str(replication),
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_insync),
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_insync),
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
    }
    if nodes > 1:
        # The controller fences a broker that misses heartbeats for this long
        # (Kafka's default is 9 s), so a killed node's partitions get new
        # leaders within about 3 s.
        properties["broker.heartbeat.interval.ms"] = "500"
        properties["broker.session.timeout.ms"] = "3000"
    if auth:
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{INTER_BROKER_USERNAME}" password="{inter_broker_password}";'
        )
        properties.update(
            {
                "sasl.enabled.mechanisms": SCRAM_MECHANISM,
                "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
                "listener.name.client.scram-sha-256.sasl.jaas.config": jaas,
            }
        )
    return properties


def _escape_property(value: str) -> str:
    """Escape a value for java.util.Properties, which reads files as Latin-1."""
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n")
    if escaped.startswith(" "):
        escaped = "\\" + escaped
    characters = []
    for char in escaped:
        if ord(char) < 128:
            characters.append(char)
            continue
        # Characters outside the BMP become a UTF-16 surrogate pair.
        units = char.encode("utf-16-be")
        for index in range(0, len(units), 2):
            characters.append(f"\\u{units[index]:02x}{units[index + 1]:02x}")
    return "".join(characters)


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable only by its owner from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        # O_CREAT applies the mode only to a new file.
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def write_properties(path: Path, properties: dict[str, str]) -> None:
    """Write a Java properties file, owner-only because it may contain a password."""
    lines = [f"# Written by gradelab for Kafka {KAFKA_VERSION}, rewritten on start."]
    lines += [f"{key}={_escape_property(value)}" for key, value in properties.items()]
    write_private_file(path, "\n".join(lines) + "\n")


def log4j_config(level: str, to_file: bool) -> str:
    """Build a log4j2 properties config.

    With ``to_file`` the log goes to the file named by the JVM system property
    ``gradelab.log.file``, rolled over at 10 MB with 3 old files kept.
    Otherwise it goes to stderr, which suits the short-lived storage tool.
    """
    if to_file:
        appender = [
            "appender.main.type = RollingFile",
            "appender.main.fileName = ${sys:gradelab.log.file}",
            "appender.main.filePattern = ${sys:gradelab.log.file}.%i",
            "appender.main.policies.type = Policies",
            "appender.main.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.main.policies.size.size = 10MB",
            "appender.main.strategy.type = DefaultRolloverStrategy",
            "appender.main.strategy.max = 3",
        ]
    else:
        appender = ["appender.main.type = Console", "appender.main.target = SYSTEM_ERR"]
    lines = [
        "status = warn",
        *appender,
        "appender.main.name = main",
        "appender.main.layout.type = PatternLayout",
        "appender.main.layout.pattern = [%d] %p %m (%c)%n",
        f"rootLogger.level = {level}",
        "rootLogger.appenderRef.main.ref = main",
        "logger.request.name = kafka.request.logger",
        "logger.request.level = WARN",
        "",
    ]
    return "\n".join(lines)


def scram_argument(username: str, password: str) -> str:
    """Build a storage tool ``--add-scram`` value with a salted password.

    Kafka stores Hi(password, salt, i) from RFC 5802, which is PBKDF2 with
    HMAC-SHA-256 over the UTF-8 password. Passing it precomputed keeps the
    clear password off the storage tool's command line.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode("utf-8"), salt, SCRAM_ITERATIONS
    )
    return (
        f"{SCRAM_MECHANISM}=[name={username},iterations={SCRAM_ITERATIONS},"
        f'salt="{base64.b64encode(salt).decode()}",'
        f'saltedpassword="{base64.b64encode(salted).decode()}"]'
    )
