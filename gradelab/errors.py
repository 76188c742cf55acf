"""Exceptions raised by gradelab.

Every message is a full sentence that names the value at fault and says what
to do next, so the CLI, the notebooks and the dashboard can show it as is.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailedError",
    "BrokerUnavailableError",
    "ConfigError",
    "GradebookError",
    "GradelabError",
    "InvalidRecordError",
    "LocalBrokerError",
]


class GradelabError(Exception):
    """Raised for any failure that gradelab explains to its user."""


class ConfigError(GradelabError, ValueError):
    """Raised when a setting, option or environment variable is invalid."""


class InvalidRecordError(GradelabError, ValueError):
    """Raised when a score record fails validation.

    Parameters
    ----------
    message : str
        The full explanation, naming the field and the value.
    reason : str
        A short machine-readable code (for example ``score-out-of-range``),
        used in dead-letter headers and in counters.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class GradebookError(GradelabError, ValueError):
    """Raised when a gradebook file cannot be read or mapped to score records."""


class BrokerUnavailableError(GradelabError, ConnectionError):
    """Raised when no Kafka broker responds at the configured bootstrap servers."""

    def __init__(self, bootstrap_servers: str, detail: str = "") -> None:
        message = (
            f"No Kafka broker answered at {bootstrap_servers}. "
            "Start one with `gradelab broker start` (or `docker compose up -d "
            "kafka`), or point GRADELAB_BOOTSTRAP_SERVERS / --bootstrap-server "
            "at a running cluster."
        )
        if detail:
            message = f"{message} ({detail})"
        super().__init__(message)
        self.bootstrap_servers = bootstrap_servers


class AuthenticationFailedError(GradelabError, PermissionError):
    """Raised when the broker rejects the configured SASL credentials."""


class LocalBrokerError(GradelabError, RuntimeError):
    """Raised when the project's local Kafka broker cannot be installed, started
    or stopped.

    Parameters
    ----------
    message : str
        What happened and what to do next.
    log_file : pathlib.Path or None
        The broker's log file, where the details are, when there is one.
    """

    def __init__(self, message: str, log_file=None) -> None:
        if log_file is not None:
            message = f"{message} See the broker log at {log_file}."
        super().__init__(message)
        self.log_file = log_file
