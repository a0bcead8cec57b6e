"""Server settings: defaults in one immutable mapping, then environment, then explicit values.

Precedence, lowest first: ``DEFAULTS``; the environment (``ORCHESTRATE_<FIELD>``, plus
the platform variables SageMaker and PaaS set: ``SAGEMAKER_BIND_TO_PORT``, ``PORT``,
``SAGEMAKER_MODEL_SERVER_WORKERS``, ``SAGEMAKER_MODEL_SERVER_TIMEOUT``, and those
``mlflow models serve`` reads: ``MLFLOW_PORT``, ``MLFLOW_MODELS_WORKERS``/``MLFLOW_WORKERS``,
``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``); then the mapping
the caller passes (command-line flags, or a test).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "model_dir": "/opt/ml/model",
        "model_name": None,
        "host": "127.0.0.1",
        "port": 8080,
        "private_port": None,
        "workers": None,  # None: one per CPU the process may run on
        "threads": 2,
        "timeout": 60.0,
        "graceful_timeout": 30.0,
        "keepalive": 5,
        "max_request_bytes": 100 * 1024 * 1024,
        "access_log": True,
        "log_level": "info",
        "loader": "auto",
        "pid_file": None,
        "reuse_port": False,
        "public_fd": None,
        "private_fd": None,
        "handoff_socket": None,
    }
)

# Platform variables read after ORCHESTRATE_<FIELD>, first set wins.
_PLATFORM_ENV: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        # ... then the variables `mlflow models serve` reads, so its users' settings carry over.
        "port": ("SAGEMAKER_BIND_TO_PORT", "PORT", "MLFLOW_PORT"),
        "workers": ("SAGEMAKER_MODEL_SERVER_WORKERS", "MLFLOW_MODELS_WORKERS", "MLFLOW_WORKERS"),
        "timeout": ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"),
    }
)

_LOADERS = ("auto", "mlflow", "native")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Validated server settings; see ``docs/scoring.md`` for each one."""

    model_dir: str
    model_name: str | None
    host: str
    port: int
    private_port: int | None
    workers: int
    threads: int
    timeout: float
    graceful_timeout: float
    keepalive: int
    max_request_bytes: int
    access_log: bool
    log_level: str
    loader: str
    pid_file: str | None
    reuse_port: bool
    # Listening sockets inherited from the launcher instead of binding host:port and
    # private_port; the public one is handed to whoever connects to handoff_socket.
    public_fd: int | None
    private_fd: int | None
    handoff_socket: str | None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be between 1 and 65535, got {self.port}")
        if self.private_port is not None and not 0 < self.private_port < 65536:
            raise ValueError(f"private_port must be between 1 and 65535, got {self.private_port}")
        for name in ("workers", "threads", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.timeout < 0:
            raise ValueError(f"timeout must not be negative (0: no limit), got {self.timeout}")
        if self.graceful_timeout < 0:
            raise ValueError(f"graceful_timeout must not be negative, got {self.graceful_timeout}")
        if self.loader not in _LOADERS:
            raise ValueError(f"loader must be one of {', '.join(_LOADERS)}, got {self.loader!r}")
        if self.log_level not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}, got {self.log_level!r}")

    @property
    def served_model_name(self) -> str:
        """The name the V2 protocol uses: ``model_name``, else the model directory's name."""
        if self.model_name:
            return self.model_name
        base = os.path.basename(os.path.normpath(self.model_dir))
        return base if base and base not in (".", "/") else "model"


_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    kind = _FIELDS[name].type
    try:
        if kind in ("int", "int | None"):
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if kind in ("str", "str | None"):
            text = str(value)
            return text.lower() if name in ("loader", "log_level") else text
    except ValueError:
        raise ValueError(f"invalid value for {name}: {value!r}") from None
    raise AssertionError(f"unhandled field type {kind}")  # pragma: no cover


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings the environment sets, as ``{field: raw string}``."""
    found: dict[str, Any] = {}
    for name in _FIELDS:
        keys = (f"ORCHESTRATE_{name.upper()}", *_PLATFORM_ENV.get(name, ()))
        for key in keys:
            value = environ.get(key)
            if value not in (None, ""):
                found[name] = value
                break
    return found


def load_config(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Merge defaults, environment and ``overrides`` (``None`` values do not override).

    Raises ``ValueError`` naming the setting for unknown keys and bad values.
    """
    merged: dict[str, Any] = dict(DEFAULTS)
    merged.update(from_env(os.environ if environ is None else environ))
    for key, value in (overrides or {}).items():
        if key not in _FIELDS:
            raise ValueError(f"unknown scoring setting {key!r}")
        if value is not None:
            merged[key] = value
    values = {name: _coerce(name, merged[name]) for name in _FIELDS}
    if values["workers"] is None:
        values["workers"] = _cpu_count()
    return ServerConfig(**values)
