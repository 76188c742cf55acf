"""Credentials stay out of the repository, reprs and error messages.

Notebooks and apps get the SASL password from the environment or from the
file named in GRADELAB_CREDENTIALS_FILE, which git ignores. This module scans
every file that git tracks or would track (so a new notebook is checked
before it is committed) for a password written as a literal.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from gradelab.config import Settings
from gradelab.errors import ConfigError

REPOSITORY = Path(__file__).resolve().parent.parent

# A name that ends in password, passwd or secret, then = or :, then a quoted
# literal: `sasl_password="x"`, `"password": "x"`, `env["..._PASSWORD"] = "x"`.
QUOTED_ASSIGNMENT = re.compile(
    r"""(?ix) \b [\w.-]*? (password|passwd|secret) ["'\]]* \s* [:=] \s*
    (?P<quote>["']) (?P<value>[^"'\n]*) (?P=quote)"""
)
# The same without quotes, as in .env, YAML, properties and shell files.
BARE_ASSIGNMENT = re.compile(
    r"""(?imx) ^ \s* (export \s+ | - \s*)? [\w.-]*? (password|passwd|secret)
    \s* [:=] \s* (?P<value>[^\s"'\#][^\s\#]*) \s* $"""
)
BARE_SUFFIXES = {".env", ".yml", ".yaml", ".properties", ".cfg", ".ini", ".toml"}
BARE_SUFFIXES |= {".sh", ".md", ".txt", ""}
# Values that name a secret instead of being one.
ENVIRONMENT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
PLACEHOLDER_START = ("$", "{", "<", "*")
# Test modules start throwaway brokers with made-up passwords; what students
# copy (library, apps, notebooks, docs, configuration) must have none.
SKIPPED_FOLDERS = ("tests/",)


def _candidate_files() -> list[str]:
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        name
        for name in result.stdout.splitlines()
        if not name.startswith(SKIPPED_FOLDERS) and (REPOSITORY / name).is_file()
    ]


def _text_of(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    if path.suffix == ".ipynb":
        cells = json.loads(text).get("cells", [])
        parts = []
        for cell in cells:
            parts.append("".join(cell.get("source", [])))
            for output in cell.get("outputs", []):
                parts.append("".join(output.get("text", [])))
        return "\n".join(parts)
    return text


def _is_placeholder(value: str) -> bool:
    value = value.strip()
    return (
        not value
        or value.startswith(PLACEHOLDER_START)
        or ENVIRONMENT_NAME.fullmatch(value) is not None
    )


def find_password_assignments(name: str, text: str) -> list[str]:
    """Return ``file:line: text`` for each literal password in ``text``."""
    patterns = [QUOTED_ASSIGNMENT]
    suffix = Path(name).suffix
    if suffix in BARE_SUFFIXES or Path(name).name.startswith(".env"):
        patterns.append(BARE_ASSIGNMENT)
    found = []
    for pattern in patterns:
        for match in pattern.finditer(text):
            if _is_placeholder(match.group("value")):
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{name}:{line}: {match.group(0).strip()}")
    return found


def test_credentials_no_literal_password_in_repository():
    files = _candidate_files()
    assert "gradelab/config.py" in files
    found = []
    for name in files:
        text = _text_of(REPOSITORY / name)
        if text is not None:
            found += find_password_assignments(name, text)
    assert found == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("app.py", 'settings = Settings(sasl_password="hunter22")'),
        ("lab.ipynb", 'os.environ["GRADELAB_SASL_PASSWORD"] = "hunter22"'),
        (".env", "GRADELAB_SASL_PASSWORD=hunter22"),
        ("docker-compose.yml", "  KAFKA_PASSWORD: hunter22"),
        ("README.md", "export GRADELAB_SASL_PASSWORD=hunter22"),
        ("config.json", '{"password": "hunter22"}'),
    ],
)
def test_credentials_scan_finds_literals(name, text):
    assert len(find_password_assignments(name, text)) == 1


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("config.py", 'PASSWORD_VARIABLE = "GRADELAB_SASL_PASSWORD"'),
        ("app.py", 'password = os.environ["GRADELAB_SASL_PASSWORD"]'),
        ("app.py", "sasl_password: str | None = field(default=None, repr=False)"),
        ("broker.py", "jaas = f'password=\"{inter_broker_password}\";'"),
        ("README.md", "export GRADELAB_SASL_PASSWORD=<your password>"),
        (".env", "GRADELAB_SASL_PASSWORD=$COURSE_PASSWORD"),
        ("broker.py", 'INTER_BROKER_SECRET_FILE = "inter-broker.secret"'),
    ],
)
def test_credentials_scan_ignores_references(name, text):
    assert find_password_assignments(name, text) == []


@pytest.mark.parametrize("name", ["credentials.env", ".env", ".gradelab/broker/x"])
def test_credentials_files_are_git_ignored(name):
    result = subprocess.run(
        ["git", "check-ignore", "--quiet", "--no-index", name],
        cwd=REPOSITORY,
        check=False,
    )
    assert result.returncode == 0, f"git does not ignore {name}"


def _sasl_settings(password: str, **overrides) -> Settings:
    values = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "student",
        "sasl_password": password,
        **overrides,
    }
    return Settings(**values)


def test_settings_repr_hides_password():
    password = secrets.token_urlsafe(12)
    settings = _sasl_settings(password)
    assert password not in repr(settings)
    assert password not in str(settings)
    assert "student" in repr(settings)


def test_settings_load_hides_password_from_file(tmp_path):
    password = secrets.token_urlsafe(12)
    path = tmp_path / "credentials.env"
    path.write_text(
        "GRADELAB_SECURITY_PROTOCOL=SASL_PLAINTEXT\n"
        "GRADELAB_SASL_MECHANISM=SCRAM-SHA-256\n"
        "GRADELAB_SASL_USERNAME=student\n"
        f"GRADELAB_SASL_PASSWORD={password}\n"
    )
    settings = Settings.load(environ={"GRADELAB_CREDENTIALS_FILE": str(path)})
    assert settings.sasl_password == password
    assert password not in repr(settings)


def test_settings_errors_hide_password():
    password = secrets.token_urlsafe(12)
    with pytest.raises(ConfigError) as raised:
        _sasl_settings(password, sasl_mechanism="GSSAPI")
    assert password not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        _sasl_settings(password, sasl_username="")
    assert password not in str(raised.value)
