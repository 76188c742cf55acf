"""SASL/SCRAM users of the local broker and the credentials file for clients.

The student's user gets the password from GRADELAB_SASL_PASSWORD, or a
generated one, and it is written only to ``credentials.env`` (mode 0600), in
the format that :class:`gradelab.config.Settings` reads. The brokers talk to
each other as a separate user whose generated password stays in the state
directory.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from pathlib import Path

from gradelab._broker_config import (
    INTER_BROKER_USERNAME,
    SCRAM_MECHANISM,
    write_private_file,
)
from gradelab._broker_processes import PASSWORD_VARIABLE
from gradelab.errors import ConfigError, LocalBrokerError

__all__ = [
    "CREDENTIALS_FILE",
    "check_username",
    "prepare_passwords",
]

CREDENTIALS_FILE = "credentials.env"
INTER_BROKER_SECRET_FILE = "inter-broker.secret"
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_username(username: str) -> None:
    """Raise ConfigError unless ``username`` is a safe SCRAM user name.

    SCRAM escapes ``,`` and ``=`` in user names and kafka-python does not,
    so only letters, digits, ``.``, ``_`` and ``-`` are accepted.
    """
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


def _requested_password() -> str | None:
    """Return GRADELAB_SASL_PASSWORD if set, after checking it can be stored."""
    password = os.environ.get(PASSWORD_VARIABLE)
    if not password:
        return None
    # Settings strips spaces and quotes around values in credentials.env, so
    # such passwords would not survive the round trip.
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


def _read_stored_password(path: Path) -> str:
    for line in path.read_text("utf-8").splitlines():
        name, separator, value = line.partition("=")
        if separator and name.strip() == PASSWORD_VARIABLE:
            return value.strip()
    raise LocalBrokerError(
        f"The credentials file {path} has no {PASSWORD_VARIABLE} line. Run "
        f"`gradelab broker stop`, delete {path.parent} and start again."
    )


def _write_credentials(path: Path, username: str, password: str) -> None:
    text = (
        "# SASL settings for the local gradelab broker. Point clients at this\n"
        "# file with GRADELAB_CREDENTIALS_FILE. Keep it private.\n"
        "GRADELAB_SECURITY_PROTOCOL=SASL_PLAINTEXT\n"
        f"GRADELAB_SASL_MECHANISM={SCRAM_MECHANISM}\n"
        f"GRADELAB_SASL_USERNAME={username}\n"
        f"{PASSWORD_VARIABLE}={password}\n"
    )
    write_private_file(path, text)


def prepare_passwords(state_dir: Path, username: str) -> tuple[str, str]:
    """Return the student's and the brokers' passwords, creating them once.

    The passwords are fixed when the storage is formatted, so later starts
    reuse the stored ones.

    Raises
    ------
    ConfigError
        If GRADELAB_SASL_PASSWORD cannot be stored in credentials.env.
    LocalBrokerError
        If GRADELAB_SASL_PASSWORD differs from the stored password.
    """
    credentials = state_dir / CREDENTIALS_FILE
    secret_file = state_dir / INTER_BROKER_SECRET_FILE
    if credentials.is_file() and secret_file.is_file():
        stored = _read_stored_password(credentials)
        requested = _requested_password()
        if requested is not None and not hmac.compare_digest(
            requested.encode(), stored.encode()
        ):
            raise LocalBrokerError(
                f"{PASSWORD_VARIABLE} differs from the password that the broker "
                f"in {state_dir} was created with, and a SCRAM password is fixed "
                f"when the storage is formatted. Unset {PASSWORD_VARIABLE} to use "
                f"the stored one from {credentials}, or run `gradelab broker "
                f"stop`, delete {state_dir} and start again."
            )
        return stored, secret_file.read_text("utf-8").strip()
    password = _requested_password() or secrets.token_urlsafe(18)
    inter_broker_password = secrets.token_urlsafe(24)
    _write_credentials(credentials, username, password)
    write_private_file(secret_file, inter_broker_password + "\n")
    return password, inter_broker_password
