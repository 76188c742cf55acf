"""Creating kafka-python clients with bounded waits and clear errors.

kafka-python reports a missing broker as a bare timeout and a rejected
password as a SASL error deep in a stack trace. Every gradelab client is made
here, so both become one-sentence errors that name the address and the fix.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from kafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)

from gradelab.config import Settings
from gradelab.errors import AuthenticationFailedError, BrokerUnavailableError

__all__ = ["connect"]

logger = logging.getLogger(__name__)

Client = TypeVar("Client")


def connect(client_class: type[Client], settings: Settings, **config: Any) -> Client:
    """Create a kafka-python client, waiting at most ``settings.connect_timeout``.

    Parameters
    ----------
    client_class : type
        ``KafkaProducer``, ``KafkaConsumer`` or ``KafkaAdminClient``.
    settings : Settings
        Used for the address and the time limit in errors.
    **config
        The client's options, usually including ``settings.kafka_options()``.

    Raises
    ------
    BrokerUnavailableError
        If no broker responds in time.
    AuthenticationFailedError
        If the broker rejects the SASL user name or password.
    """
    config.setdefault("bootstrap_timeout_ms", int(settings.connect_timeout * 1000))
    try:
        client = client_class(**config)
    except (KafkaConnectionError, KafkaTimeoutError) as exc:
        raise BrokerUnavailableError(
            settings.bootstrap_servers,
            f"waited {settings.connect_timeout:g} s",
        ) from exc
    except (SaslAuthenticationFailedError, UnsupportedSaslMechanismError) as exc:
        # The broker's message names the mechanism, never the password.
        raise AuthenticationFailedError(
            f"The broker at {settings.bootstrap_servers} rejected the SASL "
            f"credentials of user {settings.sasl_username!r} "
            f"({settings.sasl_mechanism}): {exc}. Check GRADELAB_SASL_USERNAME "
            "and GRADELAB_SASL_PASSWORD, or the file in GRADELAB_CREDENTIALS_FILE."
        ) from exc
    logger.debug(
        "Connected a %s to %s.", client_class.__name__, settings.bootstrap_servers
    )
    return client
