"""The state store's tables: endpoints, deployments, stage attempts, resources, events."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores naive UTC, returns aware UTC, on every backend alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the state store; use utcnow()")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Endpoint(Base):
    __tablename__ = "endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    target: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    live_deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", use_alter=True, ondelete="SET NULL")
    )
    # The lease: who runs a deployment on this endpoint now, until when, under which token.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_host: Mapped[str | None] = mapped_column(String(255))
    lease_pid: Mapped[int | None] = mapped_column(Integer)
    lease_deployment_id: Mapped[int | None] = mapped_column(Integer)
    lease_acquired_at: Mapped[dt.datetime | None]
    lease_expires_at: Mapped[dt.datetime | None]
    fencing_token: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[dt.datetime | None]


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (
        Index("ix_deployments_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_deployments_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(64))
    model_uri: Mapped[str] = mapped_column(Text)
    model_digest: Mapped[str] = mapped_column(String(64))
    # What model_uri resolved to when the deployment was created (orchestrator.model.uri.ModelSource):
    # registered name, version, alias, run; resume and rollback read it, never the registry.
    model_source: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Resolved config as given by the user; secrets stay as references, never values.
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Where each config key came from: default, live deployment N, config file, -C.
    config_sources: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    current_stage: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    # The deployment whose build a rollback reuses.
    source_deployment_id: Mapped[int | None] = mapped_column(Integer)
    previous_live_id: Mapped[int | None] = mapped_column(Integer)
    # Earliest stage to run again because failure handling released what it had made.
    restart_stage: Mapped[str | None] = mapped_column(String(32))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class StageAttempt(Base):
    __tablename__ = "stage_attempts"
    __table_args__ = (Index("ix_stage_attempts_deployment_id_id", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    runner: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    error_kind: Mapped[str | None] = mapped_column(String(16))
    error_class: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Resource(Base):
    __tablename__ = "resources"
    __table_args__ = (
        Index("ix_resources_endpoint_id_state", "endpoint_id", "state"),
        Index("ix_resources_deployment_id", "deployment_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    # Deterministic name chosen before creation; external_id is what the target returned.
    name: Mapped[str] = mapped_column(String(512))
    external_id: Mapped[str | None] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_deployment_id_id", "deployment_id", "id"),
        # `history NAME` reads an endpoint's newest events; without it that scans every event.
        Index("ix_events_endpoint_id_id", "endpoint_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    endpoint_id: Mapped[int | None] = mapped_column(Integer)
    deployment_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
