"""`orchestrate targets --json`'s schemas (issue 12 item 6): each installed target's config as
JSON Schema, checked against what `config.resolve` (the one validation every deploy goes
through) accepts and refuses, key by key."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from orchestrator import config
from orchestrator.cli import cli
from orchestrator.errors import ConfigError
from orchestrator.target_contract import available_targets, load_target

TARGETS = sorted(available_targets())


def _resolves(target: str, values: dict[str, Any]) -> bool:
    try:
        config.resolve(target, load_target(target).config_keys, {}, values)
    except ConfigError:
        return False
    return True


def _out_of_range(spec: config.ConfigKey, schema: dict[str, Any]) -> Any:
    if spec.type in (int, float):
        return schema["maximum"] + 1
    if spec.choices is not None:
        return "no-such-choice"
    if spec.type is bool:
        return "perhaps"
    return None


@pytest.mark.parametrize("target", TARGETS)
def test_schema_agrees_with_resolve_for_every_key(target: str) -> None:
    keys = {**config.ENGINE_KEYS, **load_target(target).config_keys}
    schema = config.config_schema(target, load_target(target).config_keys)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert set(schema["properties"]) == set(keys)
    for key, spec in keys.items():
        if spec.default is not None:
            assert validator.is_valid({key: spec.default}), key
            assert _resolves(target, {key: spec.default}), key
        bad = _out_of_range(spec, schema["properties"][key])
        if bad is not None:
            assert not validator.is_valid({key: bad}), (key, bad)
            assert not _resolves(target, {key: bad}), (key, bad)
    assert not validator.is_valid({"no_such_key": "1"})
    assert not _resolves(target, {"no_such_key": "1"})


def test_targets_json_prints_each_schema() -> None:
    result = CliRunner().invoke(cli, ["targets", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert sorted(rows) == TARGETS
    for name, row in rows.items():
        assert row["schema"] == config.config_schema(name, load_target(name).config_keys)
        assert row["schema"]["properties"]["max_attempts"]["minimum"] == 1
