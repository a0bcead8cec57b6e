"""The state store: engine set-up, transactions fenced by the endpoint lease, events after commit."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from . import migrate, secrets
from .errors import ConfigError, LeaseLost
from .tables import Endpoint, Event, utcnow

SQLITE_BUSY_TIMEOUT_S = 30


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
        return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size)
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

    def insert_events(self) -> None:
        if self.events:
            self.session.execute(insert(Event), [dataclasses.asdict(record) for record in self.events])


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
    def write(self, fence: Fence | None = None, *, actor: str | None = None) -> Iterator[Tx]:
        """A transaction; with a fence, it commits only while that lease is still ours."""
        with self._sessions() as session:
            tx = Tx(session, actor or self.actor)
            with session.begin():
                if fence is not None:
                    self._check_fence(session, fence)
                yield tx
                tx.insert_events()
            for row in tx.events:
                for listener in self.listeners:
                    listener(row)

    @staticmethod
    def _check_fence(session: Session, fence: Fence) -> None:
        # Extends the lease and checks the token in one statement; the row lock it takes
        # keeps a takeover from slipping in before this transaction commits.
        from .leases import expiry

        result = session.execute(
            update(Endpoint)
            .where(Endpoint.id == fence.endpoint_id, Endpoint.fencing_token == fence.token)
            .values(lease_expires_at=expiry(fence.ttl_s))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(
                f"lost the lease on endpoint {fence.endpoint_id} (token {fence.token} is stale)",
                hint="another runner took over this deployment; see `orchestrate status`",
            )

    def dispose(self) -> None:
        self.engine.dispose()
