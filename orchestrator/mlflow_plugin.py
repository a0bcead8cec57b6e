"""MLflow's deployment plugin for orchestrate: `mlflow deployments … -t orchestrate:/<target>`
and `mlflow.deployments.get_deploy_client("orchestrate:/<target>")`.

MLflow finds this module through the `mlflow.deployments` entry point `orchestrate`. Every
call goes through orchestrate's Python API, so a deployment made from MLflow runs the same
recorded stages, leases, retries and rollback as `orchestrate deploy`, and `orchestrate status`
shows it. An MLflow "deployment" is an orchestrate endpoint: `--name churn` is endpoint
`churn`. Only this module imports mlflow, and nothing in orchestrate imports this module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import click
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2

from .api import Client
from .errors import ConfigError, EndpointBusy, NotFound, OrchestrateError, StateError, TargetError
from .store.reads import EndpointStatus

SCHEME = "orchestrate"
DEFAULT_TARGET = "local"
# orchestrate serves every model through MLflow's python_function interface.
FLAVOR = "python_function"
# Body keys MLflow's scoring protocol knows; a dict input with other keys is sent as `inputs`.
_REQUEST_KEYS = frozenset({"dataframe_split", "dataframe_records", "instances", "inputs", "params"})
_RUN_LOCAL_KEYS = (
    "host",
    "port",
    "workers",
    "env_manager",
    "pip_requirements_override",
    "allow_index_options",
    "allow_direct_references",
)


class OrchestrateMlflowError(MlflowException, click.ClickException):
    """An orchestrate error as MLflow's exception, carrying orchestrate's message, hint and exit
    code. Being a ClickException too, MLflow's CLI prints it as `Error: …` with that exit code
    instead of a traceback (its commands catch nothing themselves)."""

    def __init__(self, message: str, *, error_code: int, exit_code: int = 1, hint: str | None = None) -> None:
        MlflowException.__init__(self, f"{message} — {hint}" if hint else message, error_code=error_code, hint=hint)
        self.exit_code = exit_code
        self.hint = hint

    @classmethod
    def of(cls, error: OrchestrateError) -> OrchestrateMlflowError:
        return cls(error.message, error_code=_error_code(error), exit_code=error.exit_code, hint=error.hint)


def _error_code(error: OrchestrateError) -> int:
    if isinstance(error, NotFound):
        return int(databricks_pb2.RESOURCE_DOES_NOT_EXIST)
    if isinstance(error, (ConfigError, StateError)):
        return int(databricks_pb2.INVALID_PARAMETER_VALUE)
    if isinstance(error, EndpointBusy):
        return int(databricks_pb2.RESOURCE_CONFLICT)
    if isinstance(error, TargetError):
        return int(databricks_pb2.BAD_REQUEST)
    return int(databricks_pb2.INTERNAL_ERROR)


def _invalid(message: str, hint: str | None = None) -> OrchestrateMlflowError:
    return OrchestrateMlflowError.of(ConfigError(message, hint=hint))


@contextmanager
def _as_mlflow_errors() -> Iterator[None]:
    try:
        yield
    except OrchestrateError as exc:
        raise OrchestrateMlflowError.of(exc) from exc


def target_from_uri(target_uri: str) -> str:
    """The orchestrate target a deployment target URI names: `orchestrate` is the local target,
    `orchestrate:/sagemaker` (or `orchestrate://sagemaker`) the sagemaker target."""
    parsed = urlparse(target_uri)
    if not parsed.scheme:
        if parsed.path != SCHEME:
            raise _invalid(
                f"{target_uri!r} is not an orchestrate target URI",
                hint="write orchestrate:/<target>, e.g. orchestrate:/local or orchestrate:/sagemaker",
            )
        return DEFAULT_TARGET
    name = (parsed.netloc or parsed.path.strip("/")) or DEFAULT_TARGET
    if parsed.scheme != SCHEME or "/" in name or parsed.query or parsed.fragment:
        raise _invalid(
            f"{target_uri!r} is not an orchestrate target URI",
            hint="write orchestrate:/<target>, e.g. orchestrate:/local or orchestrate:/sagemaker",
        )
    return name


class OrchestrateDeploymentClient(BaseDeploymentClient):
    """MLflow's deployment client API over orchestrate's endpoints on one target.

    The state store is orchestrate's usual one (ORCHESTRATE_DB_URL, else SQLite under
    ORCHESTRATE_HOME); `db_url` picks another for this client."""

    def __init__(self, target_uri: str, db_url: str | None = None) -> None:
        super().__init__(target_uri)  # type: ignore[no-untyped-call]
        self.target = target_from_uri(target_uri)
        self.db_url = db_url
        from .target_contract import load_target

        with _as_mlflow_errors():
            self.plugin = load_target(self.target)

    # -- deployments --------------------------------------------------------------------

    def create_deployment(
        self,
        name: str,
        model_uri: str,
        flavor: str | None = None,
        config: Mapping[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        """Deploy `model_uri` as a new endpoint `name` and wait until it serves. An endpoint that
        already serves a model is an error (MLflow's contract): change it with update_deployment."""
        name = _deployment_name(name, endpoint)
        _check_flavor(flavor)
        with _as_mlflow_errors(), self._client(progress=True) as client:
            existing = _existing_status(client, name)
            if existing is not None and existing.live is not None:
                raise OrchestrateMlflowError(
                    f"endpoint {name!r} already exists on target {existing.target!r} and serves deployment "
                    f"{existing.live_deployment_id}",
                    error_code=int(databricks_pb2.RESOURCE_ALREADY_EXISTS),
                    exit_code=2,
                    hint=f"change it with `mlflow deployments update -t {self.target_uri} --name {name} -m MODEL`, "
                    f"or choose another --name",
                )
            deployment_id = client.deploy(model_uri, name=name, target=self.target, config=dict(config or {}))
            return self._finished(client, name, deployment_id)

    def update_deployment(
        self,
        name: str,
        model_uri: str | None = None,
        flavor: str | None = None,
        config: Mapping[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        """Patch endpoint `name`: a new model (keeping the live config, with `config` applied on
        top), or only `config` applied to the live model. Each is a recorded deployment that
        replaces the live one only once it passed its health check."""
        name = _deployment_name(name, endpoint)
        _check_flavor(flavor)
        patch = dict(config or {})
        if model_uri is None and not patch:
            raise _invalid(f"nothing to update on {name!r}: give a model URI (-m) or config (-C key=value)")
        with _as_mlflow_errors(), self._client(progress=True) as client:
            status = self._status(client, name)
            if status.live is None:
                raise OrchestrateMlflowError(
                    f"endpoint {name!r} has no live deployment to update",
                    error_code=int(databricks_pb2.INVALID_STATE),
                    exit_code=2,
                    hint=f"deploy a model with `mlflow deployments create -t {self.target_uri} --name {name} -m MODEL`"
                    + (
                        f"; or see `orchestrate status {status.latest_deployment_id}`"
                        if status.latest_deployment_id
                        else ""
                    ),
                )
            if model_uri is None:
                deployment_id = client.reconfigure(name, patch)
            else:  # deploy starts from the live deployment's config and applies the patch on top
                deployment_id = client.deploy(model_uri, name=name, target=self.target, config=patch)
            return self._finished(client, name, deployment_id)

    def delete_deployment(
        self, name: str, config: Mapping[str, Any] | None = None, endpoint: str | None = None
    ) -> None:
        """Stop everything endpoint `name` runs; its history stays. Deleting an endpoint that
        does not exist (or no longer does) succeeds, so a retried delete is safe."""
        name = _deployment_name(name, endpoint)
        if config:
            raise _invalid(f"delete takes no config; got {', '.join(sorted(config))}")
        with _as_mlflow_errors(), self._client() as client:
            status = _existing_status(client, name)
            if status is None:
                return
            self._check_target(status)
            try:
                client.delete(name)
            except NotFound:  # deleted by someone else in between
                return

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """This target's endpoints: name, flavor, live deployment id and model digest."""
        with _as_mlflow_errors(), self._client() as client:
            rows = client.list_endpoints()
        return [
            {
                "name": row.endpoint,
                "flavor": FLAVOR,
                "target": row.target,
                "live_deployment_id": row.live_deployment_id,
                "model_digest": row.model_digest,
                "busy": row.busy,
            }
            for row in rows
            if row.target == self.target and (endpoint is None or row.endpoint == endpoint)
        ]

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        """Endpoint `name`'s live deployment (the record `orchestrate status NAME` shows), with the
        target's live facts under `runtime`, and the latest deployment when it is another."""
        name = _deployment_name(name, endpoint)
        with _as_mlflow_errors(), self._client() as client:
            return _deployment_summary(self._status(client, name))

    def predict(
        self, deployment_name: str | None = None, inputs: Any = None, endpoint: str | None = None
    ) -> PredictionsResponse:
        """Score `inputs` (a DataFrame, a dict of MLflow's request format or of named inputs, a
        list, a numpy array, or a JSON string) with the endpoint's live deployment."""
        name = _deployment_name(deployment_name, endpoint)
        body = _request_body(inputs)
        with _as_mlflow_errors(), self._client() as client:
            self._check_target(self._status(client, name))
            answer = client.predict(name, body)
        text = answer.body.decode(errors="replace")
        if answer.status != 200:
            raise OrchestrateMlflowError.of(
                TargetError(
                    f"endpoint {name} answered HTTP {answer.status}: {text}",
                    hint="check the input against the model's signature; `orchestrate logs "
                    f"{name}` shows the server's log",
                )
            )
        response: PredictionsResponse = PredictionsResponse.from_json(text)  # type: ignore[no-untyped-call]
        return response

    def predict_stream(
        self, deployment_name: str | None = None, inputs: Any = None, endpoint: str | None = None
    ) -> Iterator[dict[str, Any]]:
        raise _not_supported("streaming predictions", "call predict() for a whole answer")

    def explain(self, deployment_name: str | None = None, df: Any = None, endpoint: str | None = None) -> Any:
        raise _not_supported(
            "explain",
            "orchestrate's scoring server answers /invocations only; compute "
            "explanations offline, e.g. with mlflow.shap on the loaded model",
        )

    # -- endpoints: an orchestrate endpoint is the deployment of the same name ------------

    def create_endpoint(self, name: str, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        raise _not_supported(
            "creating an empty endpoint",
            f"an orchestrate endpoint is created by its first deployment: `mlflow deployments "
            f"create -t {self.target_uri} --name {name} -m MODEL`",
        )

    def update_endpoint(self, endpoint: str, config: Mapping[str, Any] | None = None) -> None:
        """Apply `config` to the endpoint's live model (the same as update_deployment without a model)."""
        self.update_deployment(endpoint, config=config)

    def delete_endpoint(self, endpoint: str) -> None:
        self.delete_deployment(endpoint)

    def list_endpoints(self) -> list[dict[str, Any]]:
        return self.list_deployments()

    def get_endpoint(self, endpoint: str) -> dict[str, Any]:
        return self.get_deployment(endpoint)

    # -- helpers ------------------------------------------------------------------------

    @contextmanager
    def _client(self, *, progress: bool = False) -> Iterator[Client]:
        """An orchestrate client; on a terminal, deployments show their stages on stderr."""
        reporter = None
        if progress and sys.stderr.isatty():
            from .progress import Progress

            reporter = Progress()
        client = Client(db_url=self.db_url, echo=reporter.detail if reporter else None)
        if reporter:
            client.store.listeners.append(reporter.on_event)
        try:
            yield client
        finally:
            client.close()

    def _status(self, client: Client, name: str) -> EndpointStatus:
        status = client.endpoint_status(name)
        self._check_target(status)
        return status

    def _check_target(self, status: EndpointStatus) -> None:
        if status.target != self.target:
            raise NotFound(
                f"endpoint {status.endpoint!r} is on target {status.target!r}, not {self.target!r}",
                hint=f"use -t orchestrate:/{status.target}",
            )

    def _finished(self, client: Client, name: str, deployment_id: int) -> dict[str, Any]:
        record = client.deployment_record(deployment_id, with_attempts=False)
        if record.status != "succeeded":
            live = client.endpoint_status(name).live_deployment_id
            raise OrchestrateMlflowError(
                f"deployment {deployment_id} on {name} {record.status}: {record.error}",
                error_code=int(databricks_pb2.INTERNAL_ERROR),
                exit_code=1,
                hint=(f"deployment {live} still serves; " if live else "")
                + f"see `orchestrate status {deployment_id}`",
            )
        return _deployment_summary(client.endpoint_status(name))


def _deployment_name(name: str | None, endpoint: str | None) -> str:
    """MLflow passes a deployment name, an endpoint, or both; in orchestrate they are one."""
    if name and endpoint and name != endpoint:
        raise _invalid(
            f"--name {name!r} and --endpoint {endpoint!r} differ",
            hint="an orchestrate endpoint is the deployment of the same name: give one of them",
        )
    chosen = name or endpoint
    if not chosen:
        raise _invalid("no deployment name given", hint="pass --name NAME")
    return chosen


def _check_flavor(flavor: str | None) -> None:
    if flavor not in (None, "", FLAVOR, "pyfunc"):
        raise _invalid(
            f"flavor {flavor!r} is not supported",
            hint=f"orchestrate serves a model's {FLAVOR} flavor; leave --flavor out",
        )


def _not_supported(what: str, hint: str) -> OrchestrateMlflowError:
    return OrchestrateMlflowError(
        f"{what} is not supported by orchestrate",
        hint=hint,
        error_code=int(databricks_pb2.NOT_IMPLEMENTED),
        exit_code=2,
    )


def _existing_status(client: Client, name: str) -> EndpointStatus | None:
    try:
        return client.endpoint_status(name)
    except NotFound:
        return None


def _deployment_summary(status: EndpointStatus) -> dict[str, Any]:
    """MLflow's deployment dict (`name`, `flavor`) over an endpoint's status."""
    live = status.live
    summary: dict[str, Any] = {
        "name": status.endpoint,
        "flavor": FLAVOR,
        "target": status.target,
        "url": status.url,
        "deployment_id": status.live_deployment_id,
        "status": live.status if live else None,
        "model_uri": live.model_uri if live else None,
        "model_digest": live.model_digest if live else None,
        "config": live.config if live else None,
        "config_sources": live.config_sources if live else None,  # default, -C, inherited…
        "model_source": live.model_source if live else None,  # what a models:/ URI resolved to
        "runtime": live.runtime if live else None,
    }
    latest = status.latest
    if latest:
        summary["latest_deployment"] = {
            "id": latest.id,
            "status": latest.status,
            "current_stage": latest.current_stage,
            "error": latest.error,
        }
    return summary


def _request_body(inputs: Any) -> bytes:
    """JSON for /invocations in MLflow's scoring protocol."""
    from mlflow.utils.proto_json_utils import NumpyEncoder

    if inputs is None:
        raise _invalid("no inputs given to predict", hint="pass a DataFrame, a dict or a list")
    if isinstance(inputs, str):
        return inputs.encode()
    if isinstance(inputs, bytes):
        return inputs
    if type(inputs).__name__ == "DataFrame" and hasattr(inputs, "to_json"):
        frame: str = inputs.to_json(orient="split", index=False)
        return b'{"dataframe_split": ' + frame.encode() + b"}"
    if isinstance(inputs, dict) and set(inputs) & _REQUEST_KEYS == set(inputs):
        payload: Any = inputs
    elif isinstance(inputs, (dict, list)) or hasattr(inputs, "tolist"):
        payload = {"inputs": inputs}
    else:
        raise _invalid(
            f"cannot send {type(inputs).__name__} to a scoring server",
            hint="pass a pandas DataFrame, a dict, a list or a numpy array",
        )
    return json.dumps(payload, cls=NumpyEncoder).encode()


def run_local(name: str, model_uri: str, flavor: str | None = None, config: Mapping[str, Any] | None = None) -> None:
    """Serve the model in the foreground on this machine until interrupted, like `orchestrate
    serve` (whatever the target; nothing is recorded). Config: host, port (default 5000),
    workers, env_manager (`virtualenv` or `local`), pip_requirements_override and the
    requirements opt-ins allow_index_options and allow_direct_references."""
    from .config import ENGINE_KEYS
    from .model.environments import parse_overrides
    from .model.requirements import Policy
    from .serving import scoring_command

    _check_flavor(flavor)
    values = dict(config or {})
    unknown = sorted(set(values) - set(_RUN_LOCAL_KEYS))
    if unknown:
        raise _invalid(
            f"unknown run-local config key(s) {', '.join(unknown)}", hint="valid keys: " + ", ".join(_RUN_LOCAL_KEYS)
        )

    def log(line: str) -> None:
        click.echo(line, err=True)

    with _as_mlflow_errors():
        command, env = scoring_command(
            model_uri,
            [
                "serve",
                "--host",
                str(values.get("host", "127.0.0.1")),
                "--port",
                str(values.get("port", 5000)),
                "--workers",
                str(values.get("workers", 1)),
            ],
            env_manager=str(values.get("env_manager", "virtualenv")),
            overrides=parse_overrides(values.get("pip_requirements_override")),
            log=log,
            policy=Policy.from_config(
                {
                    key: ENGINE_KEYS[key].parse(key, values[key], "run-local config")
                    for key in ("allow_index_options", "allow_direct_references")
                    if key in values
                }
            ),
        )
    log(f"serving {model_uri} as {name} in the foreground; Ctrl-C stops it")
    server = subprocess.Popen(command, env=env)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait()


def target_help() -> str:
    """`mlflow deployments help -t orchestrate`: the URI format, each installed target's
    config keys, and what each command does."""
    from .config import ENGINE_KEYS
    from .target_contract import available_targets, load_target

    lines = [
        "orchestrate: deploy MLflow models through orchestrate's recorded, resumable stages.",
        "",
        "Target URI: orchestrate:/<target> (plain `orchestrate` is the local target). Installed targets:",
    ]
    for target_name in sorted(available_targets()):
        plugin = load_target(target_name)
        lines.append(f"  orchestrate:/{target_name}: {plugin.description}")
        for key, spec in plugin.config_keys.items():
            lines.append(f"      -C {key}=…  ({spec.type.__name__}, default {spec.default!r}) {spec.help}")
    lines += [
        "  every target also takes -C " + ", ".join(k for k in ENGINE_KEYS if "." not in k) + ", max_attempts.<stage>",
        "",
        "--name is the orchestrate endpoint; `orchestrate status NAME` shows what MLflow's commands did.",
        "  create       first deployment of an endpoint (an endpoint that already serves is an error)",
        "  update       -m MODEL: a new model, the live config kept and -C applied on top;",
        "               -C only: the live model with its config patched",
        "  delete       stops what the endpoint runs; deleting a missing endpoint succeeds",
        "  get, list    the live deployment's record; this target's endpoints",
        "  predict      the live deployment answers; explain is not supported",
        "  run-local    serves the model in the foreground (-C host, port, workers, env_manager,",
        "               pip_requirements_override); nothing is recorded",
        "  *-endpoint   an orchestrate endpoint is its deployment: get/list/update/delete-endpoint act",
        "               on it; create-endpoint is not supported (the first `create` makes it).",
        "A failed or interrupted deployment is resumable: `orchestrate resume ID`. State store:",
        "ORCHESTRATE_DB_URL, else SQLite under ORCHESTRATE_HOME. See docs/mlflow-plugin.md.",
    ]
    return "\n".join(lines)
