"""Config parsing: -C pairs, YAML files, types, unknown keys, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ENGINE_KEYS, load_config_file, parse_assignments, resolve
from orchestrator.errors import ConfigError
from orchestrator.secret_values import redact
from targets.local import LocalTarget


def test_assignments_split_on_the_first_equals() -> None:
    assert parse_assignments(["port=8080", "python=/usr/bin/python3=x"]) == {
        "port": "8080",
        "python": "/usr/bin/python3=x",
    }


@pytest.mark.parametrize("bad", ["port", "=8080", " =1"])
def test_malformed_assignment_is_named(bad: str) -> None:
    with pytest.raises(ConfigError, match="malformed -C option"):
        parse_assignments([bad])


def test_defaults_file_then_cli_in_that_order(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("workers: 3\nport: 9000\n")
    resolved = resolve("local", LocalTarget.config_keys, load_config_file(file), {"port": "9100"})
    assert resolved["workers"] == 3
    assert resolved["port"] == 9100
    assert resolved["threads"] == LocalTarget.config_keys["threads"].default
    assert resolved["max_attempts"] == ENGINE_KEYS["max_attempts"].default


def test_nested_yaml_flattens_to_dotted_keys(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("max_attempts:\n  build: 5\n")
    assert load_config_file(file) == {"max_attempts.build": 5}


def test_unknown_key_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve("local", LocalTarget.config_keys, {}, {"prot": "1"})
    message = str(caught.value)
    assert "unknown config key 'prot'" in message
    assert "port" in message and "workers" in message


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [("port", "eighty", "must be int"), ("port", "-1", "at least 0"), ("installer", "conda", "one of")],
)
def test_bad_values_are_explained(key: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        resolve("local", LocalTarget.config_keys, {}, {key: value})


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config_file(scalar)


def test_secret_looking_keys_are_redacted() -> None:
    shown = redact({"registry_password": "hunter2", "api_key": "k", "port": 1, "token": "", "pw_token": "env:X"})
    assert shown == {"registry_password": "***", "api_key": "***", "port": 1, "token": "", "pw_token": "env:X"}
