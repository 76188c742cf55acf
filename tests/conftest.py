"""Shared fixtures: the project's real Kafka broker and per-test topics.

The broker is started once per test session with ``gradelab.broker.start``
(the same code as ``gradelab broker start``) and stopped at the end if the
session started it. Every integration test writes to its own topic, so tests
never read each other's records.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gradelab import broker
from gradelab.config import Settings
from gradelab.producer import ensure_topic

REPOSITORY = Path(__file__).resolve().parent.parent
SHARED_DATA = REPOSITORY.parent / "shared" / "data"
BOOTSTRAP_SERVERS = os.environ.get("GRADELAB_TEST_BOOTSTRAP_SERVERS", "localhost:9092")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's GRADELAB_* variables out of the tests."""
    for name in list(os.environ):
        if name.startswith("GRADELAB_") and name != "GRADELAB_HOME":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Start the local broker once per session; yield its bootstrap servers."""
    if "GRADELAB_TEST_BOOTSTRAP_SERVERS" in os.environ:
        yield BOOTSTRAP_SERVERS  # an external cluster, managed by its owner
        return
    # GRADELAB_TEST_PORT lets a second checkout test beside a running broker.
    port = int(os.environ.get("GRADELAB_TEST_PORT", broker.DEFAULT_PORT))
    info = broker.start(port=port)
    yield info.bootstrap_servers
    if not info.already_running:
        broker.stop()


@pytest.fixture
def settings(kafka: str, request: pytest.FixtureRequest) -> Settings:
    """Settings for the session broker, with a topic of this test's own."""
    return Settings(bootstrap_servers=kafka, topic=_topic_name(request.node.name))


@pytest.fixture
def topic_factory(kafka: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create fresh topics on the session broker: ``topic_factory(partitions=3)``."""

    def create(partitions: int = 3, **config: str) -> str:
        topic = _topic_name(request.node.name)
        ensure_topic(
            Settings(bootstrap_servers=kafka, topic=topic),
            partitions=partitions,
            config=config or None,
        )
        return topic

    return create


def _topic_name(test_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", test_name)[:60]
    return f"test-{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def shared_gradebook() -> Path:
    """The real mathematics gradebook shipped beside the project, when present."""
    path = SHARED_DATA / "student-performance" / "student-mat.csv"
    if not path.exists():
        pytest.skip(f"The real gradebook is not present at {path}.")
    return path
