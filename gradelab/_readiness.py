"""Wait until a Kafka cluster responds, and report rejected credentials at once.

kafka-python 3.0.12 drops the bytes that it read together with the end of the
connection (``_read_from_sock`` in ``kafka/net/transport.py``), so it loses the
SaslAuthenticate error response that the broker sends right before it closes.
A wrong password then looks like a network failure and is retried until the
timeout. :func:`check_sasl_credentials` performs the SCRAM exchange itself,
over SASL_PLAINTEXT, to report a rejected password at once.

NOTE: once kafka-python raises SaslAuthenticationFailedError for a rejected
SCRAM password, wait_until_ready can rely on it and this check can go.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import socket
import struct
import time
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import (
    KafkaConfigurationError,
    KafkaError,
    SaslAuthenticationFailedError,
)

from gradelab.errors import (
    AuthenticationFailedError,
    BrokerUnavailableError,
    ConfigError,
)

__all__ = ["check_sasl_credentials", "wait_until_ready"]

log = logging.getLogger(__name__)

# Kafka API keys and error codes, from the Kafka protocol guide.
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
UNSUPPORTED_SASL_MECHANISM = 33
SASL_AUTHENTICATION_FAILED = 58
SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# The same cap as kafka-python, so that a broker cannot demand endless hashing.
MAX_SCRAM_ITERATIONS = 1_000_000


class _ConnectionClosed(Exception):
    """Raised when the broker closes the connection in the middle of a reply."""


def _string(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack(">h", len(data)) + data


class _SaslConnection:
    """A blocking connection that sends SaslHandshake v1 and SaslAuthenticate v0."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._correlation_id = 0

    def request(self, api_key: int, api_version: int, body: bytes) -> bytes:
        self._correlation_id += 1
        header = struct.pack(">hhi", api_key, api_version, self._correlation_id)
        message = header + _string("gradelab-readiness") + body
        self._sock.sendall(struct.pack(">i", len(message)) + message)
        (size,) = struct.unpack(">i", self._receive(4))
        response = self._receive(size)
        # The first 4 bytes are the correlation id.
        return response[4:]

    def _receive(self, count: int) -> bytes:
        chunks = []
        while count:
            chunk = self._sock.recv(count)
            if not chunk:
                raise _ConnectionClosed
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def authenticate(self, token: bytes) -> tuple[int, str, bytes]:
        """Send one SASL token and return the error code, message and reply token."""
        body = self.request(SASL_AUTHENTICATE, 0, struct.pack(">i", len(token)) + token)
        (error_code, message_length) = struct.unpack(">hh", body[:4])
        offset = 4
        message = ""
        if message_length >= 0:
            message = body[offset : offset + message_length].decode("utf-8")
            offset += message_length
        (token_length,) = struct.unpack(">i", body[offset : offset + 4])
        reply = body[offset + 4 : offset + 4 + max(token_length, 0)]
        return error_code, message, reply


def _scram_exchange(
    connection: _SaslConnection, mechanism: str, username: str, password: str
) -> tuple[int, str]:
    """Authenticate with SCRAM (RFC 5802) and return the error code and message."""
    hash_name = SCRAM_HASHES[mechanism]
    nonce = secrets.token_hex(16)
    client_first_bare = f"n={username},r={nonce}"
    error_code, message, server_first = connection.authenticate(
        f"n,,{client_first_bare}".encode()
    )
    if error_code:
        return error_code, message
    fields = dict(
        item.split("=", 1) for item in server_first.decode("utf-8").split(",")
    )
    if not fields["r"].startswith(nonce):
        return SASL_AUTHENTICATION_FAILED, "the broker returned another nonce"
    iterations = int(fields["i"])
    if iterations > MAX_SCRAM_ITERATIONS:
        return SASL_AUTHENTICATION_FAILED, f"{iterations} SCRAM iterations"
    salted = hashlib.pbkdf2_hmac(
        hash_name, password.encode("utf-8"), base64.b64decode(fields["s"]), iterations
    )
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    client_final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{client_first_bare},{server_first.decode()},{client_final_bare}"
    signature = hmac.digest(stored_key, auth_message.encode("utf-8"), hash_name)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{client_final_bare},p={base64.b64encode(proof).decode()}"
    error_code, message, _ = connection.authenticate(final.encode("utf-8"))
    return error_code, message


def check_sasl_credentials(
    host: str,
    port: int,
    mechanism: str,
    username: str,
    password: str,
    timeout: float,
) -> bool:
    """Authenticate once against a SASL_PLAINTEXT listener, then disconnect.

    Only the broker's acceptance of the credentials is checked. The broker's
    own SCRAM signature is not verified, because no data follows.

    Parameters
    ----------
    host, port : str, int
        The listener to try.
    mechanism : str
        ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``.
    username, password : str
        The credentials to check. They are sent only to this listener.
    timeout : float
        Seconds for the connection and each reply.

    Returns
    -------
    bool
        True when the broker accepted the credentials, False when the result
        is unknown because the broker did not reply (it may still be starting).

    Raises
    ------
    AuthenticationFailedError
        If the broker rejected the credentials or does not enable ``mechanism``.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            connection = _SaslConnection(sock)
            body = connection.request(SASL_HANDSHAKE, 1, _string(mechanism))
            (handshake_error,) = struct.unpack(">h", body[:2])
            error_code, message = handshake_error, ""
            if not handshake_error:
                error_code, message = _scram_exchange(
                    connection, mechanism, username, password
                )
    # AuthenticationFailedError is an OSError too, so it is raised only below.
    # A malformed SCRAM message (KeyError, ValueError) counts as no response.
    except (OSError, _ConnectionClosed, struct.error, KeyError, ValueError) as exc:
        log.debug("SASL check at %s:%s got no response: %r", host, port, exc)
        return False
    if handshake_error == UNSUPPORTED_SASL_MECHANISM:
        raise AuthenticationFailedError(
            f"The broker at {host}:{port} does not enable the SASL mechanism "
            f"{mechanism}. Set GRADELAB_SASL_MECHANISM to a mechanism that the "
            "broker enables."
        )
    if handshake_error:
        raise AuthenticationFailedError(
            f"The broker at {host}:{port} rejected the SASL handshake (Kafka "
            f"error code {handshake_error}), so this listener probably does not "
            "use SASL. Set GRADELAB_SECURITY_PROTOCOL to the listener's protocol, "
            "for example PLAINTEXT."
        )
    if error_code:
        raise AuthenticationFailedError(
            f"The broker at {host}:{port} rejected the {mechanism} credentials of "
            f"user {username!r}: {message or f'Kafka error code {error_code}'}. "
            "Check GRADELAB_SASL_USERNAME and GRADELAB_SASL_PASSWORD, or point "
            "GRADELAB_CREDENTIALS_FILE at the credentials.env that `gradelab "
            "broker start --auth` wrote."
        )
    return True


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


def _first_reachable(addresses: list[tuple[str, int]]) -> tuple[str, int] | None:
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return host, port
        except OSError:
            continue
    return None


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
    """Wait until a Kafka cluster responds to a metadata request.

    Each round first opens a plain TCP connection, which is cheap and quiet
    while a JVM starts. With SASL_PLAINTEXT and SCRAM it then checks
    the credentials, and finally asks for the cluster metadata with
    kafka-python until at least ``min_brokers`` unfenced brokers are listed.

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
        If the cluster does not respond within ``timeout`` seconds.
    AuthenticationFailedError
        If the broker rejects the SASL credentials. With SASL_PLAINTEXT and
        SCRAM this is raised on the first rejection. With other security
        settings a rejection shows as BrokerUnavailableError after the timeout.
    """
    deadline = time.monotonic() + timeout
    addresses = _parse_bootstrap_servers(bootstrap_servers)
    options = {"reconnect_backoff_max_ms": 1000, "request_timeout_ms": 5000}
    options.update(client_options)
    mechanism = options.get("sasl_mechanism")
    check_credentials = (
        options.get("security_protocol") == "SASL_PLAINTEXT"
        and mechanism in SCRAM_HASHES
    )
    last_error = "no TCP connection"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailableError(
                bootstrap_servers, f"{last_error} within {timeout:g} s"
            )
        address = _first_reachable(addresses)
        if address is None:
            time.sleep(min(0.2, remaining))
            continue
        if check_credentials and not check_sasl_credentials(
            *address,
            mechanism,
            options.get("sasl_plain_username") or "",
            options.get("sasl_plain_password") or "",
            timeout=min(remaining, 5.0),
        ):
            last_error = "no response to a SASL handshake"
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
            continue
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            continue
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=[s.strip() for s in bootstrap_servers.split(",")],
                bootstrap_timeout_ms=remaining_ms,
                **options,
            )
        except KafkaConfigurationError as exc:
            raise ConfigError(
                f"Invalid Kafka client options for {bootstrap_servers}: {exc}. "
                "Pass only KafkaAdminClient options, without bootstrap_servers."
            ) from exc
        except SaslAuthenticationFailedError as exc:
            raise AuthenticationFailedError(
                f"The broker at {bootstrap_servers} rejected the SASL credentials "
                f"of user {options.get('sasl_plain_username')!r} ({exc}). Check "
                "GRADELAB_SASL_USERNAME and GRADELAB_SASL_PASSWORD."
            ) from exc
        except KafkaError as exc:
            raise BrokerUnavailableError(bootstrap_servers, repr(exc)) from exc
        try:
            live = _count_live_brokers(admin)
        except KafkaError as exc:
            last_error = f"metadata request failed ({exc!r})"
            live = 0
        finally:
            admin.close()
        if live >= min_brokers:
            return
        if live:
            last_error = f"only {live} of {min_brokers} brokers live"
        time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
