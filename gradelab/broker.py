"""The project's own Apache Kafka broker, run without Docker.

:func:`install` downloads the Kafka jars with Maven once. :func:`start` runs one
node or a 3-node cluster of combined broker+controller JVMs in KRaft mode,
detached from the caller, and returns once the brokers answer a metadata
request. Configuration, data, logs and process ids live in a state directory,
``<home>/broker`` by default.

Node ``n`` (numbered from 1) listens for clients on ``localhost:port + n - 1``
and for the controller quorum on ``localhost:port + 100 + n - 1``. With the
default port the single node uses 9092 and 9192, and a 3-node cluster uses
9092-9094 and 9192-9194.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradelab.config import Settings
from gradelab.errors import (
    AuthenticationFailedError,
    BrokerUnavailableError,
    ConfigError,
    LocalBrokerError,
)

__all__ = [
    "CONTROLLER_PORT_OFFSET",
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "BrokerInfo",
    "BrokerStatus",
    "gradelab_home",
    "install",
    "kill_node",
    "start",
    "start_node",
    "status",
    "stop",
    "tool_command",
    "wait_until_ready",
]

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
# Kafka 4.1 logs through SLF4J 1.7, so the log4j2 binding is the SLF4J 1.x one
# (log4j-slf4j-impl); the SLF4J 2 binding would leave the broker without logs.
LOG4J_VERSION = "2.24.3"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA_VERSION = 17
DEFAULT_PORT = 9092
CONTROLLER_PORT_OFFSET = 100
SUPPORTED_NODE_COUNTS = (1, 3)
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
SCRAM_MECHANISM = "SCRAM-SHA-256"
SCRAM_ITERATIONS = 8192
# The brokers authenticate to each other as this SCRAM user, so the student's
# password is stored only in credentials.env and never in a server config.
INTER_BROKER_USERNAME = "gradelab-broker"
PASSWORD_VARIABLE = "GRADELAB_SASL_PASSWORD"
STATUS_TIMEOUT = 5.0

STATE_FILE = "state.json"
CREDENTIALS_FILE = "credentials.env"
INTER_BROKER_SECRET_FILE = "inter-broker.secret"
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class BrokerInfo:
    """The broker that :func:`start` started or found running.

    Attributes
    ----------
    bootstrap_servers : str
        Comma-separated ``host:port`` list of every node's client listener.
    nodes : int
        Number of nodes in the cluster.
    auth : bool
        True when clients must authenticate with SASL/SCRAM-SHA-256.
    pids : tuple of int
        Process ids of the running node JVMs, in node order.
    log_files : tuple of pathlib.Path
        The broker log of each node, in node order.
    already_running : bool
        True when the broker was already answering and nothing was started.
    credentials_file : pathlib.Path or None
        The ``credentials.env`` file for clients when ``auth`` is true.
    """

    bootstrap_servers: str
    nodes: int
    auth: bool
    pids: tuple[int, ...]
    log_files: tuple[Path, ...]
    already_running: bool
    credentials_file: Path | None


@dataclass(frozen=True)
class BrokerStatus:
    """The state of the broker of one state directory, as :func:`status` found it.

    Attributes
    ----------
    running : bool
        True when at least one node JVM is alive.
    answering : bool
        True when the brokers answered a metadata request with every node.
    bootstrap_servers : str or None
        The bootstrap servers, or None when the state directory holds no broker.
    nodes : int
        Number of nodes the cluster was created with (0 when there is none).
    auth : bool
        True when clients must authenticate with SASL/SCRAM-SHA-256.
    pids : tuple of int
        Process ids of the node JVMs that are alive.
    log_files : tuple of pathlib.Path
        The broker log of each node.
    """

    running: bool
    answering: bool
    bootstrap_servers: str | None
    nodes: int
    auth: bool
    pids: tuple[int, ...]
    log_files: tuple[Path, ...]


@dataclass(frozen=True)
class _ClusterState:
    """The contents of ``state.json``: the cluster layout and its live pids."""

    cluster_id: str
    nodes: int
    auth: bool
    username: str | None
    port: int
    pids: dict[int, int]
    kafka_version: str = KAFKA_VERSION

    @property
    def node_ids(self) -> range:
        return range(1, self.nodes + 1)

    def client_port(self, node_id: int) -> int:
        return self.port + node_id - 1

    def controller_port(self, node_id: int) -> int:
        return self.port + CONTROLLER_PORT_OFFSET + node_id - 1

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"localhost:{self.client_port(n)}" for n in self.node_ids)


# --- Locations ---------------------------------------------------------------


def gradelab_home() -> Path:
    """Return the directory for gradelab's jars and broker state.

    The ``GRADELAB_HOME`` environment variable wins. In a source checkout
    (an editable install) it is ``.gradelab`` at the repository root, and
    otherwise ``~/.cache/gradelab``.
    """
    configured = os.environ.get("GRADELAB_HOME")
    if configured:
        return Path(configured).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    pyproject = checkout / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text(encoding="utf-8", errors="replace")
        if re.search(r'^name\s*=\s*"gradelab"', text, re.MULTILINE):
            return checkout / ".gradelab"
    return Path.home() / ".cache" / "gradelab"


def _state_dir(state_dir: str | os.PathLike[str] | None) -> Path:
    if state_dir is None:
        return gradelab_home() / "broker"
    return Path(state_dir).expanduser().resolve()


def _node_log_file(state_dir: Path, node_id: int) -> Path:
    return state_dir / "logs" / f"node-{node_id}.log"


def _node_output_file(state_dir: Path, node_id: int) -> Path:
    return state_dir / "logs" / f"node-{node_id}.out"


def _properties_file(state_dir: Path, node_id: int) -> Path:
    return state_dir / "config" / f"server-{node_id}.properties"


def _data_dir(state_dir: Path, node_id: int) -> Path:
    return state_dir / "data" / f"node-{node_id}"


# --- Installing the jars -----------------------------------------------------


def _find_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def _java_major_version(java: str) -> int | None:
    result = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def _require_java() -> str:
    """Return the java executable, or raise if it is missing or older than 17."""
    java = _find_java()
    if java is None:
        raise LocalBrokerError(
            f"Java {MIN_JAVA_VERSION} or newer is required to run Kafka, but no "
            "`java` was found on PATH or in JAVA_HOME. Install it with "
            "`sudo apt-get install openjdk-17-jre-headless` (Debian/Ubuntu) or "
            "`brew install openjdk@17` (macOS)."
        )
    version = _java_major_version(java)
    if version is None or version < MIN_JAVA_VERSION:
        found = "an unknown version" if version is None else f"Java {version}"
        raise LocalBrokerError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_VERSION} or newer, but "
            f"{java} is {found}. Install a newer Java (`sudo apt-get install "
            "openjdk-17-jre-headless`) and put it first on PATH or set JAVA_HOME."
        )
    return java


def _require_build_tools() -> tuple[str, str]:
    """Return the java and mvn executables, naming every missing one at once."""
    java = _find_java()
    mvn = shutil.which("mvn")
    missing = []
    if java is None:
        missing.append(
            f"Java {MIN_JAVA_VERSION} or newer (`java`): install it with "
            "`sudo apt-get install openjdk-17-jre-headless` (Debian/Ubuntu) or "
            "`brew install openjdk@17` (macOS)"
        )
    if mvn is None:
        missing.append(
            "Maven (`mvn`): install it with `sudo apt-get install maven` "
            "(Debian/Ubuntu) or `brew install maven` (macOS)"
        )
    if missing:
        raise LocalBrokerError(
            "Installing the local Kafka broker needs tools that are not on PATH. "
            + ". ".join(f"Missing {item}" for item in missing)
            + ". Then run the command again."
        )
    return _require_java(), mvn


def _maven_pom() -> str:
    dependencies = [
        ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
        ("org.apache.kafka", "kafka-tools", KAFKA_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ]
    lines = [
        '<project xmlns="http://maven.apache.org/POM/4.0.0">',
        "  <modelVersion>4.0.0</modelVersion>",
        "  <groupId>lab.gradelab</groupId>",
        "  <artifactId>kafka-runtime</artifactId>",
        f"  <version>{KAFKA_VERSION}</version>",
        "  <packaging>pom</packaging>",
        "  <dependencies>",
    ]
    for group_id, artifact_id, version in dependencies:
        lines += [
            "    <dependency>",
            f"      <groupId>{group_id}</groupId>",
            f"      <artifactId>{artifact_id}</artifactId>",
            f"      <version>{version}</version>",
            "    </dependency>",
        ]
    lines += ["  </dependencies>", "</project>", ""]
    return "\n".join(lines)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so concurrent processes take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _installed_libs(kafka_dir: Path) -> Path | None:
    """Return the libs folder if a previous install completed, else None."""
    libs = kafka_dir / "libs"
    try:
        marker = json.loads((kafka_dir / "installed.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    jars = marker.get("jars", [])
    if not jars or not all((libs / jar).is_file() for jar in jars):
        return None
    return libs


def install(home: str | os.PathLike[str] | None = None) -> Path:
    """Download the Kafka jars with Maven, once, and return their folder.

    The jars go to ``<home>/kafka-4.1.1/libs``. A marker file is written only
    after Maven copied every jar, so an interrupted download is repeated on
    the next call and a complete one is reused.

    Parameters
    ----------
    home : path-like, optional
        The gradelab home; defaults to :func:`gradelab_home`.

    Returns
    -------
    pathlib.Path
        The folder that contains the jars.

    Raises
    ------
    LocalBrokerError
        If ``java`` (17 or newer) or ``mvn`` is missing, or Maven fails.
    """
    home = gradelab_home() if home is None else Path(home).expanduser()
    kafka_dir = home / f"kafka-{KAFKA_VERSION}"
    libs = _installed_libs(kafka_dir)
    if libs is not None:
        return libs
    _, mvn = _require_build_tools()
    with _file_lock(kafka_dir / "install.lock"):
        # Another process may have finished the install while this one waited.
        libs = _installed_libs(kafka_dir)
        if libs is not None:
            return libs
        return _run_maven(mvn, kafka_dir)


def _run_maven(mvn: str, kafka_dir: Path) -> Path:
    libs = kafka_dir / "libs"
    partial = kafka_dir / "libs.partial"
    maven_log = kafka_dir / "maven.log"
    shutil.rmtree(partial, ignore_errors=True)
    (kafka_dir / "pom.xml").write_text(_maven_pom(), encoding="utf-8")
    command = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(kafka_dir / "pom.xml"),
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    log.info("Downloading the Kafka %s jars with Maven into %s", KAFKA_VERSION, libs)
    started = time.monotonic()
    with open(maven_log, "w", encoding="utf-8") as output:
        try:
            result = subprocess.run(
                command,
                cwd=kafka_dir,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=900,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalBrokerError(
                f"Maven did not finish downloading the Kafka {KAFKA_VERSION} jars "
                "within 15 minutes. Check the connection to Maven Central (or the "
                "proxy in ~/.m2/settings.xml) and run the command again.",
                log_file=maven_log,
            ) from exc
    if result.returncode != 0:
        errors = [
            line.strip()
            for line in maven_log.read_text("utf-8", errors="replace").splitlines()
            if "ERROR" in line
        ]
        detail = " ".join(errors[:3]) or f"exit code {result.returncode}"
        raise LocalBrokerError(
            f"Maven failed to download the Kafka {KAFKA_VERSION} jars ({detail}). "
            "Check the connection to Maven Central (or the proxy in "
            "~/.m2/settings.xml) and run the command again.",
            log_file=maven_log,
        )
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    jars = sorted(path.name for path in libs.glob("*.jar"))
    marker = {"kafka_version": KAFKA_VERSION, "jars": jars}
    (kafka_dir / "installed.json").write_text(json.dumps(marker, indent=2), "utf-8")
    log.info(
        "Installed %d jars for Kafka %s in %.1f s",
        len(jars),
        KAFKA_VERSION,
        time.monotonic() - started,
    )
    return libs


def tool_command(
    main_class: str, *args: str, home: str | os.PathLike[str] | None = None
) -> list[str]:
    """Build the command line that runs one of Kafka's Java tools.

    Parameters
    ----------
    main_class : str
        The tool's main class, for example
        ``org.apache.kafka.tools.ProducerPerformance``.
    *args : str
        Arguments for the tool.
    home : path-like, optional
        The gradelab home; defaults to :func:`gradelab_home`.

    Returns
    -------
    list of str
        ``[java, "-cp", "<libs>/*", main_class, *args]``, where ``java`` is the
        absolute path of the Java executable. The jars are installed first if
        needed.
    """
    libs = install(home)
    return [_require_java(), "-cp", str(libs / "*"), main_class, *args]


# --- Configuration files -----------------------------------------------------


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


def _write_properties(path: Path, properties: dict[str, str]) -> None:
    lines = [f"# Written by gradelab for Kafka {KAFKA_VERSION}, rewritten on start."]
    lines += [f"{key}={_escape_property(value)}" for key, value in properties.items()]
    # Owner-only, because with authentication it holds the brokers' password.
    _write_private_file(path, "\n".join(lines) + "\n")


def _write_private_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` with permissions ``mode`` from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(text)


def _server_properties(
    state_dir: Path, state: _ClusterState, node_id: int, inter_broker_password: str
) -> dict[str, str]:
    """Build the server properties of one combined broker+controller node."""
    replication = min(state.nodes, 3)
    min_insync = 2 if replication >= 3 else 1
    voters = ",".join(
        f"{n}@localhost:{state.controller_port(n)}" for n in state.node_ids
    )
    client_protocol = "SASL_PLAINTEXT" if state.auth else "PLAINTEXT"
    properties = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": (
            f"CLIENT://localhost:{state.client_port(node_id)},"
            f"CONTROLLER://localhost:{state.controller_port(node_id)}"
        ),
        "advertised.listeners": f"CLIENT://localhost:{state.client_port(node_id)}",
        "listener.security.protocol.map": (
            f"CLIENT:{client_protocol},CONTROLLER:PLAINTEXT"
        ),
        "inter.broker.listener.name": "CLIENT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(_data_dir(state_dir, node_id)),
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
    if state.nodes > 1:
        # The controller fences a broker that misses heartbeats for this long
        # (default 9 s), so a killed node's partitions get new leaders sooner.
        properties["broker.heartbeat.interval.ms"] = "500"
        properties["broker.session.timeout.ms"] = "3000"
    if state.auth:
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


def _log4j_config(level: str, to_file: bool) -> str:
    """Build a log4j2 properties config for the broker (file) or a tool (stderr)."""
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


# --- SCRAM credentials -------------------------------------------------------


def _check_username(username: str) -> None:
    if not USERNAME_PATTERN.fullmatch(username):
        raise ConfigError(
            f"Invalid SASL user name {username!r}: use letters, digits, '.', '_' "
            "and '-', starting with a letter or digit."
        )
    if username == INTER_BROKER_USERNAME:
        raise ConfigError(
            f"The SASL user name {username!r} is reserved for the brokers "
            "themselves. Choose another user name."
        )


def _student_password() -> str:
    """Return the password from GRADELAB_SASL_PASSWORD, or generate one."""
    password = os.environ.get(PASSWORD_VARIABLE)
    if not password:
        return secrets.token_urlsafe(18)
    # credentials.env is read line by line with surrounding quotes and spaces
    # stripped, so such passwords would not survive the round trip.
    if (
        password != password.strip()
        or password[0] in "'\""
        or password[-1] in "'\""
        or any(ord(char) < 32 or ord(char) == 127 for char in password)
    ):
        raise ConfigError(
            f"The password in {PASSWORD_VARIABLE} cannot be stored in "
            "credentials.env: it starts or ends with a space or a quote, or it "
            "contains a control character. Choose another password."
        )
    return password


def _scram_argument(username: str, password: str) -> str:
    """Build a ``--add-scram`` value with a salted password, not the clear one.

    Kafka stores Hi(password, salt, i) from RFC 5802, which is PBKDF2 with
    HMAC-SHA-256 over the UTF-8 password. Passing it precomputed keeps the
    password off the storage tool's command line.
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


def _read_credentials(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text("utf-8").splitlines():
        name, separator, value = line.partition("=")
        if separator and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def _write_credentials(path: Path, username: str, password: str) -> None:
    text = (
        "# SASL settings for the local gradelab broker. Point clients at this\n"
        "# file with GRADELAB_CREDENTIALS_FILE. Keep it private.\n"
        "GRADELAB_SECURITY_PROTOCOL=SASL_PLAINTEXT\n"
        f"GRADELAB_SASL_MECHANISM={SCRAM_MECHANISM}\n"
        f"GRADELAB_SASL_USERNAME={username}\n"
        f"GRADELAB_SASL_PASSWORD={password}\n"
    )
    _write_private_file(path, text)


def _client_options(state_dir: Path, state: _ClusterState) -> dict[str, Any]:
    """Return kafka-python options (without bootstrap servers) for this broker."""
    if not state.auth:
        return {}
    credentials = state_dir / CREDENTIALS_FILE
    if not credentials.is_file():
        raise LocalBrokerError(
            f"The broker in {state_dir} requires SASL authentication, but its "
            f"credentials file {credentials} is missing. Run `gradelab broker "
            f"stop`, delete {state_dir} and start the broker again."
        )
    settings = Settings.load(
        environ={"GRADELAB_CREDENTIALS_FILE": str(credentials)},
        bootstrap_servers=state.bootstrap_servers,
    )
    options = settings.kafka_options()
    del options["bootstrap_servers"]
    return options


# --- State file and processes ------------------------------------------------


def _read_state(state_dir: Path) -> _ClusterState | None:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise LocalBrokerError(
            f"The broker state file {path} is not valid JSON. Stop any broker "
            f"that still runs from {state_dir}, delete the folder and start again."
        ) from exc
    data["pids"] = {int(node): int(pid) for node, pid in data["pids"].items()}
    return _ClusterState(**data)


def _write_state(state_dir: Path, state: _ClusterState) -> None:
    data = dataclasses.asdict(state)
    data["pids"] = {str(node): pid for node, pid in sorted(state.pids.items())}
    temporary = state_dir / f"{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(data, indent=2) + "\n", "utf-8")
    temporary.replace(state_dir / STATE_FILE)


def _process_command_line(pid: int) -> str | None:
    """Return the command line of a live process, or None if it is gone.

    A zombie counts as gone: a node started by :func:`_launch` is not the
    caller's child, so whoever adopted it reaps it.
    """
    proc = Path("/proc") / str(pid)
    if Path("/proc/self").is_dir():
        try:
            stat = (proc / "stat").read_text()
            if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
    # No /proc (macOS): ask ps for the state and the full command.
    result = subprocess.run(
        ["ps", "-ww", "-o", "stat=", "-o", "command=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout.strip()
    if result.returncode != 0 or not output or output.startswith("Z"):
        return None
    return output


def _is_node_process(state_dir: Path, node_id: int, pid: int) -> bool:
    """Check that ``pid`` is still the Kafka JVM of this node, not a reused id."""
    command = _process_command_line(pid)
    if command is None:
        return False
    return "kafka.Kafka" in command and str(_properties_file(state_dir, node_id)) in (
        command
    )


def _running_pids(state_dir: Path, state: _ClusterState) -> dict[int, int]:
    return {
        node_id: pid
        for node_id, pid in state.pids.items()
        if _is_node_process(state_dir, node_id, pid)
    }


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The JVM also binds with SO_REUSEADDR, so sockets of a stopped broker
        # in TIME_WAIT do not count as in use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _check_ports_free(state: _ClusterState, node_ids: list[int]) -> None:
    for node_id in node_ids:
        for role, port in (
            ("client", state.client_port(node_id)),
            ("controller", state.controller_port(node_id)),
        ):
            if _port_in_use(port):
                raise LocalBrokerError(
                    f"Port {port} on localhost, which node {node_id} needs for its "
                    f"{role} listener, is already in use by another program. Stop "
                    "that program (another Kafka broker, for example `docker "
                    "compose down`), or choose free ports with `gradelab broker "
                    f"start --port PORT` (node n uses PORT+n-1 for clients and "
                    f"PORT+{CONTROLLER_PORT_OFFSET}+n-1 for the controller)."
                )


def _launch(command: list[str], output_file: Path, cwd: Path) -> int:
    """Start ``command`` detached and return its pid.

    A short-lived shell in a new session starts the JVM in the background and
    exits, so the JVM outlives the caller, ignores Ctrl-C in the caller's
    terminal and is never left as the caller's zombie.
    """
    script = 'out="$1"; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'
    # The JVM does not need the student's password, so it does not inherit it.
    environment = {k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE}
    result = subprocess.run(
        ["/bin/sh", "-c", script, "sh", str(output_file), *command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        start_new_session=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip().isdigit():
        raise LocalBrokerError(
            f"Could not start {command[0]} ({result.stderr.strip()}).",
            log_file=output_file,
        )
    return int(result.stdout.strip())


def _log_excerpt(state_dir: Path, node_id: int, count: int = 8) -> str:
    """Return the last error lines of a node's log, or the end of its output."""
    lines: list[str] = []
    log_file = _node_log_file(state_dir, node_id)
    if log_file.is_file():
        tail = log_file.read_text("utf-8", errors="replace").splitlines()[-400:]
        lines = [line for line in tail if " ERROR " in line or " FATAL " in line]
    if not lines:
        output_file = _node_output_file(state_dir, node_id)
        if output_file.is_file():
            lines = output_file.read_text("utf-8", errors="replace").splitlines()
    return "\n".join(line[:300] for line in lines[-count:])


def _terminate(pids: dict[int, int], timeout: float) -> None:
    """Send SIGTERM, wait up to ``timeout`` seconds, then SIGKILL what is left."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = dict(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {n: p for n, p in alive.items() if _process_command_line(p)}
    for node_id, pid in alive.items():
        log.warning(
            "Kafka node %s (pid %s) did not stop within %.0f s; killing it",
            node_id,
            pid,
            timeout,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {n: p for n, p in alive.items() if _process_command_line(p)}


# --- Public lifecycle --------------------------------------------------------


def start(
    nodes: int = 1,
    auth: bool = False,
    port: int = DEFAULT_PORT,
    state_dir: str | os.PathLike[str] | None = None,
    timeout: float = 90.0,
    username: str = "gradelab",
) -> BrokerInfo:
    """Start the local Kafka broker, or find it already running.

    The first start formats the storage of each node with a new cluster id;
    later starts reuse it, so topics and offsets survive :func:`stop`. The
    node JVMs run detached from the caller and keep running after it exits.

    Parameters
    ----------
    nodes : {1, 3}
        A single node, or a 3-node cluster with replication factor 3 and
        ``min.insync.replicas=2``.
    auth : bool
        Require SASL/SCRAM-SHA-256 on the client listener. The password comes
        from GRADELAB_SASL_PASSWORD or is generated, and is written with the
        other client settings to ``<state_dir>/credentials.env``.
    port : int
        Client port of node 1; node ``n`` uses ``port + n - 1`` for clients
        and ``port + 100 + n - 1`` for the controller quorum.
    state_dir : path-like, optional
        Folder for configuration, data and logs; defaults to ``<home>/broker``.
    timeout : float
        Seconds to wait for every node to answer a metadata request.
    username : str
        The SASL user created when ``auth`` is true.

    Returns
    -------
    BrokerInfo
        The bootstrap servers, pids and log files. ``already_running`` is true
        when the broker already answered and nothing was started.

    Raises
    ------
    ConfigError
        If ``nodes``, ``port`` or ``username`` is invalid.
    LocalBrokerError
        If a port is in use, the state directory holds another cluster layout,
        a JVM exits during start or the broker does not answer in time.
    """
    if nodes not in SUPPORTED_NODE_COUNTS:
        raise ConfigError(
            f"Invalid node count {nodes!r}: the local broker runs either 1 node or "
            "a 3-node cluster."
        )
    if not 1 <= port <= 65535 - CONTROLLER_PORT_OFFSET - nodes:
        raise ConfigError(
            f"Invalid port {port!r}: expected 1 to "
            f"{65535 - CONTROLLER_PORT_OFFSET - nodes}, because the controller "
            f"ports are {CONTROLLER_PORT_OFFSET} higher."
        )
    if auth:
        _check_username(username)
    directory = _state_dir(state_dir)
    with _file_lock(directory / ".lock"):
        state = _read_state(directory)
        if state is not None:
            running = _running_pids(directory, state)
            if running:
                return _attach(directory, state, nodes, auth, port, running, timeout)
            _check_layout(directory, state, nodes, auth, username if auth else None)
            state = dataclasses.replace(state, port=port, pids={})
        else:
            _check_no_orphaned_data(directory)
            state = _ClusterState(
                cluster_id=_new_cluster_id(),
                nodes=nodes,
                auth=auth,
                username=username if auth else None,
                port=port,
                pids={},
            )
        return _start_nodes(directory, state, list(state.node_ids), timeout)


def _new_cluster_id() -> str:
    """Return a random Kafka cluster id: 16 bytes in URL-safe base64."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
        # Kafka avoids ids that start with "-" because they read as options.
        if not cluster_id.startswith("-"):
            return cluster_id


def _check_no_orphaned_data(state_dir: Path) -> None:
    """Raise if data folders exist without the state file that names their id."""
    if any((state_dir / "data").glob("node-*/meta.properties")):
        raise LocalBrokerError(
            f"The state directory {state_dir} contains Kafka data but no "
            f"{STATE_FILE}, so its cluster id is unknown. Stop any broker that "
            f"still runs from it, delete {state_dir} and start again."
        )


def _describe_layout(nodes: int, auth: bool) -> str:
    cluster = "a single node" if nodes == 1 else f"a {nodes}-node cluster"
    return cluster + (" with authentication" if auth else " without authentication")


def _check_layout(
    state_dir: Path,
    state: _ClusterState,
    nodes: int,
    auth: bool,
    username: str | None,
) -> None:
    """Raise if the stored cluster differs from the requested one.

    The node count and the SCRAM users are fixed when the storage is
    formatted, so another layout needs a new state directory. Ports are not
    stored in the data and may change between starts.
    """
    if (state.nodes, state.auth, state.username) == (nodes, auth, username):
        return
    stored = _describe_layout(state.nodes, state.auth)
    requested = _describe_layout(nodes, auth)
    if (state.nodes, state.auth) == (nodes, auth):
        stored += f" for user {state.username!r}"
        requested += f" for user {username!r}"
    raise LocalBrokerError(
        f"The state directory {state_dir} holds {stored}, but {requested} was "
        "requested. Start it as it was created, or run `gradelab broker stop`, "
        f"delete {state_dir} (this deletes its topics) and start again."
    )


def _attach(
    state_dir: Path,
    state: _ClusterState,
    nodes: int,
    auth: bool,
    port: int,
    running: dict[int, int],
    timeout: float,
) -> BrokerInfo:
    """Return the running broker of ``state_dir``, restarting missing nodes."""
    if (state.nodes, state.auth) != (nodes, auth):
        raise LocalBrokerError(
            f"The broker in {state_dir} is already running as "
            f"{_describe_layout(state.nodes, state.auth)}, but "
            f"{_describe_layout(nodes, auth)} was requested. Stop it first with "
            "`gradelab broker stop`."
        )
    if port != state.port:
        log.warning(
            "The broker in %s already runs on port %s, so port %s is not used",
            state_dir,
            state.port,
            port,
        )
    missing = [n for n in state.node_ids if n not in running]
    if missing:
        log.info("Restarting stopped Kafka nodes %s in %s", missing, state_dir)
        state = dataclasses.replace(state, pids=running)
        return _start_nodes(state_dir, state, missing, timeout)
    _wait_for_nodes(state_dir, state, time.monotonic() + timeout)
    log.info("Kafka broker already running at %s", state.bootstrap_servers)
    return _broker_info(state_dir, state, already_running=True)


def _broker_info(
    state_dir: Path, state: _ClusterState, already_running: bool
) -> BrokerInfo:
    return BrokerInfo(
        bootstrap_servers=state.bootstrap_servers,
        nodes=state.nodes,
        auth=state.auth,
        pids=tuple(state.pids[n] for n in state.node_ids if n in state.pids),
        log_files=tuple(_node_log_file(state_dir, n) for n in state.node_ids),
        already_running=already_running,
        credentials_file=state_dir / CREDENTIALS_FILE if state.auth else None,
    )


def _prepare_credentials(state_dir: Path, state: _ClusterState) -> tuple[str, str]:
    """Return the student's and the brokers' passwords, creating them once."""
    credentials = state_dir / CREDENTIALS_FILE
    secret_file = state_dir / INTER_BROKER_SECRET_FILE
    if credentials.is_file() and secret_file.is_file():
        stored = _read_credentials(credentials)["GRADELAB_SASL_PASSWORD"]
        requested = os.environ.get(PASSWORD_VARIABLE)
        if requested and not hmac.compare_digest(requested, stored):
            raise LocalBrokerError(
                f"{PASSWORD_VARIABLE} differs from the password that the broker "
                f"in {state_dir} was created with, and a SCRAM password is fixed "
                f"when the storage is formatted. Unset {PASSWORD_VARIABLE} to use "
                f"the stored one from {credentials}, or run `gradelab broker "
                f"stop`, delete {state_dir} and start again."
            )
        return stored, secret_file.read_text("utf-8").strip()
    password = _student_password()
    inter_broker_password = secrets.token_urlsafe(24)
    _write_credentials(credentials, state.username or "", password)
    _write_private_file(secret_file, inter_broker_password + "\n")
    return password, inter_broker_password


def _write_config(
    state_dir: Path, state: _ClusterState, inter_broker_password: str
) -> None:
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    config_dir = state_dir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "log4j2.properties").write_text(
        _log4j_config("INFO", to_file=True), "utf-8"
    )
    (config_dir / "log4j2-tools.properties").write_text(
        _log4j_config("WARN", to_file=False), "utf-8"
    )
    for node_id in state.node_ids:
        properties = _server_properties(
            state_dir, state, node_id, inter_broker_password
        )
        _write_properties(_properties_file(state_dir, node_id), properties)


def _format_storage(
    java: str,
    libs: Path,
    state_dir: Path,
    state: _ClusterState,
    passwords: tuple[str, str] | None,
) -> None:
    """Format the data folder of every node that has not been formatted yet."""
    unformatted = [
        n
        for n in state.node_ids
        if not (_data_dir(state_dir, n) / "meta.properties").is_file()
    ]
    if not unformatted:
        return
    scram_arguments: list[str] = []
    if passwords is not None:
        password, inter_broker_password = passwords
        for name, secret in (
            (state.username or "", password),
            (INTER_BROKER_USERNAME, inter_broker_password),
        ):
            scram_arguments += ["--add-scram", _scram_argument(name, secret)]
    tools_log4j = state_dir / "config" / "log4j2-tools.properties"

    def format_node(node_id: int) -> subprocess.CompletedProcess[str]:
        command = [
            java,
            f"-Dlog4j2.configurationFile={tools_log4j}",
            "-cp",
            str(libs / "*"),
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(_properties_file(state_dir, node_id)),
            "--cluster-id",
            state.cluster_id,
            *scram_arguments,
        ]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False
        )

    with ThreadPoolExecutor(max_workers=len(unformatted)) as pool:
        results = dict(zip(unformatted, pool.map(format_node, unformatted), strict=True))
    for node_id, result in results.items():
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise LocalBrokerError(
                f"Formatting the storage of Kafka node {node_id} in "
                f"{_data_dir(state_dir, node_id)} failed: {' '.join(output)}. "
                f"Run `gradelab broker stop`, delete {state_dir} and start again."
            )
    log.info("Formatted storage for Kafka nodes %s in %s", unformatted, state_dir)


def _node_command(java: str, libs: Path, state_dir: Path, node_id: int) -> list[str]:
    return [
        java,
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={state_dir / 'config' / 'log4j2.properties'}",
        f"-Dgradelab.log.file={_node_log_file(state_dir, node_id)}",
        "-cp",
        str(libs / "*"),
        "kafka.Kafka",
        str(_properties_file(state_dir, node_id)),
    ]


def _start_nodes(
    state_dir: Path, state: _ClusterState, node_ids: list[int], timeout: float
) -> BrokerInfo:
    """Write the config, format new storage and launch ``node_ids``."""
    _check_ports_free(state, node_ids)
    libs = install()
    java = _require_java()
    state_dir.mkdir(parents=True, exist_ok=True)
    passwords = _prepare_credentials(state_dir, state) if state.auth else None
    _write_config(state_dir, state, passwords[1] if passwords else "")
    _format_storage(java, libs, state_dir, state, passwords)
    started_at = time.monotonic()
    deadline = started_at + timeout
    pids = dict(state.pids)
    for node_id in node_ids:
        command = _node_command(java, libs, state_dir, node_id)
        output_file = _node_output_file(state_dir, node_id)
        pids[node_id] = _launch(command, output_file, state_dir)
        log.info("Started Kafka node %s (pid %s)", node_id, pids[node_id])
    state = dataclasses.replace(state, pids=pids)
    _write_state(state_dir, state)
    try:
        _wait_for_nodes(state_dir, state, deadline)
    except (LocalBrokerError, AuthenticationFailedError):
        # Free the ports so that the next attempt does not meet its own JVMs.
        _terminate({n: pids[n] for n in node_ids}, timeout=10)
        _write_state(state_dir, dataclasses.replace(state, pids={}))
        raise
    log.info(
        "Kafka broker answering at %s after %.1f s",
        state.bootstrap_servers,
        time.monotonic() - started_at,
    )
    return _broker_info(state_dir, state, already_running=False)


def _wait_for_nodes(state_dir: Path, state: _ClusterState, deadline: float) -> None:
    """Wait until every node answers, raising early if a node JVM exits."""
    options = _client_options(state_dir, state)
    while True:
        for node_id, pid in state.pids.items():
            if not _is_node_process(state_dir, node_id, pid):
                raise LocalBrokerError(
                    f"Kafka node {node_id} (pid {pid}) exited during start. Last "
                    f"log lines:\n{_log_excerpt(state_dir, node_id)}\n",
                    log_file=_node_log_file(state_dir, node_id),
                )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LocalBrokerError(
                f"The Kafka broker in {state_dir} did not answer at "
                f"{state.bootstrap_servers} in time. Last log lines:\n"
                f"{_log_excerpt(state_dir, 1)}\nStop it with `gradelab broker "
                "stop` and start it again with a longer timeout.",
                log_file=_node_log_file(state_dir, 1),
            )
        try:
            wait_until_ready(
                state.bootstrap_servers,
                timeout=min(remaining, 2.0),
                min_brokers=state.nodes,
                **options,
            )
        except BrokerUnavailableError:
            continue
        return


def stop(
    state_dir: str | os.PathLike[str] | None = None, timeout: float = 30.0
) -> list[int]:
    """Stop every node of the local broker and wait until the JVMs exit.

    Each node gets SIGTERM, which makes Kafka shut down cleanly; nodes still
    alive after ``timeout`` seconds get SIGKILL. Data stays in the state
    directory for the next :func:`start`.

    Parameters
    ----------
    state_dir : path-like, optional
        The broker's state directory; defaults to ``<home>/broker``.
    timeout : float
        Seconds to wait for a clean shutdown before killing.

    Returns
    -------
    list of int
        The pids that were stopped; empty when no node was running.
    """
    directory = _state_dir(state_dir)
    with _file_lock(directory / ".lock"):
        state = _read_state(directory)
        if state is None:
            return []
        running = _running_pids(directory, state)
        if running:
            log.info("Stopping Kafka nodes %s in %s", sorted(running), directory)
            _terminate(running, timeout)
            log.info("Stopped Kafka broker at %s", state.bootstrap_servers)
        _write_state(directory, dataclasses.replace(state, pids={}))
    return [running[n] for n in sorted(running)]


def status(state_dir: str | os.PathLike[str] | None = None) -> BrokerStatus:
    """Report whether the local broker runs and answers a metadata request.

    Parameters
    ----------
    state_dir : path-like, optional
        The broker's state directory; defaults to ``<home>/broker``.

    Returns
    -------
    BrokerStatus
        ``answering`` is true when every node answered within 5 seconds.
    """
    directory = _state_dir(state_dir)
    state = _read_state(directory)
    if state is None:
        return BrokerStatus(False, False, None, 0, False, (), ())
    running = _running_pids(directory, state)
    answering = False
    if running:
        try:
            wait_until_ready(
                state.bootstrap_servers,
                timeout=STATUS_TIMEOUT,
                min_brokers=state.nodes,
                **_client_options(directory, state),
            )
            answering = True
        except (BrokerUnavailableError, AuthenticationFailedError) as exc:
            log.info("The broker in %s does not answer: %s", directory, exc)
    return BrokerStatus(
        running=bool(running),
        answering=answering,
        bootstrap_servers=state.bootstrap_servers,
        nodes=state.nodes,
        auth=state.auth,
        pids=tuple(running[n] for n in sorted(running)),
        log_files=tuple(_node_log_file(directory, n) for n in state.node_ids),
    )


def _require_node(state_dir: Path, node_id: int) -> _ClusterState:
    state = _read_state(state_dir)
    if state is None:
        raise LocalBrokerError(
            f"No local broker was ever started in {state_dir}. Start one with "
            "`gradelab broker start`."
        )
    if node_id not in state.node_ids:
        raise ConfigError(
            f"Invalid node id {node_id!r}: the broker in {state_dir} has nodes "
            f"1 to {state.nodes}."
        )
    return state


def kill_node(node_id: int, state_dir: str | os.PathLike[str] | None = None) -> int:
    """Kill one node of the local cluster with SIGKILL, as a crash would.

    Parameters
    ----------
    node_id : int
        The node to kill, from 1 to the node count.
    state_dir : path-like, optional
        The broker's state directory; defaults to ``<home>/broker``.

    Returns
    -------
    int
        The pid of the killed JVM, which has exited when this returns.

    Raises
    ------
    LocalBrokerError
        If that node is not running.
    """
    directory = _state_dir(state_dir)
    with _file_lock(directory / ".lock"):
        state = _require_node(directory, node_id)
        pid = state.pids.get(node_id)
        if pid is None or not _is_node_process(directory, node_id, pid):
            raise LocalBrokerError(
                f"Kafka node {node_id} in {directory} is not running, so there is "
                f"nothing to kill. Start it with `start_node({node_id})`."
            )
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _process_command_line(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = {n: p for n, p in state.pids.items() if n != node_id}
        _write_state(directory, dataclasses.replace(state, pids=pids))
    log.info("Killed Kafka node %s (pid %s)", node_id, pid)
    return pid


def start_node(
    node_id: int,
    state_dir: str | os.PathLike[str] | None = None,
    timeout: float = 90.0,
) -> None:
    """Start one stopped or killed node of an existing local cluster.

    Returns once every node of the cluster answers again. Does nothing when
    the node is already running.

    Parameters
    ----------
    node_id : int
        The node to start, from 1 to the node count.
    state_dir : path-like, optional
        The broker's state directory; defaults to ``<home>/broker``.
    timeout : float
        Seconds to wait for the cluster to answer with every node.

    Raises
    ------
    LocalBrokerError
        If the node's ports are in use, its JVM exits or it does not rejoin in
        time.
    """
    directory = _state_dir(state_dir)
    with _file_lock(directory / ".lock"):
        state = _require_node(directory, node_id)
        running = _running_pids(directory, state)
        if node_id in running:
            log.info("Kafka node %s in %s is already running", node_id, directory)
            return
        state = dataclasses.replace(state, pids=running)
        _start_nodes(directory, state, [node_id], timeout)


# --- Readiness ---------------------------------------------------------------


def _parse_bootstrap_servers(bootstrap_servers: str) -> list[tuple[str, int]]:
    addresses = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"Invalid bootstrap server {server.strip()!r}: expected host:port, "
                "for example localhost:9092."
            )
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _count_live_brokers(admin: Any) -> int:
    cluster = admin.describe_cluster()
    return sum(1 for broker in cluster["brokers"] if not broker.get("is_fenced"))


def wait_until_ready(
    bootstrap_servers: str,
    timeout: float,
    *,
    min_brokers: int = 1,
    **client_options: Any,
) -> None:
    """Wait until a Kafka cluster answers a metadata request.

    First waits for a TCP connection, which is cheap and quiet while a JVM
    starts, then asks for the cluster metadata with kafka-python until at
    least ``min_brokers`` unfenced brokers are listed.

    Parameters
    ----------
    bootstrap_servers : str
        Comma-separated ``host:port`` list.
    timeout : float
        Seconds to wait in total.
    min_brokers : int
        Number of live brokers the metadata must list.
    **client_options
        Further :class:`kafka.KafkaAdminClient` options, such as
        ``security_protocol`` and the ``sasl_*`` settings from
        :meth:`gradelab.config.Settings.kafka_options` (without
        ``bootstrap_servers``).

    Raises
    ------
    BrokerUnavailableError
        If the cluster does not answer within ``timeout`` seconds.
    AuthenticationFailedError
        If the broker rejects the SASL credentials; this is raised as soon as
        the broker rejects them, without waiting for the timeout.
    """
    # Imported here so that `import gradelab.broker` stays light for the CLI.
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError, SaslAuthenticationFailedError

    deadline = time.monotonic() + timeout
    addresses = _parse_bootstrap_servers(bootstrap_servers)
    while not any(_accepts_connections(host, port) for host, port in addresses):
        if time.monotonic() >= deadline:
            raise BrokerUnavailableError(
                bootstrap_servers, f"no TCP connection within {timeout:g} s"
            )
        time.sleep(0.2)

    options = {"reconnect_backoff_max_ms": 1000, "request_timeout_ms": 5000}
    options.update(client_options)
    last_error = "no answer"
    while True:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            raise BrokerUnavailableError(
                bootstrap_servers, f"{last_error} within {timeout:g} s"
            )
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap_servers.split(","),
                bootstrap_timeout_ms=remaining_ms,
                **options,
            )
        except SaslAuthenticationFailedError as exc:
            username = options.get("sasl_plain_username")
            raise AuthenticationFailedError(
                f"The broker at {bootstrap_servers} rejected the SASL credentials "
                f"of user {username!r} ({exc}). Check GRADELAB_SASL_USERNAME and "
                "GRADELAB_SASL_PASSWORD, or point GRADELAB_CREDENTIALS_FILE at the "
                "credentials.env that `gradelab broker start --auth` wrote."
            ) from exc
        except KafkaError as exc:
            raise BrokerUnavailableError(bootstrap_servers, str(exc)) from exc
        try:
            live = _count_live_brokers(admin)
        except KafkaError as exc:
            last_error = f"metadata request failed: {exc}"
            live = 0
        finally:
            admin.close()
        if live >= min_brokers:
            return
        if live:
            last_error = f"only {live} of {min_brokers} brokers live"
        time.sleep(0.2)
