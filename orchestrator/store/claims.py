"""Claiming work from the database: queued deployments in order, and deployments whose runner left.

PostgreSQL: rows are locked with `FOR UPDATE SKIP LOCKED`, so many workers on many hosts claim
without waiting on each other. SQLite: every write transaction is `BEGIN IMMEDIATE`, which
serialises claims on one host."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Unpack

from sqlalchemy import Select, and_, bindparam, exists, func, or_, select
from sqlalchemy.orm import aliased

from ..errors import EndpointBusy
from ..states import AttemptStatus, DeploymentStatus, ErrorKind, EventKind
from . import Fence, Store, Tx, leases
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


@functools.cache
def _queued_candidates(by_target: bool, by_id: bool) -> Select[Any]:
    """The claim's query, built once per shape (building it costs more than running it): the
    head-of-queue deployments with their endpoints, both locked; rows another claim holds are
    skipped, never waited for."""
    query = _head_of_queue().add_columns(Endpoint).join(Endpoint, Endpoint.id == Deployment.endpoint_id)
    if by_target:
        query = query.where(Deployment.target.in_(bindparam("targets", expanding=True)))
    if by_id:
        query = query.where(Deployment.id == bindparam("deployment"))
    return query.order_by(Deployment.id).limit(_CANDIDATES).with_for_update(skip_locked=True, of=[Deployment, Endpoint])


@functools.cache
def _orphan_candidates(by_target: bool) -> Select[Unpack[tuple[Any, ...]]]:
    """Running deployments whose lease is free, expired, or held by another runner on this host
    (which `holder_is_gone` then checks), read without locks."""
    query = (
        select(
            Deployment.id,
            Endpoint.id.label("endpoint_id"),
            Endpoint.lease_owner,
            Endpoint.lease_host,
            Endpoint.lease_pid,
            Endpoint.lease_expires_at,
        )
        .join(Endpoint, Endpoint.id == Deployment.endpoint_id)
        .where(
            Deployment.status == DeploymentStatus.RUNNING.value,
            or_(
                Endpoint.lease_owner.is_(None),
                Endpoint.lease_expires_at < bindparam("now"),
                and_(Endpoint.lease_host == bindparam("host"), Endpoint.lease_owner != bindparam("owner")),
            ),
        )
        .order_by(Deployment.id)
        .limit(_CANDIDATES)
    )
    if by_target:
        query = query.where(Deployment.target.in_(bindparam("targets", expanding=True)))
    return query


_LOCK_ENDPOINT = select(Endpoint).where(Endpoint.id == bindparam("endpoint")).with_for_update(skip_locked=True)
_STILL_RUNNING = select(Deployment.id).where(
    Deployment.id == bindparam("deployment"), Deployment.status == DeploymentStatus.RUNNING.value
)


def claim(
    store: Store, runner: leases.LeaseOwner, ttl_s: float, *, targets: frozenset[str] | None = None
) -> Claim | None:
    """A worker's look for work, in one transaction: an orphaned deployment first, else the
    oldest runnable queued one."""
    with store.write() as tx:
        return _take_orphaned(tx, runner, ttl_s, targets) or _take_queued(tx, runner, ttl_s, targets, None)


def claim_queued(
    store: Store,
    runner: leases.LeaseOwner,
    ttl_s: float,
    *,
    targets: frozenset[str] | None = None,
    deployment_id: int | None = None,
) -> Claim | None:
    """Take the oldest runnable queued deployment (or only `deployment_id`) and its lease."""
    with store.write() as tx:
        return _take_queued(tx, runner, ttl_s, targets, deployment_id)


def claim_orphaned(
    store: Store, runner: leases.LeaseOwner, ttl_s: float, *, targets: frozenset[str] | None = None
) -> Claim | None:
    """Take over a running deployment whose runner stopped, died, or let its lease expire."""
    with store.write() as tx:
        return _take_orphaned(tx, runner, ttl_s, targets)


def _take_queued(
    tx: Tx, runner: leases.LeaseOwner, ttl_s: float, targets: frozenset[str] | None, deployment_id: int | None
) -> Claim | None:
    query = _queued_candidates(bool(targets), deployment_id is not None)
    params = {"targets": sorted(targets or ()), "deployment": deployment_id}
    for deployment, endpoint in tx.session.execute(query, params).all():
        if not leases.holder_is_gone(endpoint):
            continue
        try:
            fence = leases.take(tx.session, endpoint, deployment.id, runner, ttl_s)
        except EndpointBusy:
            continue
        deployment.status = DeploymentStatus.RUNNING.value
        deployment.started_at = utcnow()
        tx.event(
            EventKind.DEPLOYMENT_CLAIMED,
            f"deployment {deployment.id} claimed by {runner.owner}",
            endpoint_id=endpoint.id,
            deployment_id=deployment.id,
        )
        return Claim(deployment.id, fence, taken_over=False)
    return None


def _take_orphaned(tx: Tx, runner: leases.LeaseOwner, ttl_s: float, targets: frozenset[str] | None) -> Claim | None:
    # Candidates are read without locks: on a busy host most are endpoints that other live
    # workers hold, and locking those would stall their fenced writes until this commits.
    # Only one whose holder is gone is locked, then checked again.
    params = {"now": utcnow(), "host": runner.host, "owner": runner.owner, "targets": sorted(targets or ())}
    for candidate in tx.session.execute(_orphan_candidates(bool(targets)), params).all():
        if not leases.holder_is_gone(candidate):
            continue
        endpoint = tx.session.execute(_LOCK_ENDPOINT, {"endpoint": candidate.endpoint_id}).scalar_one_or_none()
        if endpoint is None or not leases.holder_is_gone(endpoint):
            continue
        # The unlocked read may predate the deployment's end (its runner, or a `cancel` that
        # took the lease, recorded it and released the lease since). Every such end is written
        # under the endpoint's lock, which is ours now: a statement run after taking it sees it.
        if tx.session.execute(_STILL_RUNNING, {"deployment": candidate.id}).first() is None:
            continue
        fence = leases.take(tx.session, endpoint, candidate.id, runner, ttl_s)
        abandoned = abandon_running_attempts(tx.session, candidate.id)
        tx.event(
            EventKind.DEPLOYMENT_TAKEN_OVER,
            f"deployment {candidate.id} taken over by {runner.owner} ({abandoned} attempt(s) abandoned)",
            endpoint_id=endpoint.id,
            deployment_id=candidate.id,
        )
        return Claim(candidate.id, fence, taken_over=True)
    return None


def abandon_running_attempts(session: object, deployment_id: int) -> int:
    """Mark attempts a dead runner left `running` as abandoned; returns how many."""
    rows = (
        session.execute(  # type: ignore[attr-defined]
            select(StageAttempt).where(
                StageAttempt.deployment_id == deployment_id, StageAttempt.status == AttemptStatus.RUNNING.value
            )
        )
        .scalars()
        .all()
    )
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
        return int(
            session.execute(
                select(func.count()).where(
                    Deployment.endpoint_id == deployment.endpoint_id,
                    Deployment.status == DeploymentStatus.QUEUED.value,
                    Deployment.id < deployment_id,
                )
            ).scalar_one()
        )
