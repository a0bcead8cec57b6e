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

from orchestrator.api import Client
from orchestrator.store import make_engine, migrate
from orchestrator.store.tables import Base, Deployment, Event

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
        [str(venv / "bin" / "python"), "-c", "import orchestrator.store.migrate as m; print(m.script_location())"],
        cwd=workdir, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)) and where.endswith("_alembic")
    current = subprocess.run([str(venv / "bin" / "orchestrate"), "db", "current"], cwd=workdir, env=env,
                             capture_output=True, text=True, check=True)
    assert current.stdout.strip() == migrate.SCHEMA_HEAD


def test_store_schema_plans_a_downgrade_before_carrying_it_out(db_url: str, example_model: Path) -> None:
    """`orchestrate db` through the Python API: the plan names what a downgrade to base drops,
    with the rows, and nothing changes until it is carried out."""
    from orchestrator.api import StoreSchema

    client = Client(db_url=db_url)
    client.deploy(str(example_model), name="rows", target="noop")
    client.close()
    schema = StoreSchema(db_url)
    try:
        assert schema.current() == migrate.SCHEMA_HEAD
        plan = schema.downgrade_plan("base")
        assert [step.id for step in plan.steps] == [r.id for r in reversed(migrate.revisions(schema.store.engine))]
        assert plan.dropped_rows is not None and plan.dropped_rows["deployments"] == 1
        assert plan.dropped_rows["events"] > 5 and "alembic_version" not in plan.dropped_rows
        assert plan.backup == db_url.startswith("sqlite")
        assert plan.to_dict()["steps"][0]["id"] == migrate.SCHEMA_HEAD
        assert schema.current() == migrate.SCHEMA_HEAD  # planning changed nothing
        backup = schema.downgrade(plan)
        assert schema.current() is None
        assert (backup is not None and backup.is_file()) == plan.backup
        assert schema.downgrade_plan("base").steps == ()
        assert schema.upgrade() == migrate.SCHEMA_HEAD
    finally:
        schema.close()
