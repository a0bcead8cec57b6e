"""Deployment config: `--config FILE.yaml` and `-C key=value`, checked against declared keys."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import secrets
from .errors import ConfigError
from .states import STAGES


@dataclass(frozen=True)
class ConfigKey:
    """One accepted config key: its type, default and a line of help."""

    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None

    def parse(self, key: str, raw: Any, where: str) -> Any:
        value = _coerce(self.type, raw)
        if value is _INVALID:
            raise ConfigError(
                f"config key {key!r} ({where}) must be {self.type.__name__}, got {raw!r}",
                hint=f"{key}: {self.help}",
            )
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                f"config key {key!r} ({where}) must be one of {', '.join(self.choices)}; got {value!r}"
            )
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"config key {key!r} ({where}) must be at least {self.minimum}; got {value!r}")
        return value


_INVALID = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        return True if text in _TRUE else False if text in _FALSE else _INVALID
    if kind in (int, float):
        if isinstance(raw, bool):
            return _INVALID
        try:
            return kind(raw)
        except (TypeError, ValueError):
            return _INVALID
    if kind is str:
        return raw if isinstance(raw, str) else str(raw) if isinstance(raw, (int, float)) else _INVALID
    return raw


# Keys every target accepts: how the engine retries and waits.
ENGINE_KEYS: dict[str, ConfigKey] = {
    "max_attempts": ConfigKey(int, 3, "attempts per stage before a transient fault fails it", minimum=1),
    "retry_initial_s": ConfigKey(float, 1.0, "first backoff between attempts, seconds", minimum=0),
    "retry_max_s": ConfigKey(float, 30.0, "longest backoff between attempts, seconds", minimum=0),
    "startup_timeout": ConfigKey(float, 120.0, "seconds the server has to answer /ping", minimum=1),
    **{
        f"max_attempts.{stage.value}": ConfigKey(int, None, f"attempts for the {stage.value} stage", minimum=1)
        for stage in STAGES
    },
}


def parse_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """`-C key=value` pairs to a dict; a malformed one is a ConfigError naming it."""
    parsed: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"malformed -C option {item!r}",
                hint="write -C key=value, e.g. -C port=8080",
            )
        parsed[key.strip()] = value
    return parsed


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value, not {type(document).__name__}")
    return _flatten(document)


def _flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name not in ("env", "tags"):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def resolve(
    target_name: str,
    target_keys: Mapping[str, ConfigKey],
    file_values: Mapping[str, Any],
    cli_values: Mapping[str, Any],
) -> dict[str, Any]:
    """Merge file then `-C` values over defaults, rejecting unknown keys with the valid list."""
    keys = {**ENGINE_KEYS, **target_keys}
    resolved = {key: spec.default for key, spec in keys.items() if spec.default is not None}
    for where, values in (("config file", file_values), ("-C", cli_values)):
        for key, raw in values.items():
            if key not in keys:
                raise ConfigError(
                    f"unknown config key {key!r} for target {target_name!r} ({where})",
                    hint="valid keys: " + ", ".join(sorted(k for k in keys if "." not in k or k.startswith("max_attempts."))),
                )
            if secrets.is_reference(raw):
                if keys[key].type is not str:
                    raise ConfigError(f"config key {key!r} ({where}) is a {keys[key].type.__name__}; "
                                      "only text keys take env:/file: references")
                resolved[key] = raw
                continue
            if secrets.is_secret_key(key) and raw not in (None, ""):
                raise ConfigError(
                    f"config key {key!r} ({where}) holds a secret given as plain text",
                    hint=f"give it as env:NAME or file:PATH (e.g. -C {key}=env:MY_{key.upper()}), "
                    "so it is read when a stage runs and never stored",
                )
            resolved[key] = keys[key].parse(key, raw, where)
    return resolved


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """`90d`, `12h`, `30m`, `45s`, `2w` to a timedelta."""
    text = text.strip()
    unit = text[-1:].lower()
    try:
        amount = float(text[:-1])
    except ValueError:
        amount = -1
    if unit not in _DURATION_UNITS or amount < 0:
        raise ConfigError(f"{text!r} is not a duration", hint="write a number and a unit: 45s, 30m, 12h, 90d, 2w")
    return dt.timedelta(seconds=amount * _DURATION_UNITS[unit])
