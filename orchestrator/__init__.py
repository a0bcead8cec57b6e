"""orchestrate: deploy MLflow models safely and resumably, with every step recorded.

The Python API mirrors the CLI; each call opens the state store (`db_url`, else
ORCHESTRATE_DB_URL, else SQLite under ORCHESTRATE_HOME) and closes it again.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    ConfigError,
    DeploymentFailed,
    EndpointBusy,
    NotFound,
    OrchestrateError,
    PermanentTargetError,
    RetryableTargetError,
    StateError,
    TargetError,
)

__version__ = "0.1.0"


def _call(method: str, *args: Any, db_url: str | None = None, **kwargs: Any) -> Any:
    from .api import Client

    client = Client(db_url=db_url)
    try:
        return getattr(client, method)(*args, **kwargs)
    finally:
        client.close()


def deploy(model_uri: str, *, name: str, target: str = "local", config: dict[str, Any] | None = None,
           db_url: str | None = None, detach: bool = False) -> dict[str, Any]:
    """Deploy a model directory to endpoint `name`; returns the deployment record."""
    from .api import Client

    client = Client(db_url=db_url)
    try:
        deployment_id = client.deploy(model_uri, name=name, target=target, config=config, detach=detach)
        return client.deployment_record(deployment_id)
    finally:
        client.close()


def status(ref: str | int, *, db_url: str | None = None) -> dict[str, Any]:
    """An endpoint's status by name, or a deployment's record by id."""
    if isinstance(ref, int) or str(ref).isdigit():
        return _call("deployment_record", int(ref), describe=True, db_url=db_url)  # type: ignore[no-any-return]
    return _call("endpoint_status", str(ref), db_url=db_url)  # type: ignore[no-any-return]


def resume(deployment_id: int, *, db_url: str | None = None) -> dict[str, Any]:
    """Resume a failed or interrupted deployment; returns its record."""
    _call("resume", deployment_id, db_url=db_url)
    return status(deployment_id, db_url=db_url)


def cancel(deployment_id: int, *, db_url: str | None = None) -> str:
    return str(_call("cancel", deployment_id, db_url=db_url).value)


def rollback(name: str, *, to: int | None = None, db_url: str | None = None) -> dict[str, Any]:
    deployment_id = _call("rollback", name, to=to, db_url=db_url)
    return status(deployment_id, db_url=db_url)


def delete(name: str, *, db_url: str | None = None) -> list[str]:
    return _call("delete", name, db_url=db_url)  # type: ignore[no-any-return]


def history(ref: str | int, *, db_url: str | None = None) -> list[dict[str, Any]]:
    return _call("history", str(ref), db_url=db_url)  # type: ignore[no-any-return]


def list_deployments(*, db_url: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    return _call("list_deployments", limit=limit, db_url=db_url)  # type: ignore[no-any-return]


__all__ = [
    "ConfigError",
    "DeploymentFailed",
    "EndpointBusy",
    "NotFound",
    "OrchestrateError",
    "PermanentTargetError",
    "RetryableTargetError",
    "StateError",
    "TargetError",
    "cancel",
    "delete",
    "deploy",
    "history",
    "list_deployments",
    "resume",
    "rollback",
    "status",
]
