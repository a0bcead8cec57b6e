"""Endpoint leases: one runner per endpoint, fenced by a token that grows on every takeover."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Protocol, final

from sqlalchemy import bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ..errors import EndpointBusy
from ..processes import pid_alive
from . import END_LEASE, FENCED, Fence, Store, expiry
from .tables import Endpoint, utcnow

DEFAULT_TTL_S = 30.0

_TAKEN = (
    "lease_owner",
    "lease_host",
    "lease_pid",
    "lease_deployment_id",
    "lease_acquired_at",
    "lease_expires_at",
    "fencing_token",
)
_TAKE = FENCED.values({column: bindparam(f"new_{column}") for column in _TAKEN})
# A beat after the lease was freed (the runner's last write frees it) must not set an expiry
# on it again.
_BEAT = FENCED.where(Endpoint.lease_owner.is_not(None)).values(lease_expires_at=bindparam("expires"))


@dataclass(frozen=True)
class LeaseOwner:
    """Who holds a lease: a readable owner plus the host and pid used to spot a dead holder."""

    owner: str
    host: str
    pid: int

    @classmethod
    def current(cls, label: str | None = None) -> LeaseOwner:
        host = socket.gethostname()
        pid = os.getpid()
        name = label or f"{getpass.getuser()}@{host}"
        return cls(owner=f"{name}/pid:{pid}/{uuid.uuid4().hex[:6]}", host=host, pid=pid)


class LeaseHolder(Protocol):
    """What `holder_is_gone` reads: an endpoint row, or just its lease columns."""

    @property
    def lease_owner(self) -> str | None: ...
    @property
    def lease_host(self) -> str | None: ...
    @property
    def lease_pid(self) -> int | None: ...
    @property
    def lease_expires_at(self) -> dt.datetime | None: ...


def holder_is_gone(endpoint: LeaseHolder) -> bool:
    """True when the lease is free, expired, or held by a dead process on this host."""
    if endpoint.lease_owner is None:
        return True
    if endpoint.lease_expires_at is not None and endpoint.lease_expires_at < utcnow():
        return True
    return (
        endpoint.lease_host == socket.gethostname()
        and endpoint.lease_pid is not None
        and not pid_alive(endpoint.lease_pid)
    )


def busy_error(endpoint: Endpoint) -> EndpointBusy:
    since = endpoint.lease_acquired_at.strftime("%Y-%m-%d %H:%M:%S UTC") if endpoint.lease_acquired_at else "?"
    return EndpointBusy(
        f"endpoint {endpoint.name!r} is busy with deployment {endpoint.lease_deployment_id} "
        f"(owner {endpoint.lease_owner}, since {since})",
        hint=f"wait for it, pass --queue, or cancel it: `orchestrate cancel {endpoint.lease_deployment_id}`",
    )


def take(session: Session, endpoint: Endpoint, deployment_id: int, runner: LeaseOwner, ttl_s: float) -> Fence:
    """Take the endpoint's lease inside the caller's transaction, or raise EndpointBusy."""
    if not holder_is_gone(endpoint) and endpoint.lease_owner != runner.owner:
        raise busy_error(endpoint)
    token = endpoint.fencing_token
    now = utcnow()
    values = {
        "lease_owner": runner.owner,
        "lease_host": runner.host,
        "lease_pid": runner.pid,
        "lease_deployment_id": deployment_id,
        "lease_acquired_at": now,
        "lease_expires_at": now + dt.timedelta(seconds=ttl_s),
        "fencing_token": token + 1,
    }
    result = session.connection().execute(
        _TAKE, {"endpoint": endpoint.id, "token": token, **{f"new_{key}": value for key, value in values.items()}}
    )
    if result.rowcount != 1:
        session.refresh(endpoint)
        raise busy_error(endpoint)
    # The row now holds exactly these values: keep the loaded object in step without re-reading it.
    for key, value in values.items():
        set_committed_value(endpoint, key, value)
    return Fence(endpoint_id=endpoint.id, token=token + 1, ttl_s=ttl_s)


def lock_endpoint(session: Session, endpoint_id: int) -> Endpoint:
    """Load the endpoint row locked for this transaction (FOR UPDATE on PostgreSQL)."""
    return session.execute(select(Endpoint).where(Endpoint.id == endpoint_id).with_for_update()).scalar_one()


def release(store: Store, fence: Fence) -> None:
    with store.engine.begin() as connection:
        connection.execute(END_LEASE, {"endpoint": fence.endpoint_id, "token": fence.token})


@final
class Heartbeat:
    """Extends the lease every ttl/3 from a thread; notes when the token went stale."""

    def __init__(self, store: Store, fence: Fence) -> None:
        self._store = store
        self._fence = fence
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._fence.ttl_s / 3):
            try:
                with self._store.engine.begin() as connection:
                    result = connection.execute(
                        _BEAT,
                        {
                            "endpoint": self._fence.endpoint_id,
                            "token": self._fence.token,
                            "expires": expiry(self._fence.ttl_s),
                        },
                    )
                if result.rowcount != 1:
                    self.lost = True
                    return
            except SQLAlchemyError:  # a database blip: the next beat, or the fenced write, decides
                continue
