"""Secret config values: given as `env:NAME` or `file:PATH`, resolved only when a stage runs.

The state store keeps the reference, never the value; every value resolved in this process is
scrubbed from log lines, event messages and recorded errors."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

_SECRET_KEY = re.compile(r"(password|passwd|token|secret|api[_-]?key|access[_-]?key|credential)", re.I)
REDACTED = "***"
_REFERENCE = re.compile(r"^(env|file):(.+)$")

_resolved: set[str] = set()
_lock = threading.Lock()


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and bool(_REFERENCE.match(value))


def resolve_value(key: str, value: Any) -> Any:
    """The value behind an `env:`/`file:` reference (remembered for scrubbing); others as given."""
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    kind, where = match.groups()
    if kind == "env":
        if where not in os.environ:
            raise ConfigError(f"config key {key!r} refers to environment variable {where}, which is not set",
                              hint=f"export {where}=... in the environment of the runner (deploy, resume, worker)")
        secret = os.environ[where]
    else:
        try:
            secret = Path(where).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"config key {key!r} refers to file {where}, which cannot be read: "
                              f"{exc.strerror}") from None
    if secret:
        with _lock:
            _resolved.add(secret)
    return secret


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: resolve_value(key, value) for key, value in config.items()}


def scrub(text: str) -> str:
    """Replace every secret value resolved in this process by ***."""
    with _lock:
        values = sorted(_resolved, key=len, reverse=True)
    for value in values:
        text = text.replace(value, REDACTED)
    return text


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config for display: literal values under secret-looking keys replaced."""
    return {
        key: REDACTED if is_secret_key(key) and value not in (None, "") and not is_reference(value) else value
        for key, value in config.items()
    }
