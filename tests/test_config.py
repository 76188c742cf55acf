"""Tests for gradelab.config: defaults, environment, arguments and secrets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gradelab.config import (
    DEFAULT_BOOTSTRAP_SERVERS,
    DEFAULT_TOPIC,
    ENVIRONMENT_VARIABLES,
    Settings,
)
from gradelab.errors import ConfigError

PASSWORD = "s3cr3t-Pa55word"

SASL_ENVIRONMENT = {
    "GRADELAB_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "GRADELAB_SASL_MECHANISM": "SCRAM-SHA-256",
    "GRADELAB_SASL_USERNAME": "student",
    "GRADELAB_SASL_PASSWORD": PASSWORD,
}


def test_load_defaults_without_environment() -> None:
    settings = Settings.load(environ={})

    assert settings.bootstrap_servers == DEFAULT_BOOTSTRAP_SERVERS
    assert settings.topic == DEFAULT_TOPIC
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.sasl_password is None
    assert settings.connect_timeout == 10.0


def test_load_environment_overrides_defaults() -> None:
    environ = {
        "GRADELAB_BOOTSTRAP_SERVERS": "broker-1:19092",
        "GRADELAB_TOPIC": "scores-from-env",
        "GRADELAB_CONNECT_TIMEOUT": "2.5",
    }

    settings = Settings.load(environ=environ)

    assert settings.bootstrap_servers == "broker-1:19092"
    assert settings.topic == "scores-from-env"
    assert settings.connect_timeout == 2.5


def test_load_arguments_override_environment() -> None:
    environ = {
        "GRADELAB_BOOTSTRAP_SERVERS": "broker-1:19092",
        "GRADELAB_TOPIC": "scores-from-env",
    }

    settings = Settings.load(environ=environ, topic="scores-from-args")

    assert settings.topic == "scores-from-args"
    assert settings.bootstrap_servers == "broker-1:19092"


def test_load_none_argument_means_not_given() -> None:
    environ = {"GRADELAB_TOPIC": "scores-from-env"}

    settings = Settings.load(environ=environ, topic=None, bootstrap_servers=None)

    assert settings.topic == "scores-from-env"
    assert settings.bootstrap_servers == DEFAULT_BOOTSTRAP_SERVERS


def test_load_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADELAB_TOPIC", "scores-from-process")

    assert Settings.load().topic == "scores-from-process"


def test_load_unknown_keys_listed() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={}, topik="x", bootstrap="y")

    message = str(caught.value)
    assert "topik" in message
    assert "bootstrap" in message
    assert "topic" in message  # the known names are listed
    assert "bootstrap_servers" in message


def test_load_caller_mappings_not_mutated() -> None:
    environ = dict(SASL_ENVIRONMENT, GRADELAB_CONNECT_TIMEOUT="3")
    environ_before = dict(environ)
    overrides = {"topic": "mine", "bootstrap_servers": None}
    overrides_before = dict(overrides)

    Settings.load(environ=environ, **overrides)

    assert environ == environ_before
    assert overrides == overrides_before


def test_settings_frozen() -> None:
    settings = Settings.load(environ={})

    with pytest.raises(AttributeError):
        settings.topic = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "servers",
    ["", "   ", "localhost", "localhost:", ":9092", "localhost:abc", "a:1,"],
)
def test_bootstrap_servers_invalid(servers: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={}, bootstrap_servers=servers)

    assert "bootstrap server" in str(caught.value)


def test_bootstrap_servers_list_stripped() -> None:
    settings = Settings.load(environ={}, bootstrap_servers="a:1, b:2")

    assert settings.kafka_options()["bootstrap_servers"] == ["a:1", "b:2"]


@pytest.mark.parametrize("topic", ["", " ", "two words", "é", ".", "..", "x" * 250])
def test_topic_invalid(topic: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={}, topic=topic)

    assert "topic" in str(caught.value)


@pytest.mark.parametrize("topic", ["student-scores", "a.b_c-1", "x" * 249])
def test_topic_valid(topic: str) -> None:
    assert Settings.load(environ={}, topic=topic).topic == topic


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-1", "0", ""])
def test_connect_timeout_invalid_environment(value: str) -> None:
    environ = {"GRADELAB_CONNECT_TIMEOUT": value}
    if value == "":
        # An empty variable counts as unset.
        assert Settings.load(environ=environ).connect_timeout == 10.0
        return

    with pytest.raises(ConfigError) as caught:
        Settings.load(environ=environ)

    assert "GRADELAB_CONNECT_TIMEOUT" in str(caught.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, 0, -2.0, "5", True])
def test_connect_timeout_invalid_direct(value: object) -> None:
    with pytest.raises(ConfigError):
        Settings(connect_timeout=value)  # type: ignore[arg-type]


def test_security_protocol_invalid() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"GRADELAB_SECURITY_PROTOCOL": "sasl_ssl"})

    assert "'sasl_ssl'" in str(caught.value)
    assert "SASL_SSL" in str(caught.value)


def test_sasl_settings_loaded_from_environment() -> None:
    settings = Settings.load(environ=SASL_ENVIRONMENT)
    options = settings.kafka_options()

    assert settings.security_protocol == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "student"
    assert options["sasl_plain_password"] == PASSWORD


def test_sasl_mechanism_missing_rejected() -> None:
    environ = dict(SASL_ENVIRONMENT)
    del environ["GRADELAB_SASL_MECHANISM"]

    with pytest.raises(ConfigError) as caught:
        Settings.load(environ=environ)

    assert "GRADELAB_SASL_MECHANISM" in str(caught.value)


def test_sasl_mechanism_unsupported_rejected() -> None:
    environ = dict(SASL_ENVIRONMENT, GRADELAB_SASL_MECHANISM="GSSAPI")

    with pytest.raises(ConfigError) as caught:
        Settings.load(environ=environ)

    assert "'GSSAPI'" in str(caught.value)


@pytest.mark.parametrize(
    "variable", ["GRADELAB_SASL_USERNAME", "GRADELAB_SASL_PASSWORD"]
)
def test_sasl_credentials_missing_rejected(variable: str) -> None:
    environ = dict(SASL_ENVIRONMENT)
    del environ[variable]

    with pytest.raises(ConfigError) as caught:
        Settings.load(environ=environ)

    assert variable in str(caught.value)


def test_plaintext_options_have_no_sasl() -> None:
    options = Settings.load(environ={}).kafka_options()

    assert "sasl_mechanism" not in options
    assert "sasl_plain_password" not in options
    assert options["security_protocol"] == "PLAINTEXT"


def test_ssl_cafile_passed_through() -> None:
    settings = Settings.load(environ={"GRADELAB_SSL_CAFILE": "/etc/ca.pem"})

    assert settings.kafka_options()["ssl_cafile"] == "/etc/ca.pem"


def test_password_never_in_repr() -> None:
    settings = Settings.load(environ=SASL_ENVIRONMENT)

    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)


def test_password_never_in_errors(tmp_path: Path) -> None:
    bad_protocol = dict(SASL_ENVIRONMENT, GRADELAB_SASL_MECHANISM="nope")
    credentials = tmp_path / "credentials"
    credentials.write_text(f"GRADELAB_SASL_PASWORD={PASSWORD}\n", encoding="utf-8")
    bad_file = {"GRADELAB_CREDENTIALS_FILE": str(credentials)}

    for environ in (bad_protocol, bad_file):
        with pytest.raises(ConfigError) as caught:
            Settings.load(environ=environ)
        assert PASSWORD not in str(caught.value)


def test_environment_variables_cover_settings() -> None:
    assert set(ENVIRONMENT_VARIABLES) <= set(Settings.__dataclass_fields__)
    for variable in ENVIRONMENT_VARIABLES.values():
        assert variable.startswith("GRADELAB_")


def test_credentials_file_parsed(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.env"
    credentials.write_text(
        "# course cluster\n"
        "\n"
        "export GRADELAB_SECURITY_PROTOCOL=SASL_SSL\n"
        "GRADELAB_SASL_MECHANISM = SCRAM-SHA-512\n"
        "GRADELAB_SASL_USERNAME='student'\n"
        'GRADELAB_SASL_PASSWORD="pa=ss"\n',
        encoding="utf-8",
    )

    settings = Settings.load(environ={"GRADELAB_CREDENTIALS_FILE": str(credentials)})

    assert settings.security_protocol == "SASL_SSL"
    assert settings.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.sasl_username == "student"
    assert settings.sasl_password == "pa=ss"


def test_credentials_file_keeps_unpaired_quotes(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.env"
    credentials.write_text(
        "GRADELAB_SECURITY_PROTOCOL=SASL_PLAINTEXT\n"
        "GRADELAB_SASL_MECHANISM=PLAIN\n"
        "GRADELAB_SASL_USERNAME=student\n"
        "GRADELAB_SASL_PASSWORD=abc\"'\n",
        encoding="utf-8",
    )

    settings = Settings.load(environ={"GRADELAB_CREDENTIALS_FILE": str(credentials)})

    assert settings.sasl_password == "abc\"'"


def test_credentials_file_environment_wins(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.env"
    credentials.write_text("GRADELAB_TOPIC=from-file\n", encoding="utf-8")
    environ = {
        "GRADELAB_CREDENTIALS_FILE": str(credentials),
        "GRADELAB_TOPIC": "from-env",
    }

    assert Settings.load(environ=environ).topic == "from-env"
    assert Settings.load(environ=environ, topic="from-args").topic == "from-args"


def test_credentials_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent.env"

    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"GRADELAB_CREDENTIALS_FILE": str(path)})

    assert str(path) in str(caught.value)
    assert "GRADELAB_CREDENTIALS_FILE" in str(caught.value)


@pytest.mark.parametrize(
    "line", ["GRADELAB_SASL_PASWORD=x", "just some text", "PASSWORD=x"]
)
def test_credentials_file_bad_line(tmp_path: Path, line: str) -> None:
    credentials = tmp_path / "credentials.env"
    credentials.write_text(f"GRADELAB_TOPIC=ok\n{line}\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"GRADELAB_CREDENTIALS_FILE": str(credentials)})

    assert "Line 2" in str(caught.value)
    assert "GRADELAB_SASL_PASSWORD" in str(caught.value)  # known names listed


@pytest.mark.parametrize(
    "address", ["localhost:0", "localhost:99999", "http://localhost:9092"]
)
def test_bootstrap_port_or_scheme_rejected(address: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(bootstrap_servers=address)

    assert address in str(caught.value)
