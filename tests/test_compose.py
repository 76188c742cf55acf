"""Static checks of docker-compose.yml, which this machine cannot run.

They catch the mistakes that make a Compose broker unreachable. Examples are
listeners and advertised addresses that do not match, a listener missing from
the security map, and a controller quorum that names the wrong port. Another
is JupyterLab pointed at ``localhost``, which is its own container.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from gradelab import broker

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPOSITORY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def kafka_environment(compose: dict) -> dict[str, str]:
    return {k: str(v) for k, v in compose["services"]["kafka"]["environment"].items()}


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """Parse ``NAME://host:port,...`` into ``{NAME: (host, port)}``."""
    listeners = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        listeners[name] = (host, int(port))
    return listeners


def _published_ports(service: dict) -> dict[int, tuple[str, int]]:
    """Map container port -> (host IP, host port) for ``host_ip:host:container``."""
    published = {}
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        published[int(parts[-1])] = (host_ip, int(parts[-2]))
    return published


def test_compose_kafka_image_matches_local_broker(compose):
    image = compose["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{broker.KAFKA_VERSION}"


def test_compose_kafka_runs_combined_kraft_node(kafka_environment):
    assert kafka_environment["KAFKA_PROCESS_ROLES"] == "broker,controller"
    cluster_id = kafka_environment["CLUSTER_ID"]
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_compose_listeners_serve_host_and_network(kafka_environment):
    listeners = _listeners(kafka_environment["KAFKA_LISTENERS"])
    advertised = _listeners(kafka_environment["KAFKA_ADVERTISED_LISTENERS"])
    assert set(advertised) <= set(listeners)
    assert advertised["HOST"] == ("localhost", 9092)
    assert advertised["INTERNAL"] == ("kafka", 19092)
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port, f"{name} listens on another port"
    controllers = kafka_environment["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    assert not set(controllers) & set(advertised)


def test_compose_security_map_names_every_listener(kafka_environment):
    listeners = _listeners(kafka_environment["KAFKA_LISTENERS"])
    security_map = dict(
        item.split(":")
        for item in kafka_environment["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(security_map) == set(listeners)
    assert set(security_map.values()) == {"PLAINTEXT"}
    assert kafka_environment["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners


def test_compose_controller_quorum_is_consistent(compose, kafka_environment):
    listeners = _listeners(kafka_environment["KAFKA_LISTENERS"])
    (controller_name,) = kafka_environment["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    (voter,) = kafka_environment["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    node_id, _, address = voter.partition("@")
    host, _, port = address.rpartition(":")
    assert node_id == kafka_environment["KAFKA_NODE_ID"]
    assert host in ("kafka", compose["services"]["kafka"]["hostname"])
    assert int(port) == listeners[controller_name][1]


def test_compose_topic_defaults_match_local_broker(kafka_environment):
    assert kafka_environment["KAFKA_NUM_PARTITIONS"] == "3"
    assert kafka_environment["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "1"
    assert kafka_environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert kafka_environment["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert kafka_environment["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert kafka_environment["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"


def test_compose_publishes_client_port_on_loopback(compose):
    published = _published_ports(compose["services"]["kafka"])
    assert published == {9092: ("127.0.0.1", 9092)}


def test_compose_kafka_healthcheck_uses_internal_listener(compose):
    healthcheck = compose["services"]["kafka"]["healthcheck"]
    assert healthcheck["test"][0] == "CMD-SHELL"
    assert "--bootstrap-server kafka:19092" in healthcheck["test"][1]
    assert "-> ERROR" in healthcheck["test"][1]


def test_compose_jupyter_uses_internal_listener(compose, kafka_environment):
    jupyter = compose["services"]["jupyter"]
    advertised = _listeners(kafka_environment["KAFKA_ADVERTISED_LISTENERS"])
    host, port = advertised["INTERNAL"]
    assert jupyter["environment"]["GRADELAB_BOOTSTRAP_SERVERS"] == f"{host}:{port}"
    assert jupyter["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert _published_ports(jupyter) == {8888: ("127.0.0.1", 8888)}


def test_compose_jupyter_dockerfile(compose):
    build = compose["services"]["jupyter"]["build"]
    dockerfile = (REPOSITORY / build["context"] / build["dockerfile"]).read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install --no-deps -e ." in dockerfile
    assert "--notebook-dir=/home/student/gradelab/notebooks" in dockerfile
    assert "EXPOSE 8888" in dockerfile


def test_dockerignore_excludes_local_state():
    ignored = (REPOSITORY / ".dockerignore").read_text().splitlines()
    for entry in (".venv", ".gradelab", "**/credentials.env"):
        assert entry in ignored
