"""Client settings: defaults, then environment variables, then arguments.

The same code runs against the local broker, the Docker Compose broker, a
course cluster or a managed service; only these settings change. Secrets are
read from the environment (or an ignored credentials file) and never appear in
a ``repr``, a log line or an error message.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradelab.errors import ConfigError

__all__ = [
    "DEFAULT_BOOTSTRAP_SERVERS",
    "DEFAULT_TOPIC",
    "ENVIRONMENT_VARIABLES",
    "Settings",
]

DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"
DEFAULT_TOPIC = "student-scores"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# The characters and length that Kafka accepts in a topic name.
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

# Setting name -> environment variable that overrides its default.
ENVIRONMENT_VARIABLES = {
    "bootstrap_servers": "GRADELAB_BOOTSTRAP_SERVERS",
    "topic": "GRADELAB_TOPIC",
    "security_protocol": "GRADELAB_SECURITY_PROTOCOL",
    "sasl_mechanism": "GRADELAB_SASL_MECHANISM",
    "sasl_username": "GRADELAB_SASL_USERNAME",
    "sasl_password": "GRADELAB_SASL_PASSWORD",
    "ssl_cafile": "GRADELAB_SSL_CAFILE",
    "connect_timeout": "GRADELAB_CONNECT_TIMEOUT",
}
CREDENTIALS_FILE_VARIABLE = "GRADELAB_CREDENTIALS_FILE"


@dataclass(frozen=True)
class Settings:
    """Connection settings shared by every gradelab client.

    Build one with :meth:`Settings.load`, which applies the defaults, then the
    environment, then explicit arguments. Instances are immutable; use
    :func:`dataclasses.replace` to derive a variant.
    """

    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    topic: str = DEFAULT_TOPIC
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    client_id: str = "gradelab"
    # Seconds a client waits for a broker before it reports that none responds.
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.bootstrap_servers or not self.bootstrap_servers.strip():
            raise ConfigError(
                "The bootstrap servers setting is empty. Set it to host:port, "
                f"for example {DEFAULT_BOOTSTRAP_SERVERS}."
            )
        for server in self.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            if (
                not host
                or "/" in host
                or not port.isdigit()
                or not 1 <= int(port) <= 65535
            ):
                raise ConfigError(
                    f"Invalid bootstrap server {server.strip()!r}: expected "
                    "host:port with a port from 1 to 65535 and no scheme, for "
                    f"example {DEFAULT_BOOTSTRAP_SERVERS}."
                )
        if not self.topic or not self.topic.strip():
            raise ConfigError("The topic name is empty. Pass a topic name.")
        if not TOPIC_NAME.fullmatch(self.topic) or self.topic in (".", ".."):
            raise ConfigError(
                f"Invalid topic name {self.topic!r}: Kafka topic names are 1 to "
                "249 characters from ASCII letters, digits, '.', '_' and '-', "
                "for example student-scores."
            )
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"Invalid security protocol {self.security_protocol!r}: expected "
                f"one of {', '.join(SECURITY_PROTOCOLS)}."
            )
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"Invalid SASL mechanism {self.sasl_mechanism!r} for "
                    f"{self.security_protocol}: set GRADELAB_SASL_MECHANISM to one "
                    f"of {', '.join(SASL_MECHANISMS)}."
                )
            if not self.sasl_username or self.sasl_password is None:
                raise ConfigError(
                    f"{self.security_protocol} needs a user name and a password: "
                    "set GRADELAB_SASL_USERNAME and GRADELAB_SASL_PASSWORD, or "
                    f"name a credentials file in {CREDENTIALS_FILE_VARIABLE}."
                )
        timeout = self.connect_timeout
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ConfigError(
                f"Invalid connect timeout {self.connect_timeout!r}: expected a "
                "positive number of seconds (the connect_timeout setting or "
                "GRADELAB_CONNECT_TIMEOUT)."
            )

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Build settings from defaults, the environment and ``overrides``.

        Parameters
        ----------
        environ : mapping, optional
            The environment to read; defaults to ``os.environ``. It is never
            modified.
        **overrides
            Setting values that win over the environment. ``None`` means "not
            given", so argparse results can be passed straight through.

        Raises
        ------
        ConfigError
            If an override names an unknown setting or a value is invalid.
        """
        environ = os.environ if environ is None else environ
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"Unknown setting(s): {', '.join(unknown)}. "
                f"Known settings: {', '.join(sorted(known))}."
            )
        values: dict[str, Any] = {}
        values.update(_read_credentials_file(environ))
        for name, variable in ENVIRONMENT_VARIABLES.items():
            if environ.get(variable):
                values[name] = environ[variable]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "connect_timeout" in values:
            try:
                values["connect_timeout"] = float(values["connect_timeout"])
            except (TypeError, ValueError):
                source = "connect_timeout"
                if "connect_timeout" not in overrides:
                    source = ENVIRONMENT_VARIABLES["connect_timeout"]
                raise ConfigError(
                    f"Invalid {source} {values['connect_timeout']!r}: "
                    "expected a number of seconds, for example 10."
                ) from None
        return cls(**values)

    def kafka_options(self) -> dict[str, Any]:
        """Return the keyword arguments that every kafka-python client takes."""
        options: dict[str, Any] = {
            "bootstrap_servers": [
                server.strip() for server in self.bootstrap_servers.split(",")
            ],
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": max(int(self.connect_timeout * 1000), 5000),
        }
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        if self.ssl_cafile:
            options["ssl_cafile"] = self.ssl_cafile
        return options


def _read_credentials_file(environ: Mapping[str, str]) -> dict[str, str]:
    """Read ``NAME=value`` lines from the file named in GRADELAB_CREDENTIALS_FILE.

    The file uses the same variable names as the environment, so a student
    can keep a course cluster's password out of notebooks and shell history.
    """
    path = environ.get(CREDENTIALS_FILE_VARIABLE)
    if not path:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the credentials file {path!r} named in "
            f"{CREDENTIALS_FILE_VARIABLE}: {exc.strerror}. Fix the path or unset "
            "the variable."
        ) from exc
    by_variable = {variable: name for name, variable in ENVIRONMENT_VARIABLES.items()}
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        variable, separator, value = line.partition("=")
        variable = variable.strip().removeprefix("export ").strip()
        if not separator or variable not in by_variable:
            raise ConfigError(
                f"Line {number} of the credentials file {path!r} is not a "
                f"NAME=value line with a known name ({', '.join(by_variable)})."
            )
        values[by_variable[variable]] = _unquote(value.strip())
    return values


def _unquote(value: str) -> str:
    # Remove one pair of matching quotes only, so a password that starts or
    # ends with a quote character is kept as written.
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
