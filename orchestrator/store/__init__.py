"""The state store: engine set-up, transactions fenced by the endpoint lease, events after commit."""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, insert, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from .. import secret_values
from ..errors import ConfigError, LeaseLost, NotFound
from ..states import EventKind
from . import migrate
from .tables import Endpoint, Event, utcnow

SQLITE_BUSY_TIMEOUT_S = 30
# A pooled PostgreSQL connection idle longer than this is pinged before use.
PING_AFTER_IDLE_S = 0.25

# The hot path's statements, built once: constructing a statement costs more CPU than
# executing a cached one.
_INSERT_EVENTS = insert(Event)
# The fenced lease statements, here and in leases.py: an update of the endpoint row that
# matches only while the caller's fencing token is current.
FENCED = update(Endpoint).where(Endpoint.id == bindparam("endpoint"), Endpoint.fencing_token == bindparam("token"))
_EXTEND_LEASE = FENCED.values(lease_expires_at=bindparam("expires"))
END_LEASE = FENCED.values(
    lease_owner=None,
    lease_host=None,
    lease_pid=None,
    lease_deployment_id=None,
    lease_acquired_at=None,
    lease_expires_at=None,
)


def orchestrate_home() -> Path:
    return Path(os.environ.get("ORCHESTRATE_HOME") or Path.home() / ".orchestrate")


def explicit_db_url(db_url: str | None = None) -> str | None:
    """`--db-url`, else ORCHESTRATE_DB_URL; None means the default store under ORCHESTRATE_HOME."""
    return db_url or os.environ.get("ORCHESTRATE_DB_URL") or None


def resolve_db_url(db_url: str | None = None) -> str:
    """`--db-url`, else ORCHESTRATE_DB_URL, else SQLite under ORCHESTRATE_HOME."""
    url = explicit_db_url(db_url)
    if url:
        return url
    home = orchestrate_home()
    private_directory(home, "ORCHESTRATE_HOME")
    return f"sqlite:///{home / 'state.db'}"


def private_directory(path: Path, what: str = "directory") -> Path:
    """Create `path` and its missing parents readable by their owner only (0700); directories
    that exist are left as they are. A regular file in the way is a ConfigError naming it."""
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=0o700)
            except FileExistsError:
                pass  # made by a concurrent command
        if not path.is_dir():
            raise NotADirectoryError(path)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"{what} {path} is not a directory (a file is in the way)",
            hint="point it at a directory, or move the file away",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot create {what} {path}: {exc.strerror}", hint="choose a directory you can write to"
        ) from None
    return path


def private_opener(path: str | os.PathLike[str], flags: int) -> int:
    """`open(..., opener=private_opener)`: a new file is created readable by its owner only."""
    return os.open(path, flags, 0o600)


def _disk_is_full(database: Path) -> bool:
    # SQLite reports a full tmpfs as a "disk I/O error" when it cannot map the -shm file.
    try:
        return shutil.disk_usage(database.parent).free < 64 * 1024
    except OSError:
        return False


def _mask_url(db_url: str) -> str:
    """A database URL fit for a message: the password masked even when the URL does not parse."""
    try:
        return make_url(db_url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # unparsable: mask what looks like userinfo
        return secret_values.mask_credentials(db_url)


def is_in_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def describe_failure(exc: BaseException, database: str | None = None) -> tuple[str, str]:
    """(reason, hint) for a database error, without its SQL or parameters; `database`, a SQLite
    file, lets an I/O error on a full disk be named as such."""
    reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    lowered = reason.lower()
    if (
        "disk is full" in lowered
        or "no space left" in lowered
        or "disk full" in lowered
        or ("i/o error" in lowered and database is not None and _disk_is_full(Path(database)))
    ):
        return (
            f"the disk holding the state store is full ({reason})",
            "free some space there; what was recorded is kept",
        )
    if "readonly" in lowered or "read-only" in lowered or "permission denied" in lowered:
        return (
            f"the state store cannot be written ({reason})",
            "check the permissions (and immutable flag) of the database file and its directory",
        )
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return (
            f"the state store is corrupted ({reason})",
            (
                "restore it from a backup (`orchestrate db downgrade` leaves state.db.backup-* files); "
                "nothing more was written to it"
            ),
        )
    return reason, "check --db-url / ORCHESTRATE_DB_URL and that the database is reachable"


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
    """An engine for a SQLite or PostgreSQL URL; a new SQLite file is created readable by its
    owner only. Raises ConfigError for a URL that does not parse, an unsupported database, a
    missing driver or a path that cannot hold the file."""
    try:
        url: URL = make_url(db_url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with no hint
        raise ConfigError(
            f"cannot parse database URL {_mask_url(db_url)!r}",
            hint="use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB",
        ) from exc
    if url.get_backend_name() == "sqlite":
        if not is_in_memory(url):
            _create_sqlite_file(Path(str(url.database)))
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _configure_sqlite(engine)
        return engine
    if url.get_backend_name() == "postgresql":
        try:
            # LIFO: the connection that just worked is the next one out, and is not pinged.
            engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_use_lifo=True)
        except ImportError as exc:
            driver = url.get_driver_name()
            raise ConfigError(
                f"the state store URL {url.render_as_string(hide_password=True)} needs the PostgreSQL driver "
                f"{driver!r}, which is not installed",
                hint="pip install 'orchestrate[postgres]' and write the URL as postgresql+psycopg://..."
                if driver == "psycopg"
                else "write the URL as postgresql+psycopg://... and pip install 'orchestrate[postgres]'",
            ) from exc
        _ping_idle_connections(engine)
        return engine
    raise ConfigError(
        f"unsupported database {url.get_backend_name()!r} in the state store URL",
        hint="use SQLite (the default) or PostgreSQL (postgresql+psycopg://...)",
    )


def _create_sqlite_file(path: Path) -> None:
    # SQLite gives its -wal and -shm files the database file's mode, so creating it 0600
    # keeps all three private.
    private_directory(path.parent, "the directory of the state store")
    if path.is_dir():
        raise ConfigError(f"the state store path {path} is a directory", hint="give the path of a file in it")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and path.is_file():
            return  # an existing store that cannot be written: reads still work, writes are refused
        raise ConfigError(
            f"cannot create the state store {path}: {exc.strerror}", hint="choose a path you can write to"
        ) from None


def _parsed(db_url: str) -> URL:
    try:
        return make_url(db_url)
    except (ArgumentError, ValueError):
        make_engine(db_url)  # raises the ConfigError that explains the URL
        raise


def _no_store(db_url: str) -> ConfigError:
    return NotFound(
        f"there is no state store at {_mask_url(db_url)} (nothing was ever deployed with it)",
        hint="check --db-url / ORCHESTRATE_DB_URL for a typo; `orchestrate deploy` or `orchestrate db upgrade` "
        "creates a store",
    )


def _check_integrity(engine: Engine) -> None:
    """A cheap structural check of a SQLite file (`PRAGMA quick_check`), so a corrupted store is
    refused before anything writes into it."""
    with engine.connect() as connection:
        problems = [row[0] for row in connection.exec_driver_sql("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        lines = [
            line.strip()
            for problem in problems
            for line in str(problem).splitlines()
            if line.strip() and not line.startswith("***")
        ]
        raise ConfigError(
            f"the state store {engine.url.database} is corrupted: {'; '.join(lines[:3])}",
            hint="restore it from a backup (state.db.backup-* beside it, if `db downgrade` made one); "
            "nothing was written to it",
        )


def expiry(ttl_s: float) -> dt.datetime:
    """When a lease taken or extended now runs out."""
    return utcnow() + dt.timedelta(seconds=ttl_s)


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
        kind: EventKind,
        message: str,
        *,
        endpoint_id: int | None = None,
        deployment_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.events.append(
            EventRecord(
                time=utcnow(),
                actor=self.actor,
                kind=kind.value,
                message=secret_values.scrub(message),
                endpoint_id=endpoint_id,
                deployment_id=deployment_id,
                data=secret_values.scrub_data(data) if data else {},
            )
        )

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
            self.connection.execute(
                _INSERT_EVENTS,
                [
                    {
                        "time": r.time,
                        "actor": r.actor,
                        "kind": r.kind,
                        "message": r.message,
                        "endpoint_id": r.endpoint_id,
                        "deployment_id": r.deployment_id,
                        "data": r.data,
                    }
                    for r in self.events
                ],
            )


EventListener = Callable[[EventRecord], None]


class Store:
    """The database behind orchestrate; every state change is one `write()` transaction."""

    def __init__(
        self,
        db_url: str | None = None,
        *,
        actor: str,
        migrate_schema: bool = True,
        pool_size: int = 5,
        create: bool = True,
        check_integrity: bool = True,
    ) -> None:
        """Open (and on first use create and migrate) the store. With `create=False`, a store
        named by --db-url / ORCHESTRATE_DB_URL that does not exist yet is a NotFound, not a new
        empty store. `check_integrity=False` (commands that only read) skips the scan of a
        SQLite file for corruption: it reads the whole file (0.9 s at 100,000 deployments), and
        a damaged page a read meets is reported as corruption anyway. Raises ConfigError when
        the store cannot be used as it is."""
        self.url = resolve_db_url(db_url)
        url = _parsed(self.url)
        if is_in_memory(url):
            raise ConfigError(
                f"{self.url!r} is an in-memory database, gone when the command ends",
                hint="give a file: --db-url sqlite:///PATH/state.db (or PostgreSQL)",
            )
        sqlite_path = Path(str(url.database)) if url.get_backend_name() == "sqlite" else None
        must_exist = not create and explicit_db_url(db_url) is not None
        if must_exist and sqlite_path is not None and not sqlite_path.is_file():
            raise _no_store(self.url)
        self.engine = make_engine(self.url, pool_size=pool_size)
        self.actor = actor
        # An existing SQLite file that cannot be written (permissions, immutable flag, read-only
        # mount) is refused before a write begins, not halfway with a driver error.
        self.read_only = sqlite_path is not None and not os.access(sqlite_path, os.W_OK)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.listeners: list[EventListener] = []
        try:
            if sqlite_path is not None and check_integrity:
                _check_integrity(self.engine)
            if must_exist and migrate.current_revision(self.engine) is None:
                raise _no_store(self.url)
            if migrate_schema and not self.read_only:
                migrate.ensure_current(self.engine)
        except ConfigError:
            self.engine.dispose()
            raise
        except Exception as exc:
            self.engine.dispose()
            reason, hint = describe_failure(exc, str(sqlite_path) if sqlite_path else None)
            raise ConfigError(f"cannot open the state store at {self.display_url}: {reason}", hint=hint) from exc

    @property
    def sqlite_path(self) -> str | None:
        """The database file of a SQLite store; None for PostgreSQL."""
        return self.engine.url.database if self.engine.url.get_backend_name() == "sqlite" else None

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def write(self, fence: Fence | None = None, *, actor: str | None = None, end_lease: bool = False) -> Iterator[Tx]:
        """A transaction; with a fence, it commits only while that lease is still ours, and
        with `end_lease` the lease is freed by that same commit."""
        if self.read_only:
            raise ConfigError(
                f"the state store {self.display_url} cannot be written (read-only file, "
                "directory or immutable flag); nothing was changed",
                hint="check the permissions and `lsattr` of the database file, or use another --db-url",
            )
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
        if end_lease:
            result = connection.execute(END_LEASE, {"endpoint": fence.endpoint_id, "token": fence.token})
        else:
            result = connection.execute(
                _EXTEND_LEASE, {"endpoint": fence.endpoint_id, "token": fence.token, "expires": expiry(fence.ttl_s)}
            )
        if result.rowcount != 1:
            raise LeaseLost(
                f"lost the lease on endpoint {fence.endpoint_id} (token {fence.token} is stale)",
                hint="another runner took over this deployment; see `orchestrate status`",
            )

    def dispose(self) -> None:
        self.engine.dispose()
