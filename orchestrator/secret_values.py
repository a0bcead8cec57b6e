"""Secret config values: given as `env:NAME` or `file:PATH`, resolved only when a stage runs.

The state store keeps the reference, never the value. Every value resolved in this process is
scrubbed from log lines, event messages and recorded errors, as a whole value (never a fragment
of a longer word), and a credential found inside any text (URL userinfo, `TOKEN=...`, a
well-known key shape) is masked wherever text leaves the process. A literal value that looks
like a credential is refused at input, whichever key carries it."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import untrusted
from .errors import ConfigError

_SECRET_KEY = re.compile(
    r"(password|passwd|token|secret|api[_-]?key|access[_-]?key|credential|private[_-]?key)", re.IGNORECASE
)
# A key ending in _env names the environment variable holding a secret; the name is not secret.
_VARIABLE_KEY = re.compile(r"_env$", re.IGNORECASE)
# A key ending in _names lists objects that hold secrets (Kubernetes Secrets), not a secret.
_NAMES_KEY = re.compile(r"_names$", re.IGNORECASE)
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REDACTED = "***"
_REFERENCE = re.compile(r"^(env|file):(.+)$")
# Shorter resolved secrets are refused: masking them would garble ordinary words, and the pattern
# of the masks would give the value away.
MIN_SECRET_LENGTH = 8

# Credentials inside free text. Each pattern's group "secret" is what gets masked.
_URL_USERINFO = re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^/\s@]+)(?=@)")
# user:password@host without a scheme (docker's registry=...), but not image:tag@sha256:digest.
_BARE_USERINFO = re.compile(
    r"(?P<keep>(?:^|(?<=[\s,;=\"'(]))[^\s/@:,;=\"'()]+:)(?P<secret>[^\s/@,;\"'()]+)"
    r"(?=@(?![A-Za-z0-9_+.-]+:[0-9a-fA-F]{32,})[A-Za-z0-9\[])"
)
_ASSIGNMENT = re.compile(
    r"(?P<keep>(?:^|(?<=[\s,;\"'(?&]))(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=)(?P<secret>[^\s,;\"')&]+)"
)
_KNOWN_TOKENS = re.compile(
    r"(?P<secret>\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----)"
)

_resolved: set[str] = set()
_scrub_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def is_secret_key(key: str) -> bool:
    """A key whose value is a secret (password, token, ...); `*_env` keys name a variable instead."""
    return bool(_SECRET_KEY.search(key)) and not _VARIABLE_KEY.search(key) and not _NAMES_KEY.search(key)


def is_variable_key(key: str) -> bool:
    """A secret-looking key ending in `_env`: its value is the name of an environment variable."""
    return bool(_SECRET_KEY.search(key)) and bool(_VARIABLE_KEY.search(key))


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and bool(_REFERENCE.match(value))


def find_credential(value: str) -> str | None:
    """What in `value` looks like a credential (a phrase for the error message), or None."""
    if _URL_USERINFO.search(value):
        return "a password in a URL"
    if _BARE_USERINFO.search(value):
        return "a password before a host"
    for match in _ASSIGNMENT.finditer(value):
        if is_secret_key(match["name"]) and not is_reference(match["secret"]):
            return f"a secret assigned to {match['name']}"
    if _KNOWN_TOKENS.search(value):
        return "an access key or token"
    return None


def mask_credentials(text: str) -> str:
    """`text` with every credential found inside it masked (the user name and host stay)."""
    if "@" in text:
        text = _URL_USERINFO.sub(rf"\g<keep>{REDACTED}", text)
        text = _BARE_USERINFO.sub(rf"\g<keep>{REDACTED}", text)
    if "=" in text:
        text = _ASSIGNMENT.sub(
            lambda m: m["keep"] + REDACTED if is_secret_key(m["name"]) and not is_reference(m["secret"]) else m[0], text
        )
    return _KNOWN_TOKENS.sub(REDACTED, text)


def remember(secret: str) -> None:
    """Scrub `secret` from every later message of this process (values too short are not kept)."""
    global _scrub_pattern
    if len(secret) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if secret in _resolved:
            return
        _resolved.add(secret)
        # Whole values only: a secret is masked where it does not continue a longer word.
        alternatives = "|".join(re.escape(v) for v in sorted(_resolved, key=len, reverse=True))
        _scrub_pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")


# A secret file holds one value (a token, a password, a key): more is a wrong path.
SECRET_FILE_MAX_BYTES = 64 * 1024


def resolve_value(key: str, value: Any) -> Any:
    """The value behind an `env:`/`file:` reference (remembered for scrubbing); others as given.

    A mapping (a target's `env`) has its values resolved one by one. Raises ConfigError for an
    unset variable, an unreadable file, or a secret too short to mask safely."""
    if isinstance(value, Mapping):
        return {name: resolve_value(str(name), inner) for name, inner in value.items()}
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    kind, where = match.groups()
    if kind == "env":
        if where not in os.environ:
            raise ConfigError(
                f"config key {key!r} refers to environment variable {where}, which is not set",
                hint=f"export {where}=... in the environment of the runner (deploy, resume, worker)",
            )
        secret = os.environ[where]
    else:
        try:  # bounded, regular files only: file:/dev/zero or a FIFO must not hang the runner
            secret = untrusted.read_text(Path(where).expanduser(), what="file", max_bytes=SECRET_FILE_MAX_BYTES).strip()
        except ConfigError as exc:
            raise ConfigError(
                f"config key {key!r} refers to file {where}, which cannot be used: {exc.message}", hint=exc.hint
            ) from None
    remember(secret)
    if secret and len(secret) < MIN_SECRET_LENGTH and is_secret_key(key):
        raise ConfigError(
            f"config key {key!r}: the secret in {value} is {len(secret)} character(s) long, too short to mask "
            "in logs and messages without garbling them",
            hint=f"use a secret of at least {MIN_SECRET_LENGTH} characters",
        )
    return secret


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: resolve_value(key, value) for key, value in config.items()}


def scrub(text: str) -> str:
    """`text` with every secret resolved in this process, and every credential inside it, masked."""
    with _lock:
        pattern = _scrub_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    return mask_credentials(text)


def scrub_data(value: Any) -> Any:
    """`scrub` applied to every string inside a JSON-like value (an event's data)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {key: scrub_data(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_data(inner) for inner in value]
    return value


def _redact_value(key: str, value: Any) -> Any:
    if value in (None, "") or is_reference(value):
        return value
    if isinstance(value, Mapping):
        return {name: _redact_value(str(name), inner) for name, inner in value.items()}
    if is_secret_key(key):
        return REDACTED
    return mask_credentials(value) if isinstance(value, str) else value


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config for display: literal secrets replaced, credentials inside values masked."""
    return {key: _redact_value(key, value) for key, value in config.items()}
