"""The contract between orchestrate and its targets: all a target sees of the runner and the
state store is here (it may also use the toolkit modules: health, environments, images...).
A target subclasses `Target`; each stage method gets a `StageContext` (its deployment, earlier
outputs, the recorded-resource API) and returns its outputs. Targets are found by entry point
(`orchestrate.targets`) only: nothing in orchestrator/ imports targets/.

Re-exported here, so a target needs no other module of orchestrate's core: the config key type
(`ConfigKey`), the errors a target raises, the stages and resource states.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import String, bindparam, func, insert, select, update

from . import secret_values
from .config import ConfigKey
from .errors import ConfigError, PermanentTargetError, RetryableTargetError, TargetError
from .states import (
    LIVE_RESOURCE_STATES,
    STAGES,
    AttemptStatus,
    DeploymentStatus,
    EventKind,
    ResourceState,
    Stage,
)

# Files a target writes under ORCHESTRATE_HOME are its owner's only.
from .store import private_directory, private_opener
from .store.tables import Deployment, Resource, StageAttempt, utcnow

__all__ = [
    "ENTRY_POINT_GROUP",
    "LIVE_RESOURCE_STATES",
    "ConfigError",
    "ConfigKey",
    "DeploymentView",
    "Invocation",
    "Outputs",
    "PermanentTargetError",
    "RenderRequest",
    "ResourceState",
    "ResourceView",
    "RetryableTargetError",
    "Stage",
    "StageContext",
    "Target",
    "TargetError",
    "available_targets",
    "invoke_scoring_server",
    "load_target",
    "private_directory",
    "private_opener",
    "validated_model",
]

ENTRY_POINT_GROUP = "orchestrate.targets"

Outputs = dict[str, Any]

_COLUMNS = (
    Resource.id,
    Resource.endpoint_id,
    Resource.deployment_id,
    Resource.stage,
    Resource.kind,
    Resource.name,
    Resource.external_id,
    Resource.state,
    Resource.data,
)
# Built once and run on the transaction's connection: they sit on every stage's hot path.
_FIND = (
    select(*_COLUMNS)
    .where(
        Resource.deployment_id == bindparam("deployment"),
        Resource.kind == bindparam("kind"),
        Resource.name == bindparam("name"),
    )
    .order_by(Resource.id.desc())
    .limit(1)
)
_PLAN = insert(Resource).returning(*_COLUMNS)
_DATA = select(Resource.data).where(Resource.id == bindparam("resource"))
_MARK = (
    update(Resource)
    .where(Resource.id == bindparam("resource"))
    .values(
        state=bindparam("new_state"),
        external_id=func.coalesce(bindparam("new_external_id", type_=String), Resource.external_id),
        updated_at=bindparam("at"),
    )
    .returning(*_COLUMNS)
)
_MARK_WITH_DATA = _MARK.values(data=bindparam("new_data"))
_OUTPUTS = (
    select(StageAttempt.stage, StageAttempt.outputs)
    .where(
        StageAttempt.deployment_id == bindparam("deployment"),
        StageAttempt.status.in_([AttemptStatus.SUCCEEDED.value, AttemptStatus.SKIPPED.value]),
    )
    .order_by(StageAttempt.id)
)
_RUNNING_UNCANCELLED = select(Deployment.id).where(
    Deployment.id == bindparam("deployment"),
    Deployment.status == DeploymentStatus.RUNNING.value,
    Deployment.cancel_requested.is_(False),
)


def stage_outputs(session: Any, deployment_id: int) -> dict[str, dict[str, Any]]:
    """Outputs of the latest succeeded or skipped attempt of each stage."""
    rows = session.connection().execute(_OUTPUTS, {"deployment": deployment_id}).all()
    return {stage: dict(outputs) for stage, outputs in rows}


def merged_outputs(session: Any, deployment_id: int) -> dict[str, Any]:
    """Every stage's recorded outputs in one dict, later stages' keys over earlier ones'."""
    merged: dict[str, Any] = {}
    by_stage = stage_outputs(session, deployment_id)
    for stage in STAGES:
        merged.update(by_stage.get(stage.value, {}))
    return merged


def _resource_view(row: Any) -> ResourceView:
    return ResourceView(
        row.id,
        row.deployment_id,
        row.stage,
        row.kind,
        row.name,
        row.external_id,
        ResourceState(row.state),
        dict(row.data),
    )


if TYPE_CHECKING:
    from .model.mlmodel import ModelInfo
    from .model.uri import ModelSource
    from .store import Fence, Store


@dataclass(frozen=True)
class DeploymentView:
    id: int
    endpoint_id: int
    endpoint_name: str
    target: str
    model_uri: str
    model_digest: str
    config: dict[str, Any]
    source_deployment_id: int | None
    previous_live_id: int | None

    @classmethod
    def of(cls, deployment: Deployment, endpoint_name: str) -> DeploymentView:
        return cls(
            id=deployment.id,
            endpoint_id=deployment.endpoint_id,
            endpoint_name=endpoint_name,
            target=deployment.target,
            model_uri=deployment.model_uri,
            model_digest=deployment.model_digest,
            config=dict(deployment.config),
            source_deployment_id=deployment.source_deployment_id,
            previous_live_id=deployment.previous_live_id,
        )


@dataclass(frozen=True)
class ResourceView:
    id: int
    deployment_id: int
    stage: str
    kind: str
    name: str
    external_id: str | None
    state: ResourceState
    data: dict[str, Any]

    @classmethod
    def of(cls, row: Resource) -> ResourceView:
        return cls(
            row.id,
            row.deployment_id,
            row.stage,
            row.kind,
            row.name,
            row.external_id,
            ResourceState(row.state),
            dict(row.data),
        )


@dataclass
class StageContext:
    """Handed to every target call; records resources in fenced transactions."""

    store: Store
    fence: Fence
    deployment: DeploymentView
    stage: Stage
    home: Path
    outputs: dict[str, Any]
    log_file: Path
    live_outputs: dict[str, Any] | None = None
    echo: Callable[[str], None] = field(default=lambda _message: None)

    @property
    def config(self) -> dict[str, Any]:
        """The deployment's config with env:/file: references read now (never stored)."""
        return secret_values.resolve_config(self.deployment.config)

    def log(self, message: str) -> None:
        """A line for the user and for this attempt's log file, secrets scrubbed."""
        message = secret_values.scrub(message)
        with open(self.log_file, "a", opener=private_opener) as handle:
            handle.write(message.rstrip("\n") + "\n")
        self.echo(message)

    def find(self, kind: str, name: str) -> ResourceView | None:
        """This deployment's record of a resource, so a rerun adopts instead of creating twice."""
        with self.store.read() as session:
            row = (
                session.connection()
                .execute(_FIND, {"deployment": self.deployment.id, "kind": kind, "name": name})
                .first()
            )
            return _resource_view(row) if row else None

    def plan(self, kind: str, name: str, data: dict[str, Any] | None = None) -> ResourceView:
        """Record a resource as planned before creating it (or return the existing record)."""
        with self.store.write(self.fence) as tx:
            existing = tx.connection.execute(
                _FIND, {"deployment": self.deployment.id, "kind": kind, "name": name}
            ).first()
            if existing is not None and existing.state != ResourceState.DELETED.value:
                return _resource_view(existing)
            now = utcnow()
            row = tx.connection.execute(
                _PLAN,
                {
                    "endpoint_id": self.deployment.endpoint_id,
                    "deployment_id": self.deployment.id,
                    "stage": self.stage.value,
                    "target": self.deployment.target,
                    "kind": kind,
                    "name": name,
                    "external_id": None,
                    "state": ResourceState.PLANNED.value,
                    "data": data or {},
                    "created_at": now,
                    "updated_at": now,
                },
            ).one()
            tx.event(
                EventKind.RESOURCE_PLANNED,
                f"{kind} {name} planned",
                endpoint_id=self.deployment.endpoint_id,
                deployment_id=self.deployment.id,
                data={"resource_id": row.id},
            )
            return _resource_view(row)

    def mark(
        self,
        resource: ResourceView,
        state: ResourceState,
        *,
        external_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> ResourceView:
        """Record that a resource now exists (created/adopted) or is gone (deleted)."""
        with self.store.write(self.fence) as tx:
            values: dict[str, Any] = {
                "resource": resource.id,
                "new_state": state.value,
                "new_external_id": external_id,
                "at": utcnow(),
            }
            if data:
                recorded = tx.connection.execute(_DATA, {"resource": resource.id}).scalar_one()
                values["new_data"] = {**recorded, **data}
            row = tx.connection.execute(_MARK_WITH_DATA if data else _MARK, values).one()
            tx.event(
                EventKind.of_resource(state),
                f"{row.kind} {row.name} {state.value}" + (f" ({row.external_id})" if row.external_id else ""),
                endpoint_id=row.endpoint_id,
                deployment_id=self.deployment.id,
                data={"resource_id": row.id},
            )
            return _resource_view(row)

    def endpoint_resources(self, *, live_only: bool = True) -> list[ResourceView]:
        """Every recorded resource of this endpoint, oldest first."""
        with self.store.read() as session:
            query = select(Resource).where(Resource.endpoint_id == self.deployment.endpoint_id)
            if live_only:
                query = query.where(Resource.state.in_([s.value for s in LIVE_RESOURCE_STATES]))
            return [ResourceView.of(row) for row in session.execute(query.order_by(Resource.id)).scalars()]

    def recorded_outputs(self) -> dict[str, Any]:
        """This deployment's stage outputs as recorded in the store (`outputs` is empty when a
        resource is released outside a stage run: a cancel, a failure's release)."""
        with self.store.read() as session:
            return merged_outputs(session, self.deployment.id)

    def is_running(self) -> bool:
        """Whether the deployment is `running` with no cancel requested, read from the store now
        (a failed update is `rolling_back` by the time its resources are released)."""
        with self.store.read() as session:
            return (
                session.connection().execute(_RUNNING_UNCANCELLED, {"deployment": self.deployment.id}).first()
                is not None
            )


@dataclass(frozen=True)
class Invocation:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class RenderRequest:
    """What `orchestrate render` hands a target: the endpoint, the model's snapshot and where it
    came from, the image the objects run, and the target's resolved config."""

    endpoint: str
    model: ModelInfo
    source: ModelSource
    image: str
    config: Mapping[str, Any]


class Target(ABC):
    """A place models serve from. Stage methods are idempotent: run twice, they adopt."""

    name: ClassVar[str]
    description: ClassVar[str]
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {}
    # Stages recorded as skipped for this target.
    not_applicable: ClassVar[frozenset[Stage]] = frozenset()
    # Resource kinds that serve traffic: stopped on failure, cancel, cleanup and delete.
    # Anything else (a shared virtualenv, a cached image) outlives deployments.
    disposable_kinds: ClassVar[frozenset[str]] = frozenset()

    def normalize_config(self, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Config as given (-C or a file, named by `where`) with other tools' names for this
        target's keys replaced by its own (the sagemaker target takes MLflow's)."""
        return dict(values)

    def preflight(self, config: Mapping[str, Any], live_outputs: Mapping[str, Any] | None) -> None:
        """Checks that need no state change (a port in use); raise ConfigError."""

    def validate(self, ctx: StageContext) -> Outputs:
        """Read the model again, check it is the one recorded, and snapshot it."""
        return validated_model(ctx)

    def outputs_usable(self, stage: Stage, outputs: Mapping[str, Any]) -> bool:
        """Whether a stage's recorded outputs can stand in for running it again (a rollback reuses
        them, a resume skips the stage): False when files they name on this machine are gone."""
        if stage == Stage.VALIDATE and outputs.get("model_dir"):
            return (Path(outputs["model_dir"]) / "MLmodel").is_file()  # the snapshot under ORCHESTRATE_HOME/models
        return True

    def build(self, ctx: StageContext) -> Outputs:
        return {}

    def push(self, ctx: StageContext) -> Outputs:
        return {}

    @abstractmethod
    def create_endpoint(self, ctx: StageContext) -> Outputs: ...

    @abstractmethod
    def health_check(self, ctx: StageContext) -> Outputs: ...

    def shift_traffic(self, ctx: StageContext) -> Outputs:
        return {}

    def cleanup(self, ctx: StageContext) -> Outputs:
        """Release what older deployments of this endpoint still hold."""
        older = (r for r in ctx.endpoint_resources() if r.deployment_id != ctx.deployment.id)
        return {"released": [resource.name for resource in self.release_disposable(ctx, older)]}

    def run_stage(self, stage: Stage, ctx: StageContext) -> Outputs:
        """The runner's one way into a target: the stage's method, chosen by a typed table."""
        methods: dict[Stage, Callable[[StageContext], Outputs]] = {
            Stage.VALIDATE: self.validate,
            Stage.BUILD: self.build,
            Stage.PUSH: self.push,
            Stage.CREATE_ENDPOINT: self.create_endpoint,
            Stage.HEALTH_CHECK: self.health_check,
            Stage.SHIFT_TRAFFIC: self.shift_traffic,
            Stage.CLEANUP: self.cleanup,
        }
        return methods[stage](ctx)

    @abstractmethod
    def release(self, ctx: StageContext, resource: ResourceView) -> None:
        """Delete one external resource; one already gone is not an error."""

    def release_disposable(self, ctx: StageContext, resources: Iterable[ResourceView]) -> list[ResourceView]:
        """Release, in the order given, those of ``resources`` this target disposes of (the
        one loop cleanup, an abort and ``delete`` share); returns them."""
        disposable = [resource for resource in resources if resource.kind in self.disposable_kinds]
        for resource in disposable:
            self.release_recorded(ctx, resource)
        return disposable

    def release_recorded(self, ctx: StageContext, resource: ResourceView) -> None:
        if resource.state in LIVE_RESOURCE_STATES or resource.state == ResourceState.PLANNED:
            self.release(ctx, resource)
            ctx.mark(resource, ResourceState.DELETED)

    def describe(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """Live facts about a deployment from its recorded outputs (is the process alive...)."""
        return {}

    def invoke(self, outputs: Mapping[str, Any], body: bytes, content_type: str) -> Invocation:
        raise ConfigError(f"target {self.name!r} cannot be invoked from orchestrate")

    def logs(self, outputs: Mapping[str, Any], tail: int) -> str:
        raise ConfigError(f"target {self.name!r} keeps no logs orchestrate can read")

    # Targets whose endpoint is a set of declarative objects print them with `orchestrate render`.
    renders: ClassVar[bool] = False

    def check_render(self, endpoint: str, config: Mapping[str, Any]) -> None:
        """Checks of the config `render` runs before any build; raise ConfigError."""

    def render(self, request: RenderRequest) -> list[dict[str, Any]]:
        """The objects `deploy` would apply for this model and config, as plain dicts."""
        raise ConfigError(f"target {self.name!r} has no objects to render")


def validated_model(ctx: StageContext) -> Outputs:
    """The model's facts for later stages, from a snapshot under ORCHESTRATE_HOME/models, so a
    later edit of the user's directory cannot leak into this deployment or its rollback."""
    from .model import requirements
    from .model import uri as model_uri

    # The snapshot made when the deployment was created; never the URI resolved again.
    info = model_uri.materialize(
        ctx.deployment.model_uri,
        ctx.deployment.model_digest,
        ctx.home / "models",
        recorded=lambda: model_uri.recorded_source(ctx.store, ctx.deployment.id),
    )
    requirements.check_policy(info.requirements, requirements.Policy.from_config(ctx.config))
    return {
        "model_dir": str(info.path),
        "python_version": info.python_version,
        "requirements": list(info.requirements),
        "loader_module": info.loader_module,
        "input_example": info.input_example,
    }


def invoke_scoring_server(url: str, body: bytes, content_type: str, *, hint: str) -> Invocation:
    """POST to /invocations of a scoring server this machine can reach."""
    from . import health

    try:
        status, answer_type, answer = health.http("POST", f"{url}/invocations", body, content_type, timeout=60.0)
    except OSError as exc:
        raise PermanentTargetError(f"cannot reach {url}: {exc}", hint=hint) from exc
    return Invocation(status, answer_type, answer)


def available_targets() -> dict[str, str]:
    """Installed target names and the import path of each."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


# Scanning entry points reads the metadata of every installed distribution (~20 ms); a
# deployment loads its target several times, so each found class is remembered.
_target_classes: dict[str, type[Target]] = {}


def load_target(name: str) -> Target:
    """The installed target called `name`, or a ConfigError listing the installed ones."""
    target_class = _target_classes.get(name)
    if target_class is None:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not matches:
            installed = ", ".join(sorted(available_targets())) or "none"
            raise ConfigError(
                f"unknown target {name!r}",
                hint=f"installed targets: {installed} (see `orchestrate targets`)",
            )
        loaded = matches[0].load()
        if not (isinstance(loaded, type) and issubclass(loaded, Target)):
            raise ConfigError(f"entry point {matches[0].value} for target {name!r} is not a Target subclass")
        target_class = _target_classes.setdefault(name, loaded)
    return target_class()
