"""The state store: engine set-up, transactions fenced by the endpoint lease, events after commit."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, insert, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from . import migrate, secrets
from .errors import ConfigError, LeaseLost
from .tables import Endpoint, Event, utcnow

SQLITE_BUSY_TIMEOUT_S = 30
# A pooled PostgreSQL connection idle longer than this is pinged before use.
PING_AFTER_IDLE_S = 0.25

# The hot path's statements, built once: constructing a statement costs more CPU than
# executing a cached one.
_INSERT_EVENTS = insert(Event)
_FENCED = update(Endpoint).where(Endpoint.id == bindparam("endpoint"), Endpoint.fencing_token == bindparam("token"))
_EXTEND_LEASE = _FENCED.values(lease_expires_at=bindparam("expires"))
_END_LEASE = _FENCED.values(lease_owner=None, lease_host=None, lease_pid=None, lease_deployment_id=None,
                            lease_acquired_at=None, lease_expires_at=None)


def orchestrate_home() -> Path:
    return Path(os.environ.get("ORCHESTRATE_HOME") or Path.home() / ".orchestrate")


def resolve_db_url(db_url: str | None = None) -> str:
    """`--db-url`, else ORCHESTRATE_DB_URL, else SQLite under ORCHESTRATE_HOME."""
    url = db_url or os.environ.get("ORCHESTRATE_DB_URL")
    if url:
        return url
    home = orchestrate_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'state.db'}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see begin below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Take the write lock up front: a deferred transaction that later writes can fail
        # with "database is locked" without waiting for the busy timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _ping_idle_connections(engine: Engine) -> None:
    """Pre-ping, but only a connection that sat in the pool for a while.

    A runner's transactions follow each other within milliseconds; pinging before each one
    was a round trip per transaction for a connection just seen working. One that waited out
    a stage (seconds) or an idle poll is pinged, and a dead one replaced unseen (the pool
    retries the checkout on DisconnectionError). A server that goes away between two quick
    transactions fails the next statement instead; SQLAlchemy then invalidates the whole pool
    and the worker waits for the database and takes its lease back (docs/workers.md)."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_S:
            return  # just connected, or just returned after working
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


def make_engine(db_url: str, *, pool_size: int = 5) -> Engine:
    try:
        url: URL = make_url(db_url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with no hint
        raise ConfigError(
            f"cannot parse database URL {db_url!r}",
            hint="use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB",
        ) from exc
    if url.get_backend_name() == "sqlite":
        if url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _configure_sqlite(engine)
        return engine
    if url.get_backend_name() == "postgresql":
        # LIFO: the connection that just worked is the next one out, and is not pinged.
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_use_lifo=True)
        _ping_idle_connections(engine)
        return engine
    raise ConfigError(
        f"unsupported database {url.get_backend_name()!r} in the state store URL",
        hint="use SQLite (the default) or PostgreSQL (postgresql+psycopg://...)",
    )


@dataclass(frozen=True)
class Fence:
    """A lease held on one endpoint: writes go through only while the token is current."""

    endpoint_id: int
    token: int
    ttl_s: float


@dataclass(frozen=True)
class EventRecord:
    """An event as written, for listeners after the commit."""

    time: dt.datetime
    actor: str
    kind: str
    message: str
    endpoint_id: int | None
    deployment_id: int | None
    data: dict[str, Any]


@dataclass
class Tx:
    """One write transaction; its events are inserted in one statement before the commit and
    announced to listeners after it."""

    session: Session
    actor: str
    events: list[EventRecord] = field(default_factory=list)
    _connection: Connection | None = field(default=None, repr=False)

    def event(
        self,
        kind: str,
        message: str,
        *,
        endpoint_id: int | None = None,
        deployment_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.events.append(EventRecord(
            time=utcnow(),
            actor=self.actor,
            kind=kind,
            message=secrets.scrub(message),
            endpoint_id=endpoint_id,
            deployment_id=deployment_id,
            data=data or {},
        ))

    @property
    def connection(self) -> Connection:
        """The transaction's connection, for Core statements: the ORM's bookkeeping costs more
        CPU than the round trip on the runner's hot path."""
        # Not functools.cached_property: on Python 3.11 it holds one lock for every instance
        # while computing, so a thread waiting here for SQLite's write lock would block
        # another thread's transaction that holds it.
        if self._connection is None:
            self._connection = self.session.connection()
        return self._connection

    def insert_events(self) -> None:
        if self.events:
            self.connection.execute(_INSERT_EVENTS, [
                {"time": r.time, "actor": r.actor, "kind": r.kind, "message": r.message,
                 "endpoint_id": r.endpoint_id, "deployment_id": r.deployment_id, "data": r.data}
                for r in self.events
            ])


EventListener = Callable[[EventRecord], None]


class Store:
    """The database behind orchestrate; every state change is one `write()` transaction."""

    def __init__(self, db_url: str | None = None, *, actor: str, migrate_schema: bool = True,
                 pool_size: int = 5) -> None:
        self.url = resolve_db_url(db_url)
        self.engine = make_engine(self.url, pool_size=pool_size)
        self.actor = actor
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.listeners: list[EventListener] = []
        if migrate_schema:
            try:
                migrate.ensure_current(self.engine)
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(
                    f"cannot open the state store at {self.display_url}: {exc.__class__.__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}",
                    hint="check --db-url / ORCHESTRATE_DB_URL and that the database is reachable",
                ) from exc

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def write(self, fence: Fence | None = None, *, actor: str | None = None,
              end_lease: bool = False) -> Iterator[Tx]:
        """A transaction; with a fence, it commits only while that lease is still ours, and
        with `end_lease` the lease is freed by that same commit."""
        with self._sessions() as session:
            tx = Tx(session, actor or self.actor)
            with session.begin():
                if fence is not None:
                    self._check_fence(tx.connection, fence, end_lease)
                yield tx
                tx.insert_events()
            for row in tx.events:
                for listener in self.listeners:
                    listener(row)

    @staticmethod
    def _check_fence(connection: Connection, fence: Fence, end_lease: bool) -> None:
        # Extends (or frees) the lease and checks the token in one statement; the row lock it
        # takes keeps a takeover from slipping in before this transaction commits.
        from .leases import expiry

        if end_lease:
            result = connection.execute(_END_LEASE, {"endpoint": fence.endpoint_id, "token": fence.token})
        else:
            result = connection.execute(_EXTEND_LEASE, {"endpoint": fence.endpoint_id, "token": fence.token,
                                                        "expires": expiry(fence.ttl_s)})
        if result.rowcount != 1:
            raise LeaseLost(
                f"lost the lease on endpoint {fence.endpoint_id} (token {fence.token} is stale)",
                hint="another runner took over this deployment; see `orchestrate status`",
            )

    def dispose(self) -> None:
        self.engine.dispose()
