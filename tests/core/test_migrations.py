"""Migrations: up and down on both databases, no drift from the models, shipped in the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select

from orchestrator import migrate
from orchestrator.api import Client
from orchestrator.store import make_engine
from orchestrator.tables import Base, Deployment, Event

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_schema_head_is_the_single_alembic_head() -> None:
    engine = make_engine("sqlite://")
    heads = ScriptDirectory.from_config(migrate.alembic_config(engine)).get_heads()
    assert heads == [migrate.SCHEMA_HEAD]


def test_upgrade_downgrade_upgrade_with_rows(db_url: str, example_model: Path) -> None:
    engine = make_engine(db_url)
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.SCHEMA_HEAD
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())

    client = Client(db_url=db_url)
    client.deploy(str(example_model), name="rows", target="noop")
    client.close()
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Deployment)).scalar() == 1
        assert connection.execute(select(func.count()).select_from(Event)).scalar() > 5

    migrate.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set()
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.SCHEMA_HEAD
    engine.dispose()


def test_models_match_migrations(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    config = migrate.alembic_config(engine)
    command.check(config)  # raises when autogenerate would find a difference
    engine.dispose()


def test_first_use_upgrades_automatically(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'auto.db'}"
    Client(db_url=url).close()
    assert migrate.current_revision(make_engine(url)) == migrate.SCHEMA_HEAD


@pytest.mark.slow
def test_wheel_install_runs_db_upgrade_without_a_checkout(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    dist = tmp_path / "dist"
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(dist), str(REPO_ROOT)], check=True,
                   capture_output=True)
    wheel = next(dist.glob("orchestrate-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(wheel)],
                   check=True, capture_output=True)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["ORCHESTRATE_HOME"] = str(tmp_path / "home")
    result = subprocess.run([str(venv / "bin" / "orchestrate"), "db", "upgrade"], cwd=workdir, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert f"at revision {migrate.SCHEMA_HEAD}" in result.stdout
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import orchestrator.migrate as m; print(m.script_location())"],
        cwd=workdir, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)) and where.endswith("_alembic")
    current = subprocess.run([str(venv / "bin" / "orchestrate"), "db", "current"], cwd=workdir, env=env,
                             capture_output=True, text=True, check=True)
    assert current.stdout.strip() == migrate.SCHEMA_HEAD
