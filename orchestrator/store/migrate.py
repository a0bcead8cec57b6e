"""Schema migrations: the Alembic config built in code, pointing at scripts shipped in the package."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

from ..errors import ConfigError

# The newest revision under alembic/versions; a test keeps it equal to Alembic's head.
SCHEMA_HEAD = "0003"

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # orchestrator/


def script_location() -> Path:
    """The migration scripts: inside the installed wheel, or at the top of a source checkout."""
    for candidate in (_PACKAGE_DIR / "_alembic", _PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError(f"orchestrate's migration scripts are missing beside {_PACKAGE_DIR}")


def alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    # ConfigParser interpolates %, so a password with % must be escaped.
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return _version_in(connection)


@dataclass(frozen=True)
class Revision:
    """One migration: its id and the first line of its docstring."""

    id: str
    doc: str


def revisions(engine: Engine) -> list[Revision]:
    """Every migration this orchestrate ships, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config(engine))
    return [
        Revision(script.revision, (script.doc or "").strip().splitlines()[0] if script.doc else "")
        for script in reversed(list(scripts.walk_revisions()))
    ]


def _known(engine: Engine, revision: str, *, command: str) -> list[Revision]:
    """All revisions, after checking `revision` is one of them (or head/base)."""
    known = revisions(engine)
    if revision not in ("head", "base") and revision not in {r.id for r in known}:
        raise ConfigError(
            f"unknown schema revision {revision!r} for `orchestrate db {command}`",
            hint="known revisions: base, " + ", ".join(r.id for r in known) + " (head)",
        )
    return known


def _check_not_newer(engine: Engine, current: str | None, known: list[Revision]) -> None:
    if current is not None and current not in {r.id for r in known}:
        raise ConfigError(
            f"the state store at {engine.url.render_as_string(hide_password=True)} was written by a newer "
            f"orchestrate (schema revision {current}; this one knows up to {SCHEMA_HEAD})",
            hint="upgrade orchestrate (pip install -U orchestrate) to use this store; nothing was changed",
        )


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade under a lock, so two first uses at once migrate only once.

    Raises ConfigError for an unknown revision or a store written by a newer orchestrate."""
    from alembic import command

    known = _known(engine, revision, command="upgrade")
    config = alembic_config(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(7428190)"))
        _check_not_newer(engine, _version_in(connection), known)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade_steps(engine: Engine, revision: str) -> list[Revision]:
    """The migrations a downgrade to `revision` reverts, newest first (empty: nothing to do).

    Raises ConfigError for an unknown revision, or one above the store's current revision."""
    known = _known(engine, revision, command="downgrade")
    current = current_revision(engine)
    _check_not_newer(engine, current, known)
    ids = [r.id for r in known]
    if current is None:
        return []
    target_index = -1 if revision == "base" else ids.index(revision if revision != "head" else SCHEMA_HEAD)
    current_index = ids.index(current)
    if target_index > current_index:
        raise ConfigError(
            f"revision {revision} is above the store's current revision {current}",
            hint="use `orchestrate db upgrade` to move forward",
        )
    return list(reversed(known[target_index + 1 : current_index + 1]))


def downgrade(engine: Engine, revision: str) -> None:
    """Revert migrations down to `revision` (an explicit one: `base` drops every table)."""
    from alembic import command

    downgrade_steps(engine, revision)  # validates the revision
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def table_row_counts(engine: Engine) -> dict[str, int]:
    """Rows per table (the migration bookkeeping left out): what a downgrade to base drops."""
    with engine.connect() as connection:
        tables = [t for t in inspect(connection).get_table_names() if t != "alembic_version"]
        return {t: connection.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in sorted(tables)}


def backup_sqlite(engine: Engine) -> Path:
    """A consistent copy of a SQLite store beside it (WAL included), readable by its owner only;
    returns its path."""
    database = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or not database:
        raise ValueError("only a SQLite file store can be backed up by orchestrate")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    revision = current_revision(engine) or "empty"
    destination = Path(f"{database}.backup-{revision}-{stamp}")
    os.close(os.open(destination, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    source = sqlite3.connect(database)
    try:
        target = sqlite3.connect(destination)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    return destination


def _version_in(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    version: str | None = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return version


def ensure_current(engine: Engine) -> None:
    """Upgrade to head on first use; a cheap version read otherwise. A store written by a newer
    orchestrate is refused, untouched."""
    if current_revision(engine) != SCHEMA_HEAD:
        upgrade(engine)
