"""The read side of the store: typed, frozen records of deployments, their attempts and
resources, events and endpoints, and the queries that return them.

Records are what `api.Client`'s reads return, what the CLI renders and what `--json` dumps
(`to_dict`: the JSON shape, stable across releases). Times are ISO 8601 text, as stored; a
deployment's config is redacted (secret references shown, never resolved values)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import secret_values
from ..errors import NotFound
from ..model.uri import ModelSource
from . import leases
from .tables import Deployment, Endpoint, Event, Resource, StageAttempt


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt at one stage."""

    stage: str
    attempt: int
    status: str
    runner: str | None
    started_at: str | None
    finished_at: str | None
    error_kind: str | None
    error_class: str | None
    error_message: str | None
    outputs: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "attempt": self.attempt,
            "status": self.status,
            "runner": self.runner,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error_kind": self.error_kind,
            "error_class": self.error_class,
            "error_message": self.error_message,
            "outputs": dict(self.outputs),
        }


@dataclass(frozen=True)
class ResourceRecord:
    """Something a deployment created (or planned to), as recorded."""

    kind: str
    name: str
    external_id: str | None
    state: str
    stage: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "external_id": self.external_id,
            "state": self.state,
            "stage": self.stage,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class DeploymentRecord:
    """A deployment: what it deploys, where it stands, and (when asked) its attempts,
    resources and the target's description of what runs."""

    id: int
    endpoint: str
    target: str
    status: str
    current_stage: str | None
    live: bool
    model_uri: str
    model_digest: str
    model_source: dict[str, Any]
    model: str  # the model source as one line
    config: dict[str, Any]
    config_sources: dict[str, str]
    error: str | None
    source_deployment_id: int | None
    previous_live_id: int | None
    actor: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    url: str | None = None
    attempts: tuple[AttemptRecord, ...] | None = None
    resources: tuple[ResourceRecord, ...] | None = None
    runtime: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id,
            "endpoint": self.endpoint,
            "target": self.target,
            "status": self.status,
            "current_stage": self.current_stage,
            "live": self.live,
            "model_uri": self.model_uri,
            "model_digest": self.model_digest,
            "model_source": dict(self.model_source),
            "model": self.model,
            "config": dict(self.config),
            "config_sources": dict(self.config_sources),
            "error": self.error,
            "source_deployment_id": self.source_deployment_id,
            "previous_live_id": self.previous_live_id,
            "actor": self.actor,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "url": self.url,
        }
        if self.attempts is not None:
            shown["attempts"] = [attempt.to_dict() for attempt in self.attempts]
        if self.resources is not None:
            shown["resources"] = [resource.to_dict() for resource in self.resources]
        if self.runtime is not None:
            shown["runtime"] = dict(self.runtime)
        return shown


@dataclass(frozen=True)
class LeaseRecord:
    """Who holds an endpoint's lease, and whether that runner is gone."""

    owner: str
    deployment_id: int | None
    acquired_at: str | None
    expires_at: str | None
    holder_gone: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "deployment_id": self.deployment_id,
            "acquired_at": self.acquired_at,
            "expires_at": self.expires_at,
            "holder_gone": self.holder_gone,
        }


@dataclass(frozen=True)
class EndpointStatus:
    """An endpoint: its live deployment and, when another is newer, the latest one."""

    endpoint: str
    target: str
    live_deployment_id: int | None
    latest_deployment_id: int | None
    lease: LeaseRecord | None
    live: DeploymentRecord | None = None
    latest: DeploymentRecord | None = None

    @property
    def url(self) -> str | None:
        return self.live.url if self.live else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "target": self.target,
            "live_deployment_id": self.live_deployment_id,
            "latest_deployment_id": self.latest_deployment_id,
            "lease": self.lease.to_dict() if self.lease else None,
            "live": self.live.to_dict() if self.live else None,
            "url": self.url,
            "latest": self.latest.to_dict() if self.latest else None,
        }


@dataclass(frozen=True)
class EndpointSummary:
    """One line of `orchestrate status` without a REF."""

    endpoint: str
    target: str
    live_deployment_id: int | None
    model_digest: str | None
    busy: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "target": self.target,
            "live_deployment_id": self.live_deployment_id,
            "model_digest": self.model_digest,
            "busy": self.busy,
        }


@dataclass(frozen=True)
class RecordedEvent:
    """An entry of the audit log."""

    id: int
    time: str | None
    actor: str
    kind: str
    deployment_id: int | None
    message: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "actor": self.actor,
            "kind": self.kind,
            "deployment_id": self.deployment_id,
            "message": self.message,
            "data": dict(self.data),
        }


def deployment(
    session: Session, deployment_id: int, *, with_attempts: bool, outputs: dict[str, Any]
) -> DeploymentRecord:
    """Deployment `deployment_id` (NotFound if there is none), with its attempts and
    resources when asked; `outputs` are its merged stage outputs (for the URL)."""
    row = deployment_row(session, deployment_id)
    record = _deployment(row, session.get_one(Endpoint, row.endpoint_id), url=outputs.get("url"))
    if not with_attempts:
        return record
    attempts = session.execute(
        select(StageAttempt).where(StageAttempt.deployment_id == deployment_id).order_by(StageAttempt.id)
    ).scalars()
    resources = session.execute(
        select(Resource).where(Resource.deployment_id == deployment_id).order_by(Resource.id)
    ).scalars()
    return replace(
        record,
        attempts=tuple(_attempt(attempt) for attempt in attempts),
        resources=tuple(_resource(resource) for resource in resources),
    )


def deployment_row(session: Session, deployment_id: int) -> Deployment:
    row = session.get(Deployment, deployment_id)
    if row is None:
        raise NotFound(f"no deployment with id {deployment_id}", hint="see `orchestrate list`")
    return row


def endpoint_row(session: Session, name: str, *, lock: bool = False) -> Endpoint:
    """The endpoint named `name` that is not deleted (NotFound otherwise), locked for the
    transaction when a command changes it."""
    query = select(Endpoint).where(Endpoint.name == name, Endpoint.deleted_at.is_(None))
    row = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no endpoint named {name!r}", hint="see `orchestrate list`")
    return row


def endpoint_status(session: Session, name: str) -> EndpointStatus:
    """Endpoint `name`'s ids and lease; the caller adds the live and latest deployments."""
    endpoint = endpoint_row(session, name)
    latest = (
        session.execute(
            select(Deployment.id).where(Deployment.endpoint_id == endpoint.id).order_by(Deployment.id.desc())
        )
        .scalars()
        .first()
    )
    lease = None
    if endpoint.lease_owner is not None:
        lease = LeaseRecord(
            owner=endpoint.lease_owner,
            deployment_id=endpoint.lease_deployment_id,
            acquired_at=_iso(endpoint.lease_acquired_at),
            expires_at=_iso(endpoint.lease_expires_at),
            holder_gone=leases.holder_is_gone(endpoint),
        )
    return EndpointStatus(endpoint.name, endpoint.target, endpoint.live_deployment_id, latest, lease)


def deployments(session: Session, *, limit: int, endpoint: str | None = None) -> list[DeploymentRecord]:
    """The newest `limit` deployments (of one endpoint, if given), newest first."""
    query = select(Deployment, Endpoint).join(Endpoint, Deployment.endpoint_id == Endpoint.id)
    if endpoint:
        query = query.where(Endpoint.name == endpoint)
    rows = session.execute(query.order_by(Deployment.id.desc()).limit(limit)).all()
    return [_deployment(row, of_endpoint) for row, of_endpoint in rows]


def endpoints(session: Session) -> list[EndpointSummary]:
    """Every endpoint not deleted, by name, with its live deployment's model digest."""
    rows = session.execute(
        select(Endpoint, Deployment)
        .outerjoin(Deployment, Deployment.id == Endpoint.live_deployment_id)
        .where(Endpoint.deleted_at.is_(None))
        .order_by(Endpoint.name)
    ).all()
    return [
        EndpointSummary(
            endpoint=e.name,
            target=e.target,
            live_deployment_id=e.live_deployment_id,
            model_digest=d.model_digest if d else None,
            busy=not leases.holder_is_gone(e),
        )
        for e, d in rows
    ]


def history(
    session: Session, *, deployment_id: int | None = None, endpoint: str | None = None, limit: int
) -> list[RecordedEvent]:
    """The newest `limit` events of a deployment or of an endpoint (deleted ones included),
    oldest first."""
    query = select(Event)
    if deployment_id is not None:
        deployment_row(session, deployment_id)
        query = query.where(Event.deployment_id == deployment_id)
    else:
        found = session.execute(select(Endpoint.id).where(Endpoint.name == endpoint)).scalar_one_or_none()
        if found is None:
            raise NotFound(f"no endpoint named {endpoint!r}", hint="see `orchestrate list`")
        query = query.where(Event.endpoint_id == found)
    rows = session.execute(query.order_by(Event.id.desc()).limit(limit)).scalars().all()
    return [_event(row) for row in reversed(rows)]


def events(
    session: Session, *, after_id: int, since: dt.datetime | None, endpoint: str | None, limit: int
) -> list[RecordedEvent]:
    """Events after an event id and/or a time (of one endpoint, if given), oldest first."""
    query = select(Event).where(Event.id > after_id)
    if since is not None:
        query = query.where(Event.time >= since)
    if endpoint is not None:
        query = query.where(Event.endpoint_id == endpoint_row(session, endpoint).id)
    return [_event(row) for row in session.execute(query.order_by(Event.id).limit(limit)).scalars()]


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _deployment(row: Deployment, endpoint: Endpoint, *, url: str | None = None) -> DeploymentRecord:
    source = ModelSource.from_dict(row.model_source, row.model_uri)
    return DeploymentRecord(
        id=row.id,
        endpoint=endpoint.name,
        target=row.target,
        status=row.status,
        current_stage=row.current_stage,
        live=endpoint.live_deployment_id == row.id,
        model_uri=row.model_uri,
        model_digest=row.model_digest,
        model_source=source.as_dict(),
        model=source.summary(),
        config=secret_values.redact(row.config),
        config_sources=dict(row.config_sources or {}),
        error=row.error,
        source_deployment_id=row.source_deployment_id,
        previous_live_id=row.previous_live_id,
        actor=row.actor,
        created_at=_iso(row.created_at),
        started_at=_iso(row.started_at),
        finished_at=_iso(row.finished_at),
        url=url,
    )


def _attempt(row: StageAttempt) -> AttemptRecord:
    return AttemptRecord(
        stage=row.stage,
        attempt=row.attempt,
        status=row.status,
        runner=row.runner,
        started_at=_iso(row.started_at),
        finished_at=_iso(row.finished_at),
        error_kind=row.error_kind,
        error_class=row.error_class,
        error_message=row.error_message,
        outputs=dict(row.outputs or {}),
    )


def _resource(row: Resource) -> ResourceRecord:
    return ResourceRecord(
        kind=row.kind,
        name=row.name,
        external_id=row.external_id,
        state=row.state,
        stage=row.stage,
        data=dict(row.data or {}),
    )


def _event(row: Event) -> RecordedEvent:
    return RecordedEvent(
        id=row.id,
        time=_iso(row.time),
        actor=row.actor,
        kind=row.kind,
        deployment_id=row.deployment_id,
        message=row.message,
        data=dict(row.data or {}),
    )
