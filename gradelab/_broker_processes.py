"""Processes of the local broker: launch detached JVMs, find them, stop them.

Uses POSIX sessions and signals, so it runs on Linux and macOS but not on
Windows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from gradelab.errors import LocalBrokerError

__all__ = [
    "PASSWORD_VARIABLE",
    "is_alive",
    "launch",
    "log_excerpt",
    "port_in_use",
    "process_command_line",
    "terminate",
]

log = logging.getLogger(__name__)

PASSWORD_VARIABLE = "GRADELAB_SASL_PASSWORD"


def process_command_line(pid: int) -> str | None:
    """Return the command line of a live process, or None if it is gone.

    A zombie counts as gone once all its threads have exited: a JVM started
    by :func:`launch` is not the caller's child, so whichever process adopted
    it has to reap it.
    """
    if Path("/proc/self").is_dir():
        proc = Path("/proc") / str(pid)
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
            # A killed JVM's main thread turns zombie while other threads are
            # still closing its sockets, so only a lone zombie thread is gone.
            if state in ("Z", "X") and len(os.listdir(proc / "task")) <= 1:
                return None
            return command
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
    # Without /proc (macOS), ps reports the state and the full command.
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


def is_alive(pid: int) -> bool:
    """Check whether ``pid`` is a live process (not a zombie)."""
    return process_command_line(pid) is not None


def port_in_use(port: int) -> bool:
    """Check whether a listener can bind ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The JVM also binds with SO_REUSEADDR, so the closed sockets of a
        # stopped broker (in TIME_WAIT) do not count as in use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def launch(command: list[str], output_file: Path, cwd: Path) -> int:
    """Start ``command`` detached, append its output to ``output_file``.

    A short-lived shell in a new session starts the command in the background
    and exits. The command therefore outlives the caller, ignores Ctrl-C in the
    caller's terminal, and never stays behind as the caller's zombie.

    Returns
    -------
    int
        The pid of the started command.
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
    pid = result.stdout.strip()
    if result.returncode != 0 or not pid.isdigit():
        raise LocalBrokerError(
            f"Could not start {command[0]} in the background "
            f"({result.stderr.strip() or 'no process id returned'})."
        )
    return int(pid)


def terminate(pids: dict[int, int], timeout: float) -> None:
    """Stop processes keyed by node id: SIGTERM, then SIGKILL after ``timeout`` s.

    Returns once every process has exited, or 10 s after the SIGKILL.
    """
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    alive = _wait_for_exit(pids, timeout)
    for node_id, pid in alive.items():
        log.warning(
            "Kafka node %s (pid %s) did not stop within %.0f s, killing it",
            node_id,
            pid,
            timeout,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_for_exit(alive, 10.0)


def _wait_for_exit(pids: dict[int, int], timeout: float) -> dict[int, int]:
    """Wait until the processes exit, and return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = {node_id: pid for node_id, pid in pids.items() if is_alive(pid)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {node_id: pid for node_id, pid in alive.items() if is_alive(pid)}
    return alive


def log_excerpt(log_file: Path, output_file: Path, count: int = 8) -> str:
    """Return the last ERROR lines of a broker log, else the end of its output.

    The output file contains what the JVM wrote to stdout and stderr, which
    explains failures that happen before logging starts.
    """
    lines: list[str] = []
    if log_file.is_file():
        tail = log_file.read_text("utf-8", errors="replace").splitlines()[-400:]
        lines = [line for line in tail if " ERROR " in line or " FATAL " in line]
    if not lines and output_file.is_file():
        lines = output_file.read_text("utf-8", errors="replace").splitlines()
    return "\n".join(line[:300] for line in lines[-count:]) or "(no output)"
