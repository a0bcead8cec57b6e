"""Deployment config: `--config FILE.yaml` and `-C key=value`, checked against declared keys."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import secret_values, untrusted
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
    # Numbers are always bounded: a value no stage can use (a port of 99999, a timeout of
    # 1e309) is refused here, before anything is recorded.
    maximum: float | None = None

    def parse(self, key: str, raw: Any, where: str) -> Any:
        value = _coerce(self.type, raw)
        if value is _INVALID:
            kind = {int: "int (a whole number)", float: "float (a finite number)"}.get(self.type, self.type.__name__)
            raise ConfigError(
                f"config key {key!r} ({where}) must be {kind}, got {_shown(raw)}",
                hint=f"{key}: {self.help}",
            )
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"config key {key!r} ({where}) must be one of {', '.join(self.choices)}; got {value!r}")
        if self.type in (int, float):
            maximum = self.maximum if self.maximum is not None else _NUMBER_MAXIMUM[self.type]
            if (self.minimum is not None and value < self.minimum) or value > maximum:
                low = "" if self.minimum is None else f"at least {self.minimum:g} and "
                raise ConfigError(
                    f"config key {key!r} ({where}) must be {low}at most {maximum:g}; got {value!r}",
                    hint=f"{key}: {self.help}",
                )
        return value

    def json_schema(self) -> dict[str, Any]:
        """This key as JSON Schema (draft 2020-12): what `-C`, --config files and
        `orchestrate targets --json` agree on. Text keys also take env:/file: references."""
        kind = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object", list: "array"}[
            self.type
        ]
        schema: dict[str, Any] = {"type": kind, "description": self.help}
        if self.default is not None:
            schema["default"] = self.default
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.type in (int, float):
            schema["minimum"] = self.minimum if self.minimum is not None else -_NUMBER_MAXIMUM[self.type]
            schema["maximum"] = self.maximum if self.maximum is not None else _NUMBER_MAXIMUM[self.type]
        if self.type is dict:  # a YAML mapping, or k=v,k2=v2 on the command line
            schema = {
                "type": ["object", "string"],
                "additionalProperties": {"type": "string"},
                "description": self.help,
            }
        if self.type is list:  # a YAML list, or comma-separated text on the command line
            schema = {"type": ["array", "string"], "items": {"type": "string"}, "description": self.help}
        return schema


def config_schema(target_name: str, target_keys: Mapping[str, ConfigKey]) -> dict[str, Any]:
    """JSON Schema of a target's whole config (the runner's keys included), flat dotted keys as
    `-C` takes them; unknown keys are refused, as `resolve` refuses them."""
    keys = {**ENGINE_KEYS, **target_keys}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"orchestrate {target_name} target config",
        "type": "object",
        "properties": {key: keys[key].json_schema() for key in sorted(keys)},
        "additionalProperties": False,
    }


_INVALID = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# Bounds of a number key that declares none: what a stage can hold (a 32-bit count, a
# timeout that time.sleep and timedelta accept).
_NUMBER_MAXIMUM: dict[type, float] = {int: 2**31 - 1, float: 10**9}
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
_DECIMAL_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        return True if text in _TRUE else False if text in _FALSE else _INVALID
    if kind is int:
        # ASCII digits only: int() also takes '١' and '1_000', and YAML may give 8080.5.
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and _WHOLE_NUMBER.fullmatch(raw.strip()) and len(raw) < 40:
            return int(raw)
        return _INVALID
    if kind is float:
        if isinstance(raw, bool):
            return _INVALID
        if isinstance(raw, str) and not (_DECIMAL_NUMBER.fullmatch(raw.strip()) and len(raw) < 40):
            return _INVALID  # 'nan', 'inf', '١'
        try:
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            return _INVALID
        return value if math.isfinite(value) else _INVALID
    if kind is str:
        return raw if isinstance(raw, str) else str(raw) if isinstance(raw, (int, float)) else _INVALID
    return raw


# Keys every target accepts: how the runner retries and waits.
ENGINE_KEYS: dict[str, ConfigKey] = {
    "max_attempts": ConfigKey(int, 3, "attempts per stage before a transient fault fails it", minimum=1, maximum=100),
    "retry_initial_s": ConfigKey(float, 1.0, "first backoff between attempts, seconds", minimum=0, maximum=3600),
    "retry_max_s": ConfigKey(float, 30.0, "longest backoff between attempts, seconds", minimum=0, maximum=3600),
    "startup_timeout": ConfigKey(float, 120.0, "seconds the server has to answer /ping", minimum=1, maximum=86400),
    "keep_failed": ConfigKey(
        bool,
        False,
        "keep what a failed deployment created, for inspection and resume (deploy --keep-failed); cancel releases it",
    ),
    "registry_tags": ConfigKey(
        bool,
        False,
        "tag the MLflow model version with where it serves (endpoint, target, deployment, URL) while it does",
    ),
    "allow_index_options": ConfigKey(
        bool,
        False,
        "let the model's requirements.txt choose the package index (-i, --index-url, --extra-index-url, --find-links)",
    ),
    "allow_direct_references": ConfigKey(
        bool,
        False,
        "let the model's requirements.txt install local paths, "
        "file: and VCS/URL requirements (their setup code runs here)",
    ),
    **{
        f"max_attempts.{stage.value}": ConfigKey(
            int, None, f"attempts for the {stage.value} stage", minimum=1, maximum=100
        )
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
    """The flattened keys of a YAML config file; bounded in size, nesting and alias expansion
    (see `untrusted.load_yaml`), so a bomb, a FIFO or /dev/zero is a ConfigError."""
    path = Path(path)
    document = untrusted.load_yaml(path, what="config file")
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
                    hint="valid keys: " + ", ".join(sorted(keys)),  # dotted ones too (vpc.subnets, ...)
                )
            if secret_values.is_reference(raw):
                if keys[key].type is not str:
                    raise ConfigError(
                        f"config key {key!r} ({where}) is a {keys[key].type.__name__}; "
                        "only text keys take env:/file: references"
                    )
                resolved[key] = raw
                continue
            if keys[key].type is dict:
                resolved[key] = _parse_mapping(key, raw, where)
                continue
            _refuse_plain_secret(key, raw, where)
            resolved[key] = keys[key].parse(key, raw, where)
    return resolved


def _refuse_plain_secret(key: str, raw: Any, where: str, *, entry: str | None = None) -> None:
    """A secret must come as env:NAME or file:PATH, whichever key (or `entry` of a mapping key)
    carries it; the message never repeats the value."""
    if raw in (None, "") or secret_values.is_reference(raw):
        return
    text = raw if isinstance(raw, str) else str(raw)
    name = f"{key}.{entry}" if entry else key
    if secret_values.is_variable_key(name):
        if not secret_values.VARIABLE_NAME.match(text):
            raise ConfigError(
                f"config key {name!r} ({where}) must name an environment variable, not hold the secret itself",
                hint=f"export the secret as a variable and give its name, e.g. -C {key}=REGISTRY_PASSWORD",
            )
        return
    found: str | None
    if secret_values.is_secret_key(entry or key):
        found = "a secret given as plain text"
    else:
        credential = secret_values.find_credential(text)
        found = credential and f"{credential}: {secret_values.mask_credentials(text)}"
    if found:
        variable = f"MY_{(entry or key).upper().replace('.', '_')}"
        example = f"-C {key}={entry}=env:{variable}" if entry else f"-C {key}=env:{variable}"
        login = (
            " (a registry login goes in registry_username and registry_password_env)"
            if "@" in text and not entry
            else ""
        )
        raise ConfigError(
            f"config key {name!r} ({where}) holds {found}",
            hint=f"give the value as env:NAME or file:PATH (e.g. {example}), so it is read when a stage runs "
            f"and never stored{login}",
        )


def _parse_mapping(key: str, raw: Any, where: str) -> dict[str, Any] | None:
    """A mapping key (`env`, `tags`): a YAML mapping or `k=v,k2=v2`; each value may be an
    env:/file: reference, and a literal secret in it is refused."""
    if raw in (None, ""):
        return None
    if isinstance(raw, str):
        pairs = [item.partition("=") for item in raw.split(",") if item.strip()]
        if not all(sep and name.strip() for name, sep, _value in pairs):
            raise ConfigError(
                f"config key {key!r} ({where}) must be a mapping (in the config file) or k=v,k2=v2",
                hint=f"e.g. -C {key}=MODEL_THREADS=2,LOG_LEVEL=info",
            )
        raw = {name.strip(): value for name, _sep, value in pairs}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"config key {key!r} ({where}) must be a mapping (in the config file) or k=v,k2=v2; "
            f"got {type(raw).__name__}"
        )
    mapping: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, (Mapping, list)):
            raise ConfigError(
                f"config key {key!r} ({where}): {name!r} must be a single value, not a {type(value).__name__}"
            )
        _refuse_plain_secret(key, value, where, entry=str(name))
        mapping[str(name)] = value if isinstance(value, str) else str(value)
    return mapping


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"([0-9]{1,15}(?:\.[0-9]{1,9})?)([smhdw])", re.IGNORECASE)
# A cutoff further back than this would leave the calendar (`now - 1e9 days` is before year 1).
MAX_DURATION = dt.timedelta(days=36500)


def looks_like_duration(text: str) -> bool:
    """Whether `text` is written as a duration (a number and a unit), whatever its size."""
    return _DURATION.fullmatch(text.strip()) is not None


def parse_duration(text: str) -> dt.timedelta:
    """`90d`, `12h`, `30m`, `45s`, `2w` to a timedelta of at most MAX_DURATION (100 years);
    anything else (`nans`, `1e309s`, `-5m`, `99999999999d`) is a ConfigError."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"{text!r} is not a duration", hint="write a number and a unit: 45s, 30m, 12h, 90d, 2w")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if seconds > MAX_DURATION.total_seconds():
        raise ConfigError(
            f"duration {text.strip()!r} is longer than {MAX_DURATION.days} days",
            hint=f"give at most {MAX_DURATION.days}d",
        )
    return dt.timedelta(seconds=seconds)
