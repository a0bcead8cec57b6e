"""Schema migrations: the Alembic config built in code, pointing at scripts shipped in the package."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text

# The newest revision under alembic/versions; a test keeps it equal to Alembic's head.
SCHEMA_HEAD = "0002"

_PACKAGE_DIR = Path(__file__).resolve().parent


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
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade under a lock, so two first uses at once migrate only once."""
    from alembic import command

    config = alembic_config(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(7428190)"))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command

    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def ensure_current(engine: Engine) -> None:
    """Upgrade to head on first use; a cheap version read otherwise."""
    if current_revision(engine) != SCHEMA_HEAD:
        upgrade(engine)
