"""The project's own Apache Kafka broker, run without Docker.

:func:`start` runs a single node or a 3-node cluster of combined
broker+controller JVMs in KRaft mode, detached from the caller, and returns
once the brokers respond to a metadata request. The jars come from
:func:`install`. Configuration, data, logs and process ids live in a state
directory, ``<home>/broker`` by default::

    state.json              cluster id, node count, authentication, port, pids
    config/server-N.properties, config/log4j2*.properties
    data/node-N/            the node's log directory (topics and metadata)
    logs/node-N.log         the broker log; node-N.out has the JVM's output
    credentials.env         client settings, only with authentication

Node ``n`` (numbered from 1) listens for clients on ``localhost:port + n - 1``
and for the controller quorum on ``localhost:port + 100 + n - 1``. With the
default port a single node uses 9092 and 9192, and a 3-node cluster uses
9092-9094 and 9192-9194.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradelab._broker_config import (
    CONTROLLER_PORT_OFFSET,
    INTER_BROKER_USERNAME,
    client_port,
    controller_port,
    log4j_config,
    scram_argument,
    server_properties,
    write_properties,
)
from gradelab._broker_credentials import (
    CREDENTIALS_FILE,
    check_username,
    prepare_passwords,
)
from gradelab._broker_processes import (
    is_alive,
    launch,
    log_excerpt,
    port_in_use,
    process_command_line,
    terminate,
)
from gradelab._kafka_install import (
    KAFKA_VERSION,
    file_lock,
    gradelab_home,
    install,
    require_java,
    tool_command,
)
from gradelab._readiness import wait_until_ready
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

DEFAULT_PORT = 9092
SUPPORTED_NODE_COUNTS = (1, 3)
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# Seconds that status() waits for a metadata response.
STATUS_TIMEOUT = 5.0
STATE_FILE = "state.json"


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
        Process ids of the node JVMs, in node order.
    log_files : tuple of pathlib.Path
        The broker log of each node, in node order.
    already_running : bool
        True when the broker already responded and nothing was started.
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
        True when the cluster responded to a metadata request that lists at
        least as many live brokers as there are running nodes.
    bootstrap_servers : str or None
        The bootstrap servers, or None when the state directory has no broker.
    nodes : int
        Number of nodes the cluster was created with, 0 when there is none.
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
    """The contents of ``state.json``: the cluster layout and the live pids."""

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

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"localhost:{client_port(self.port, n)}" for n in self.node_ids)


# --- State directory ---------------------------------------------------------


def _state_dir(state_dir: str | os.PathLike[str] | None) -> Path:
    # Absolute, because the node JVMs run with the state directory as their cwd
    # and stored pids are matched against the config path in their command line.
    if state_dir is None:
        return (gradelab_home() / "broker").resolve()
    return Path(state_dir).expanduser().resolve()


def _log_file(state_dir: Path, node_id: int) -> Path:
    return state_dir / "logs" / f"node-{node_id}.log"


def _output_file(state_dir: Path, node_id: int) -> Path:
    return state_dir / "logs" / f"node-{node_id}.out"


def _diagnostic_file(state_dir: Path, node_id: int) -> Path:
    """Return the broker log, or the JVM output when logging never started."""
    log_file = _log_file(state_dir, node_id)
    return log_file if log_file.is_file() else _output_file(state_dir, node_id)


def _properties_file(state_dir: Path, node_id: int) -> Path:
    return state_dir / "config" / f"server-{node_id}.properties"


def _data_dir(state_dir: Path, node_id: int) -> Path:
    return state_dir / "data" / f"node-{node_id}"


def _read_state(state_dir: Path) -> _ClusterState | None:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
        data["pids"] = {int(node): int(pid) for node, pid in data["pids"].items()}
        return _ClusterState(**data)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalBrokerError(
            f"The broker state file {path} is invalid ({exc!r}). Stop any Kafka "
            f"JVM that still runs from {state_dir}, delete the folder and start "
            "again."
        ) from exc


def _write_state(state_dir: Path, state: _ClusterState) -> None:
    data = dataclasses.asdict(state)
    data["pids"] = {str(node): pid for node, pid in sorted(state.pids.items())}
    temporary = state_dir / f"{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(data, indent=2) + "\n", "utf-8")
    temporary.replace(state_dir / STATE_FILE)


def _is_node_process(state_dir: Path, node_id: int, pid: int) -> bool:
    """Check that ``pid`` is still this node's Kafka JVM and not a reused pid."""
    command = process_command_line(pid)
    if command is None:
        return False
    properties = str(_properties_file(state_dir, node_id))
    return "kafka.Kafka" in command and properties in command


def _running_pids(state_dir: Path, state: _ClusterState) -> dict[int, int]:
    return {
        node_id: pid
        for node_id, pid in state.pids.items()
        if _is_node_process(state_dir, node_id, pid)
    }


def _client_options(state_dir: Path, state: _ClusterState) -> dict[str, Any]:
    """Return kafka-python options for this broker, without bootstrap servers."""
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


def _broker_info(
    state_dir: Path, state: _ClusterState, already_running: bool
) -> BrokerInfo:
    return BrokerInfo(
        bootstrap_servers=state.bootstrap_servers,
        nodes=state.nodes,
        auth=state.auth,
        pids=tuple(state.pids[n] for n in state.node_ids if n in state.pids),
        log_files=tuple(_log_file(state_dir, n) for n in state.node_ids),
        already_running=already_running,
        credentials_file=state_dir / CREDENTIALS_FILE if state.auth else None,
    )


# --- Starting ----------------------------------------------------------------


def start(
    nodes: int = 1,
    auth: bool = False,
    port: int = DEFAULT_PORT,
    state_dir: str | os.PathLike[str] | None = None,
    timeout: float = 90.0,
    username: str = "gradelab",
) -> BrokerInfo:
    """Start the local Kafka broker, or find it already running.

    The first start formats each node's storage with a new cluster id. Later
    starts reuse it, so topics and committed offsets survive :func:`stop`.
    The node JVMs run detached and keep running after the caller exits. When
    some nodes of the cluster run and others do not, the missing ones are
    started.

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
        Client port of node 1. Node ``n`` uses ``port + n - 1`` for clients
        and ``port + 100 + n - 1`` for the controller quorum.
    state_dir : path-like, optional
        Folder for configuration, data and logs; defaults to ``<home>/broker``.
    timeout : float
        Seconds to wait, after the JVMs are launched, until every node responds
        to a metadata request.
    username : str
        The SASL user created when ``auth`` is true.

    Returns
    -------
    BrokerInfo
        The bootstrap servers, pids and log files. ``already_running`` is true
        when the broker already responded and nothing was started.

    Raises
    ------
    ConfigError
        If ``nodes``, ``port``, ``username`` or GRADELAB_SASL_PASSWORD is
        invalid.
    LocalBrokerError
        If a port is in use, the state directory contains another cluster
        layout, Java or the jars are missing, a JVM exits during start, or the
        broker does not respond within ``timeout``.
    """
    if nodes not in SUPPORTED_NODE_COUNTS:
        raise ConfigError(
            f"Invalid node count {nodes!r}: the local broker runs either 1 node or "
            "a 3-node cluster."
        )
    highest_port = 65535 - CONTROLLER_PORT_OFFSET - (nodes - 1)
    if not 1 <= port <= highest_port:
        raise ConfigError(
            f"Invalid port {port!r}: expected 1 to {highest_port}, because the "
            f"controller ports are {CONTROLLER_PORT_OFFSET} higher."
        )
    if auth:
        check_username(username)
    directory = _state_dir(state_dir)
    with file_lock(directory / ".lock"):
        state = _read_state(directory)
        if state is None:
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
        running = _running_pids(directory, state)
        if running:
            return _attach(directory, state, nodes, auth, port, running, timeout)
        _check_layout(directory, state, nodes, auth, username if auth else None)
        state = dataclasses.replace(state, port=port, pids={})
        return _start_nodes(directory, state, list(state.node_ids), timeout)


def _new_cluster_id() -> str:
    """Return a random Kafka cluster id: 16 bytes in URL-safe base64."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
        # Kafka's own generator skips ids that start with "-", which command
        # lines would read as an option.
        if not cluster_id.startswith("-"):
            return cluster_id


def _check_no_orphaned_data(state_dir: Path) -> None:
    """Raise if data folders exist without the state file that names their id."""
    if any((state_dir / "data").glob("node-*/meta.properties")):
        raise LocalBrokerError(
            f"The state directory {state_dir} contains Kafka data but no "
            f"{STATE_FILE}, so its cluster id is unknown. Stop any Kafka JVM that "
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

    The node count, the controller quorum and the SCRAM users are written
    into the storage when it is formatted. Reformatting would delete the
    students' topics, so another layout needs another (or an emptied) state
    directory. Ports are not stored in the data and may change between
    starts.
    """
    if (state.nodes, state.auth, state.username) == (nodes, auth, username):
        return
    stored = _describe_layout(state.nodes, state.auth)
    requested = _describe_layout(nodes, auth)
    if (state.nodes, state.auth) == (nodes, auth):
        stored += f" for user {state.username!r}"
        requested += f" for user {username!r}"
    raise LocalBrokerError(
        f"The state directory {state_dir} contains {stored}, but {requested} was "
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
    """Return the running broker of ``state_dir``, starting missing nodes."""
    if (state.nodes, state.auth) != (nodes, auth):
        raise LocalBrokerError(
            f"The broker in {state_dir} is already running as "
            f"{_describe_layout(state.nodes, state.auth)}, but "
            f"{_describe_layout(nodes, auth)} was requested. Stop it first with "
            "`gradelab broker stop`."
        )
    if port != state.port:
        log.warning(
            "The broker in %s already runs with client port %s, so port %s is not used",
            state_dir,
            state.port,
            port,
        )
    missing = [n for n in state.node_ids if n not in running]
    state = dataclasses.replace(state, pids=running)
    if missing:
        log.info("Starting stopped Kafka nodes %s in %s", missing, state_dir)
        return _start_nodes(state_dir, state, missing, timeout)
    _wait_for_nodes(state_dir, state, list(state.node_ids), time.monotonic() + timeout)
    log.info("Kafka broker already running at %s", state.bootstrap_servers)
    return _broker_info(state_dir, state, already_running=True)


def _check_ports_free(state: _ClusterState, node_ids: list[int]) -> None:
    for node_id in node_ids:
        for role, port in (
            ("client", client_port(state.port, node_id)),
            ("controller", controller_port(state.port, node_id)),
        ):
            if port_in_use(port):
                raise LocalBrokerError(
                    f"Port {port} on localhost, which node {node_id} needs for its "
                    f"{role} listener, is already in use by another program. Stop "
                    "that program (if it is the Docker Compose broker, run `docker "
                    "compose down`), or choose free ports with `gradelab broker "
                    "start --port PORT`: node n uses PORT+n-1 for clients and "
                    f"PORT+{CONTROLLER_PORT_OFFSET}+n-1 for the controller."
                )


def _write_config(
    state_dir: Path, state: _ClusterState, inter_broker_password: str
) -> None:
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    config_dir = state_dir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "log4j2.properties").write_text(
        log4j_config("INFO", to_file=True), "utf-8"
    )
    (config_dir / "log4j2-tools.properties").write_text(
        log4j_config("WARN", to_file=False), "utf-8"
    )
    for node_id in state.node_ids:
        properties = server_properties(
            node_id=node_id,
            nodes=state.nodes,
            port=state.port,
            auth=state.auth,
            data_dir=_data_dir(state_dir, node_id),
            inter_broker_password=inter_broker_password,
        )
        write_properties(_properties_file(state_dir, node_id), properties)


def _format_storage(
    java: str,
    libs: Path,
    state_dir: Path,
    state: _ClusterState,
    passwords: tuple[str, str] | None,
) -> None:
    """Format the data folder of every node that is not formatted yet."""
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
            scram_arguments += ["--add-scram", scram_argument(name, secret)]
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

    # Each format is a JVM start of about a second, so the nodes run in parallel.
    with ThreadPoolExecutor(max_workers=len(unformatted)) as pool:
        results = dict(
            zip(unformatted, pool.map(format_node, unformatted), strict=True)
        )
    for node_id, result in results.items():
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise LocalBrokerError(
                f"Formatting the storage of Kafka node {node_id} in "
                f"{_data_dir(state_dir, node_id)} failed: {' '.join(output)}. "
                f"Run `gradelab broker stop`, delete {state_dir} and start again."
            )
    log.info("Formatted storage of Kafka nodes %s in %s", unformatted, state_dir)


def _node_command(java: str, libs: Path, state_dir: Path, node_id: int) -> list[str]:
    return [
        java,
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={state_dir / 'config' / 'log4j2.properties'}",
        f"-Dgradelab.log.file={_log_file(state_dir, node_id)}",
        "-cp",
        str(libs / "*"),
        "kafka.Kafka",
        str(_properties_file(state_dir, node_id)),
    ]


def _start_nodes(
    state_dir: Path, state: _ClusterState, node_ids: list[int], timeout: float
) -> BrokerInfo:
    """Write the config, format new storage, launch ``node_ids`` and wait."""
    _check_ports_free(state, node_ids)
    libs = install()
    java = require_java()
    state_dir.mkdir(parents=True, exist_ok=True)
    passwords = (
        prepare_passwords(state_dir, state.username or "") if state.auth else None
    )
    _write_config(state_dir, state, passwords[1] if passwords else "")
    # Written before formatting, so that formatted data always has its cluster id.
    _write_state(state_dir, state)
    _format_storage(java, libs, state_dir, state, passwords)

    started_at = time.monotonic()
    pids = dict(state.pids)
    for node_id in node_ids:
        command = _node_command(java, libs, state_dir, node_id)
        pids[node_id] = launch(command, _output_file(state_dir, node_id), state_dir)
        log.info("Started Kafka node %s (pid %s)", node_id, pids[node_id])
    state = dataclasses.replace(state, pids=pids)
    _write_state(state_dir, state)
    try:
        _wait_for_nodes(state_dir, state, node_ids, started_at + timeout)
    except (LocalBrokerError, AuthenticationFailedError):
        # Free the ports, so that the next attempt does not meet these JVMs.
        terminate({n: pids[n] for n in node_ids}, timeout=10.0)
        remaining = {n: p for n, p in pids.items() if n not in node_ids}
        _write_state(state_dir, dataclasses.replace(state, pids=remaining))
        raise
    log.info(
        "Kafka broker ready at %s, %.1f s after launch",
        state.bootstrap_servers,
        time.monotonic() - started_at,
    )
    return _broker_info(state_dir, state, already_running=False)


def _wait_for_nodes(
    state_dir: Path, state: _ClusterState, node_ids: list[int], deadline: float
) -> None:
    """Wait until each of ``node_ids`` responds on its own client port.

    A KRaft broker handles client requests only once the controller has
    unfenced it, so asking the node itself proves that it has joined. Asking
    any node would not: for a few seconds after a crash the metadata still
    lists the dead node. Raises early when a node JVM exits.
    """
    options = _client_options(state_dir, state)
    waiting = list(node_ids)
    while waiting:
        for node_id, pid in state.pids.items():
            if not _is_node_process(state_dir, node_id, pid):
                excerpt = log_excerpt(
                    _log_file(state_dir, node_id), _output_file(state_dir, node_id)
                )
                raise LocalBrokerError(
                    f"Kafka node {node_id} (pid {pid}) exited during start. Last "
                    f"log lines:\n{excerpt}\n",
                    log_file=_diagnostic_file(state_dir, node_id),
                )
        node_id = waiting[0]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            excerpt = log_excerpt(
                _log_file(state_dir, node_id), _output_file(state_dir, node_id)
            )
            raise LocalBrokerError(
                f"Timed out waiting for Kafka node {node_id} in {state_dir} to "
                f"respond at localhost:{client_port(state.port, node_id)}. Last log "
                f"lines:\n{excerpt}\nStop the broker with `gradelab broker stop` "
                "and start it again with a longer timeout.",
                log_file=_diagnostic_file(state_dir, node_id),
            )
        try:
            # Short rounds, so that a JVM that exits is noticed within seconds.
            wait_until_ready(
                f"localhost:{client_port(state.port, node_id)}",
                timeout=min(remaining, 2.0),
                min_brokers=state.nodes,
                **options,
            )
        except BrokerUnavailableError:
            continue
        waiting.pop(0)


# --- Stopping and inspecting -------------------------------------------------


def stop(
    state_dir: str | os.PathLike[str] | None = None, timeout: float = 30.0
) -> list[int]:
    """Stop every node of the local broker and wait until the JVMs exit.

    Each node gets SIGTERM, which makes Kafka shut down cleanly. Nodes still
    alive after ``timeout`` seconds get SIGKILL. The data stays in the state
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
        The pids that were stopped, in node order; empty when no node ran.
    """
    directory = _state_dir(state_dir)
    if not (directory / STATE_FILE).is_file():
        return []
    with file_lock(directory / ".lock"):
        state = _read_state(directory)
        if state is None:
            return []
        running = _running_pids(directory, state)
        if running:
            log.info("Stopping Kafka nodes %s in %s", sorted(running), directory)
            terminate(running, timeout)
            log.info("Stopped Kafka broker at %s", state.bootstrap_servers)
        _write_state(directory, dataclasses.replace(state, pids={}))
    return [running[n] for n in sorted(running)]


def status(state_dir: str | os.PathLike[str] | None = None) -> BrokerStatus:
    """Report whether the local broker runs and responds to a metadata request.

    Parameters
    ----------
    state_dir : path-like, optional
        The broker's state directory; defaults to ``<home>/broker``.

    Returns
    -------
    BrokerStatus
        ``answering`` is true when a metadata response within 5 seconds listed
        at least as many live brokers as there are running nodes. A cluster
        with a stopped node can respond, and ``pids`` then has fewer entries
        than ``nodes``.
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
                min_brokers=len(running),
                **_client_options(directory, state),
            )
            answering = True
        except (BrokerUnavailableError, AuthenticationFailedError) as exc:
            log.info("The broker in %s does not respond: %s", directory, exc)
    return BrokerStatus(
        running=bool(running),
        answering=answering,
        bootstrap_servers=state.bootstrap_servers,
        nodes=state.nodes,
        auth=state.auth,
        pids=tuple(running[n] for n in sorted(running)),
        log_files=tuple(_log_file(directory, n) for n in state.node_ids),
    )


# --- Fault injection ---------------------------------------------------------


def _require_state_file(state_dir: Path) -> None:
    if not (state_dir / STATE_FILE).is_file():
        raise _no_broker_error(state_dir)


def _no_broker_error(state_dir: Path) -> LocalBrokerError:
    return LocalBrokerError(
        f"No local broker was ever started in {state_dir}. Start one with "
        "`gradelab broker start`."
    )


def _require_node(state_dir: Path, node_id: int) -> _ClusterState:
    state = _read_state(state_dir)
    if state is None:
        raise _no_broker_error(state_dir)
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
    ConfigError
        If the cluster has no node ``node_id``.
    LocalBrokerError
        If that node is not running.
    """
    directory = _state_dir(state_dir)
    _require_state_file(directory)
    with file_lock(directory / ".lock"):
        state = _require_node(directory, node_id)
        pid = state.pids.get(node_id)
        if pid is None or not _is_node_process(directory, node_id, pid):
            raise LocalBrokerError(
                f"Kafka node {node_id} in {directory} is not running, so there is "
                f"nothing to kill. Start it with start_node({node_id})."
            )
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while is_alive(pid) and time.monotonic() < deadline:
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

    Returns once the node responds on its own client port with metadata that
    lists every node. Does nothing when the node already runs.

    Parameters
    ----------
    node_id : int
        The node to start, from 1 to the node count.
    state_dir : path-like, optional
        The broker's state directory; defaults to ``<home>/broker``.
    timeout : float
        Seconds to wait, after the JVM is launched, for the node to respond.

    Raises
    ------
    ConfigError
        If the cluster has no node ``node_id``.
    LocalBrokerError
        If the node's ports are in use, its JVM exits, or it does not rejoin
        in time.
    """
    directory = _state_dir(state_dir)
    _require_state_file(directory)
    with file_lock(directory / ".lock"):
        state = _require_node(directory, node_id)
        running = _running_pids(directory, state)
        if node_id in running:
            log.info("Kafka node %s in %s is already running", node_id, directory)
            return
        state = dataclasses.replace(state, pids=running)
        _start_nodes(directory, state, [node_id], timeout)
