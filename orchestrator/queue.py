"""Claiming work from the database: queued deployments in order, and deployments whose runner left.

PostgreSQL: rows are locked with `FOR UPDATE SKIP LOCKED`, so many workers on many hosts claim
without waiting on each other. SQLite: every write transaction is `BEGIN IMMEDIATE`, which
serialises claims on one host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.orm import aliased

from . import leases
from .errors import EndpointBusy
from .states import AttemptStatus, DeploymentStatus, ErrorKind
from .store import Fence, Store
from .tables import Deployment, Endpoint, StageAttempt, utcnow

# How many candidates one claim looks at before giving up for this round.
_CANDIDATES = 8


@dataclass(frozen=True)
class Claim:
    deployment_id: int
    fence: Fence
    taken_over: bool


def _head_of_queue() -> Select[Any]:
    """Queued deployments that are first in their endpoint's queue, on an idle endpoint."""
    earlier = aliased(Deployment)
    running = aliased(Deployment)
    return select(Deployment).where(
        Deployment.status == DeploymentStatus.QUEUED.value,
        ~exists().where(
            earlier.endpoint_id == Deployment.endpoint_id,
            earlier.status == DeploymentStatus.QUEUED.value,
            earlier.id < Deployment.id,
        ),
        ~exists().where(
            running.endpoint_id == Deployment.endpoint_id,
            running.status.in_([DeploymentStatus.RUNNING.value, DeploymentStatus.ROLLING_BACK.value]),
        ),
    )


def claim_queued(store: Store, runner: leases.Runner, ttl_s: float, *, targets: frozenset[str] | None = None,
                 deployment_id: int | None = None) -> Claim | None:
    """Take the oldest runnable queued deployment (or only `deployment_id`) and its lease."""
    query = _head_of_queue()
    if targets:
        query = query.where(Deployment.target.in_(sorted(targets)))
    if deployment_id is not None:
        query = query.where(Deployment.id == deployment_id)
    query = query.order_by(Deployment.id).limit(_CANDIDATES).with_for_update(skip_locked=True, of=Deployment)
    with store.write() as tx:
        for deployment in tx.session.execute(query).scalars().all():
            endpoint = tx.session.execute(
                select(Endpoint).where(Endpoint.id == deployment.endpoint_id).with_for_update(skip_locked=True)
            ).scalar_one_or_none()
            if endpoint is None or not leases.holder_is_gone(endpoint):
                continue
            try:
                fence = leases.take(tx.session, endpoint, deployment.id, runner, ttl_s)
            except EndpointBusy:
                continue
            deployment.status = DeploymentStatus.RUNNING.value
            deployment.started_at = utcnow()
            tx.event("deployment_claimed", f"deployment {deployment.id} claimed by {runner.owner}",
                     endpoint_id=endpoint.id, deployment_id=deployment.id)
            return Claim(deployment.id, fence, taken_over=False)
    return None


def claim_orphaned(store: Store, runner: leases.Runner, ttl_s: float, *,
                   targets: frozenset[str] | None = None) -> Claim | None:
    """Take over a running deployment whose runner stopped, died, or let its lease expire."""
    now = utcnow()
    query = (
        select(Deployment, Endpoint)
        .join(Endpoint, Endpoint.id == Deployment.endpoint_id)
        .where(
            Deployment.status == DeploymentStatus.RUNNING.value,
            or_(
                Endpoint.lease_owner.is_(None),
                Endpoint.lease_expires_at < now,
                and_(Endpoint.lease_host == runner.host, Endpoint.lease_owner != runner.owner),
            ),
        )
        .order_by(Deployment.id)
        .limit(_CANDIDATES)
        .with_for_update(skip_locked=True, of=Endpoint)
    )
    if targets:
        query = query.where(Deployment.target.in_(sorted(targets)))
    with store.write() as tx:
        for deployment, endpoint in tx.session.execute(query).all():
            if not leases.holder_is_gone(endpoint):
                continue
            fence = leases.take(tx.session, endpoint, deployment.id, runner, ttl_s)
            abandoned = abandon_running_attempts(tx.session, deployment.id)
            tx.event("deployment_taken_over",
                     f"deployment {deployment.id} taken over by {runner.owner} ({abandoned} attempt(s) abandoned)",
                     endpoint_id=endpoint.id, deployment_id=deployment.id)
            return Claim(deployment.id, fence, taken_over=True)
    return None


def abandon_running_attempts(session: object, deployment_id: int) -> int:
    """Mark attempts a dead runner left `running` as abandoned; returns how many."""
    rows = session.execute(  # type: ignore[attr-defined]
        select(StageAttempt).where(StageAttempt.deployment_id == deployment_id,
                                   StageAttempt.status == AttemptStatus.RUNNING.value)
    ).scalars().all()
    for row in rows:
        row.status = AttemptStatus.ABANDONED.value
        row.finished_at = utcnow()
        row.error_kind = ErrorKind.CRASHED.value
        row.error_message = f"runner {row.runner} stopped during this attempt"
    return len(rows)


def queue_position(store: Store, deployment_id: int) -> int:
    """How many queued deployments of the same endpoint are ahead of this one."""
    with store.read() as session:
        deployment = session.get_one(Deployment, deployment_id)
        return int(session.execute(
            select(func.count()).where(
                Deployment.endpoint_id == deployment.endpoint_id,
                Deployment.status == DeploymentStatus.QUEUED.value,
                Deployment.id < deployment_id,
            )
        ).scalar_one())
