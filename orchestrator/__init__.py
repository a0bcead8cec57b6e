"""orchestrate: deploy MLflow models safely and resumably, with every step recorded.

The Python API mirrors the CLI; each call opens the state store (`db_url`, else
ORCHESTRATE_DB_URL, else SQLite under ORCHESTRATE_HOME) and closes it again.
"""

from __future__ import annotations

from collections.abc import Callable
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


def deploy(
    model_uri: str,
    *,
    name: str,
    target: str = "local",
    config: dict[str, Any] | None = None,
    db_url: str | None = None,
    detach: bool = False,
    reset_config: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Deploy a model (a directory, or a URI: runs:/, models:/NAME/VERSION, models:/NAME@ALIAS,
    s3://, ...) to endpoint `name`; returns the deployment record (`unchanged` is True when the
    live deployment already served this model with this config, and nothing was done).

    On a live endpoint `config` patches the live deployment's config (`reset_config` starts
    from the defaults), as `mlflow deployments update` does."""
    from .api import Client

    client = Client(db_url=db_url)
    try:
        deployment_id = client.deploy(
            model_uri, name=name, target=target, config=config, detach=detach, reset_config=reset_config, force=force
        )
        return {**client.deployment_record(deployment_id).to_dict(), "unchanged": client.unchanged}
    finally:
        client.close()


def predict(
    model_uri: str,
    input_data: Any,
    *,
    content_type: str | None = None,
    env_manager: str = "virtualenv",
    pip_requirements_override: list[str] | None = None,
) -> Any:
    """Score `input_data` offline with a model, like `mlflow.models.predict`: no server, nothing
    recorded. `input_data` is a pandas DataFrame, a dict or list (sent as JSON: a dict with
    `dataframe_split`, `dataframe_records`, `instances` or `inputs` as is, anything else as
    `inputs`), or the path of a .json or .csv file. Returns the answer's `predictions`.
    Raises ConfigError for bad input, TargetError when the model fails."""
    import json
    from pathlib import Path

    from .serving import predict as score

    if isinstance(input_data, (str, Path)):
        path = Path(input_data)
        kind = content_type or ("csv" if path.suffix.lower() == ".csv" else "json")
        body = path.read_bytes()
    elif hasattr(input_data, "to_json"):  # a pandas DataFrame, without importing pandas here
        kind, body = "json", b'{"dataframe_split": ' + input_data.to_json(orient="split").encode() + b"}"
    elif isinstance(input_data, (dict, list)):
        protocol = {"dataframe_split", "dataframe_records", "instances", "inputs"}
        document = input_data if isinstance(input_data, dict) and protocol & set(input_data) else {"inputs": input_data}
        kind, body = "json", json.dumps(document).encode()
    else:
        raise ConfigError(
            f"input_data of type {type(input_data).__name__} cannot be scored",
            hint="give a pandas DataFrame, a dict, a list or the path of a .json or .csv file",
        )
    answer = json.loads(
        score(model_uri, body, kind, env_manager=env_manager, overrides=tuple(pip_requirements_override or ()))
    )
    return answer["predictions"] if isinstance(answer, dict) and "predictions" in answer else answer


def build_image(
    model_uri: str,
    image: str,
    *,
    base_image: str | None = None,
    push: bool = False,
    pip_requirements_override: list[str] | None = None,
    user: str = "orchestrate",
    no_cache: bool = False,
) -> dict[str, Any]:
    """Build a model's scoring image with the local Docker engine (and push it), like
    `mlflow models build-docker`; `image` is NAME[:TAG] (with the registry to push to).
    Returns the image reference, id, tags and, with `push`, what was pushed."""
    from . import images
    from .store import orchestrate_home

    return images.build_command(
        model_uri,
        image,
        home=orchestrate_home(),
        base_image=base_image,
        push_image=push,
        overrides=",".join(pip_requirements_override) if pip_requirements_override else None,
        user=user,
        credentials=images.credentials_from_environment(None),
        log=lambda _line: None,
        no_cache=no_cache,
    )


def render_objects(
    model_uri: str,
    *,
    name: str,
    target: str = "kubernetes",
    config: dict[str, Any] | None = None,
    config_file: str | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The objects `deploy` would apply for a model on a declarative target (kubernetes), as
    dicts in apply order; nothing is recorded and no cluster is asked. `config` as `-C` gives it
    (`image` skips the build; `registry` builds and pushes the image there); `log` hears the build."""
    from .config import load_config_file
    from .rendering import render
    from .store import orchestrate_home

    return render(
        model_uri,
        name=name,
        target=target,
        home=orchestrate_home(),
        file_values=load_config_file(config_file) if config_file else {},
        cli_values=config or {},
        log=log or (lambda _line: None),
    )


def status(ref: str | int, *, db_url: str | None = None) -> dict[str, Any]:
    """An endpoint's status by name, or a deployment's record by id, as `status --json` prints it
    (`api.Client` returns the typed records)."""
    if isinstance(ref, int) or str(ref).isdigit():
        return _call("deployment_record", int(ref), describe=True, db_url=db_url).to_dict()  # type: ignore[no-any-return]
    return _call("endpoint_status", str(ref), db_url=db_url).to_dict()  # type: ignore[no-any-return]


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
    return [event.to_dict() for event in _call("history", str(ref), db_url=db_url)]


def list_deployments(*, db_url: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    return [record.to_dict() for record in _call("list_deployments", limit=limit, db_url=db_url)]


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
    "build_image",
    "cancel",
    "delete",
    "deploy",
    "history",
    "list_deployments",
    "predict",
    "render_objects",
    "resume",
    "rollback",
    "status",
]
