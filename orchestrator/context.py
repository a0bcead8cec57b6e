"""What a stage sees: its deployment, earlier outputs, and the recorded-resource API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, bindparam, func, insert, select, update

from . import secrets
from .states import LIVE_RESOURCE_STATES, ResourceState, Stage
from .store import private_opener
from .tables import Deployment, Resource, utcnow

_COLUMNS = (Resource.id, Resource.endpoint_id, Resource.deployment_id, Resource.stage, Resource.kind,
            Resource.name, Resource.external_id, Resource.state, Resource.data)
# Built once and run on the transaction's connection: they sit on every stage's hot path.
_FIND = (
    select(*_COLUMNS)
    .where(Resource.deployment_id == bindparam("deployment"), Resource.kind == bindparam("kind"),
           Resource.name == bindparam("name"))
    .order_by(Resource.id.desc())
    .limit(1)
)
_PLAN = insert(Resource).returning(*_COLUMNS)
_DATA = select(Resource.data).where(Resource.id == bindparam("resource"))
_MARK = (
    update(Resource)
    .where(Resource.id == bindparam("resource"))
    .values(state=bindparam("new_state"),
            external_id=func.coalesce(bindparam("new_external_id", type_=String), Resource.external_id),
            updated_at=bindparam("at"))
    .returning(*_COLUMNS)
)
_MARK_WITH_DATA = _MARK.values(data=bindparam("new_data"))


def _resource_view(row: Any) -> ResourceView:
    return ResourceView(row.id, row.deployment_id, row.stage, row.kind, row.name, row.external_id,
                        ResourceState(row.state), dict(row.data))


if TYPE_CHECKING:
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
        return cls(row.id, row.deployment_id, row.stage, row.kind, row.name, row.external_id,
                   ResourceState(row.state), dict(row.data))


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
        return secrets.resolve_config(self.deployment.config)

    def log(self, message: str) -> None:
        """A line for the user and for this attempt's log file, secrets scrubbed."""
        message = secrets.scrub(message)
        with open(self.log_file, "a", opener=private_opener) as handle:
            handle.write(message.rstrip("\n") + "\n")
        self.echo(message)

    def find(self, kind: str, name: str) -> ResourceView | None:
        """This deployment's record of a resource, so a rerun adopts instead of creating twice."""
        with self.store.read() as session:
            row = session.connection().execute(_FIND, {"deployment": self.deployment.id, "kind": kind,
                                                        "name": name}).first()
            return _resource_view(row) if row else None

    def plan(self, kind: str, name: str, data: dict[str, Any] | None = None) -> ResourceView:
        """Record a resource as planned before creating it (or return the existing record)."""
        with self.store.write(self.fence) as tx:
            existing = tx.connection.execute(_FIND, {"deployment": self.deployment.id, "kind": kind,
                                                     "name": name}).first()
            if existing is not None and existing.state != ResourceState.DELETED.value:
                return _resource_view(existing)
            now = utcnow()
            row = tx.connection.execute(_PLAN, {
                "endpoint_id": self.deployment.endpoint_id, "deployment_id": self.deployment.id,
                "stage": self.stage.value, "target": self.deployment.target, "kind": kind, "name": name,
                "external_id": None, "state": ResourceState.PLANNED.value, "data": data or {},
                "created_at": now, "updated_at": now,
            }).one()
            tx.event("resource_planned", f"{kind} {name} planned", endpoint_id=self.deployment.endpoint_id,
                     deployment_id=self.deployment.id, data={"resource_id": row.id})
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
            values: dict[str, Any] = {"resource": resource.id, "new_state": state.value,
                                      "new_external_id": external_id, "at": utcnow()}
            if data:
                recorded = tx.connection.execute(_DATA, {"resource": resource.id}).scalar_one()
                values["new_data"] = {**recorded, **data}
            row = tx.connection.execute(_MARK_WITH_DATA if data else _MARK, values).one()
            tx.event(f"resource_{state.value}", f"{row.kind} {row.name} {state.value}"
                     + (f" ({row.external_id})" if row.external_id else ""),
                     endpoint_id=row.endpoint_id, deployment_id=self.deployment.id,
                     data={"resource_id": row.id})
            return _resource_view(row)

    def endpoint_resources(self, *, live_only: bool = True) -> list[ResourceView]:
        """Every recorded resource of this endpoint, oldest first."""
        with self.store.read() as session:
            query = select(Resource).where(Resource.endpoint_id == self.deployment.endpoint_id)
            if live_only:
                query = query.where(Resource.state.in_([s.value for s in LIVE_RESOURCE_STATES]))
            return [ResourceView.of(row) for row in session.execute(query.order_by(Resource.id)).scalars()]
