"""Install Kafka's jars with Maven and locate the Java runtime that runs them.

Kafka is not on PyPI, so :func:`install` writes a small Maven project whose
dependencies are the broker, the command-line tools and a log4j2 binding, and
copies every runtime jar into ``<home>/kafka-<version>/libs``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from gradelab.errors import LocalBrokerError

__all__ = [
    "KAFKA_VERSION",
    "file_lock",
    "gradelab_home",
    "install",
    "require_java",
    "tool_command",
]

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
# Kafka 4.1.1 depends on SLF4J 1.7, so the log4j2 binding must be the SLF4J 1.x
# one (log4j-slf4j-impl). With the SLF4J 2 binding the broker writes no logs.
LOG4J_VERSION = "2.24.3"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA_VERSION = 17


def gradelab_home() -> Path:
    """Return the directory for gradelab's jars and broker state.

    The ``GRADELAB_HOME`` environment variable wins. In a source checkout
    (an editable install) it is ``.gradelab`` at the repository root, and
    otherwise ``~/.cache/gradelab``.
    """
    configured = os.environ.get("GRADELAB_HOME")
    if configured:
        # Absolute, because the JVMs run with the state directory as their cwd.
        return Path(configured).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    pyproject = checkout / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text(encoding="utf-8", errors="replace")
        if re.search(r'^name\s*=\s*"gradelab"', text, re.MULTILINE):
            return checkout / ".gradelab"
    return Path.home() / ".cache" / "gradelab"


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


def require_java() -> str:
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
    return require_java(), mvn


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
def file_lock(path: Path) -> Iterator[None]:
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
    home = gradelab_home() if home is None else Path(home).expanduser().resolve()
    kafka_dir = home / f"kafka-{KAFKA_VERSION}"
    libs = _installed_libs(kafka_dir)
    if libs is not None:
        return libs
    _, mvn = _require_build_tools()
    with file_lock(kafka_dir / "install.lock"):
        # Another process may have finished the install while this one waited.
        libs = _installed_libs(kafka_dir)
        if libs is not None:
            return libs
        return _run_maven(mvn, kafka_dir)


def _run_maven(mvn: str, kafka_dir: Path) -> Path:
    """Copy the runtime jars into ``libs.partial``, then rename it to ``libs``."""
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
    return [require_java(), "-cp", str(libs / "*"), main_class, *args]
