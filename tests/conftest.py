"""Shared test fixtures: a clean environment per test, databases, example models, leak check.

Fixtures every test gets (autouse):

- ``_clean_environment``: removes ``ORCHESTRATE_*`` variables (except
  ``ORCHESTRATE_TEST_PG_URL`` and ``ORCHESTRATE_ENVS_DIR``) and cloud credential variables
  (``AWS_*``, ``AZURE_*``), and points ``ORCHESTRATE_HOME`` at a fresh empty directory.
- ``_no_leaked_processes``: fails a test that leaves a process running that it started,
  directly or detached (see ``_find_leaks``), after killing it.
- ``ORCHESTRATE_ENVS_DIR`` is one directory for the whole session (and, by default, kept
  between sessions), so model virtualenvs are built once, not once per test.

Fixtures to ask for:

- ``pg_url``: the SQLAlchemy URL of the test PostgreSQL database (``scripts/test.sh`` sets
  ``ORCHESTRATE_TEST_PG_URL``). Skips locally when unconfigured; fails in CI (``CI=true``)
  when unconfigured or unreachable, so PostgreSQL tests never silently skip there.
- ``fresh_pg_url``: a new empty PostgreSQL database for one test, dropped afterwards.
- ``db_url``: parametrized ``sqlite`` / ``postgres``: a fresh state-store URL of each kind.
- ``example_model``, ``example_model_v2``, ``broken_model``: MLflow model directories made
  by ``examples/train_model.py`` once per session. ``noop_model``: an MLmodel and
  requirements only, for the noop target (nothing trained). Treat them as read-only; copy one
  (``shutil.copytree(example_model, tmp_path / "model")``) to modify it.

Tests that use ``pg_url`` (directly or through the other PostgreSQL fixtures) are marked
``postgres`` automatically, so ``-m "not postgres"`` deselects them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "examples" / "train_model.py"

# Kept through _clean_environment: they configure the test run, not orchestrate.
KEPT_ORCHESTRATE_VARIABLES = frozenset({"ORCHESTRATE_TEST_PG_URL", "ORCHESTRATE_ENVS_DIR",
                                        "ORCHESTRATE_TEST_MLFLOW_URI"})
CREDENTIAL_PREFIXES = ("AWS_", "AZURE_")

# Every process started while a test runs inherits this variable (its value names the
# test), which is how the leak check finds processes that detached from pytest.
LEAK_TAG_VARIABLE = "_ORCHESTRATE_TEST_LEAK_TAG"
# How long a process the test started may take to finish exiting after the test ends.
LEAK_GRACE_SECONDS = 5.0

FRESH_DB_PREFIX = "orchestrate_t_"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


# --- environment ---------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _shared_envs_dir() -> Iterator[Path]:
    """One virtualenv cache for the session, kept between runs so they stay fast.

    Tests that must see a virtualenv being built (crash in the middle of ``build``)
    monkeypatch ``ORCHESTRATE_ENVS_DIR`` to their own ``tmp_path``.
    """
    preset = os.environ.get("ORCHESTRATE_ENVS_DIR")
    path = Path(preset) if preset else Path(tempfile.gettempdir()) / "orchestrate-test-envs"
    path.mkdir(parents=True, exist_ok=True)
    os.environ["ORCHESTRATE_ENVS_DIR"] = str(path)
    yield path
    if preset is None:
        os.environ.pop("ORCHESTRATE_ENVS_DIR", None)
    else:
        os.environ["ORCHESTRATE_ENVS_DIR"] = preset


@pytest.fixture(autouse=True)
def _clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Remove configuration and credentials leaking in from the developer's shell."""
    for name in list(os.environ):
        if (name.startswith("ORCHESTRATE_") and name not in KEPT_ORCHESTRATE_VARIABLES
                or name.startswith(CREDENTIAL_PREFIXES)):
            monkeypatch.delenv(name)
    # No test may wait on the EC2 metadata service for credentials it will not find.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    home = tmp_path_factory.mktemp("orchestrate-home")
    monkeypatch.setenv("ORCHESTRATE_HOME", str(home))
    return home


@pytest.fixture
def orchestrate_home(_clean_environment: Path) -> Path:
    """This test's ``ORCHESTRATE_HOME`` (fresh and empty when the test starts)."""
    return _clean_environment


# --- PostgreSQL ----------------------------------------------------------------------------


def _libpq_url(sqlalchemy_url: str) -> str:
    """A URL psycopg accepts, from a ``postgresql+psycopg://`` SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _with_database(sqlalchemy_url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url).set(database=database).render_as_string(hide_password=False)


def _drop_orphaned_databases(conn: object) -> None:
    """Drop fresh databases left by test sessions that were killed before their teardown."""
    from psycopg import sql

    rows = conn.execute(  # type: ignore[attr-defined]
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (FRESH_DB_PREFIX + "%",)
    ).fetchall()
    for (name,) in rows:
        match = re.fullmatch(FRESH_DB_PREFIX + r"(\d+)_[0-9a-f]+", name)
        if match and not psutil.pid_exists(int(match.group(1))):
            conn.execute(  # type: ignore[attr-defined]
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def pg_url() -> str:
    """SQLAlchemy URL of the test PostgreSQL database, checked reachable."""
    url = os.environ.get("ORCHESTRATE_TEST_PG_URL")
    if not url:
        if in_ci():
            pytest.fail(
                "CI=true but ORCHESTRATE_TEST_PG_URL is not set: PostgreSQL tests must not "
                "be skipped in CI; run the suite through scripts/test.sh"
            )
        pytest.skip("PostgreSQL not configured; run scripts/test.sh")

    import psycopg

    try:
        with psycopg.connect(_libpq_url(url), autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
            _drop_orphaned_databases(conn)
    except psycopg.Error as exc:
        # Configured but broken is an error everywhere, not only in CI.
        pytest.fail(f"PostgreSQL at ORCHESTRATE_TEST_PG_URL is unreachable: {exc}")
    return url


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for this test; dropped (connections and all) after."""
    import psycopg
    from psycopg import sql

    # The pid in the name lets a later session drop it if this one is killed.
    name = f"{FRESH_DB_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_url(pg_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(pg_url, name)
    finally:
        with psycopg.connect(_libpq_url(pg_url), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgres"],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state-store URL: SQLite in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


# --- example models ------------------------------------------------------------------------


def _train(out: Path, *args: str) -> Path:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ORCHESTRATE_", *CREDENTIAL_PREFIXES))
    }
    result = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), str(out), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(
            f"examples/train_model.py {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return out


@pytest.fixture(scope="session")
def example_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The iris example model, version 1 (an MLflow model directory)."""
    return _train(tmp_path_factory.mktemp("models") / "iris-v1")


@pytest.fixture(scope="session")
def example_model_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 2: same signature and requirements, different weights and predictions."""
    return _train(tmp_path_factory.mktemp("models") / "iris-v2", "--version", "2")


@pytest.fixture(scope="session")
def broken_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Valid on disk, same requirements as the good model; its loader raises at serve time."""
    return _train(tmp_path_factory.mktemp("models") / "iris-broken", "--broken")


@pytest.fixture(scope="session")
def noop_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough of an MLflow model for `deploy` to accept; the noop target never serves it."""
    path = tmp_path_factory.mktemp("models") / "noop-model"
    path.mkdir()
    (path / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    python_version: 3.11.7\n"
    )
    (path / "requirements.txt").write_text("scikit-learn\n")
    return path


# --- leak check ----------------------------------------------------------------------------


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline()) or proc.name()}"
    except psutil.Error:
        return f"pid {proc.pid}: (exited)"


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _find_leaks(before: set[tuple[int, float]], tag: str, since: float) -> list[psutil.Process]:
    """Processes started during the test and still running.

    Two sources: descendants of pytest, and processes that detached from it (double fork,
    setsid: a server the local target leaves running) but inherited the test's leak tag.
    ``before`` holds (pid, create_time) pairs so a reused pid is not mistaken for an old one.
    """
    me = psutil.Process()
    found: dict[int, psutil.Process] = {}
    for proc in me.children(recursive=True):
        found[proc.pid] = proc
    for proc in psutil.process_iter(["create_time"]):
        if proc.pid in found or proc.pid == me.pid:
            continue
        if (proc.info["create_time"] or 0) < since - 1:
            continue
        try:
            if proc.environ().get(LEAK_TAG_VARIABLE) == tag:
                found[proc.pid] = proc
        except psutil.Error:
            continue
    leaks = []
    for proc in found.values():
        try:
            key = (proc.pid, proc.create_time())
        except psutil.Error:
            continue
        if key not in before and _running(proc):
            leaks.append(proc)
    return leaks


def _snapshot() -> set[tuple[int, float]]:
    keys = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            keys.add((proc.pid, proc.create_time()))
        except psutil.Error:
            continue
    return keys


def _kill_trees(procs: list[psutil.Process]) -> None:
    everything: dict[int, psutil.Process] = {}
    for proc in procs:
        everything[proc.pid] = proc
        try:
            for child in proc.children(recursive=True):
                everything[child.pid] = child
        except psutil.Error:
            pass
    for proc in everything.values():
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(list(everything.values()), timeout=5)


@pytest.fixture(autouse=True)
def _no_leaked_processes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail a test that leaves a process running; kill what it left."""
    tag = f"{os.getpid()}:{request.node.nodeid}:{uuid.uuid4().hex}"
    monkeypatch.setenv(LEAK_TAG_VARIABLE, tag)
    since = time.time()
    before = _snapshot()
    yield
    leaks = _find_leaks(before, tag, since)
    if not leaks:
        return
    # A process told to stop at the end of the test may still be on its way out.
    _, alive = psutil.wait_procs(leaks, timeout=LEAK_GRACE_SECONDS)
    alive = [proc for proc in alive if _running(proc)]
    if not alive:
        return
    described = "\n".join("  " + _describe(proc) for proc in alive)
    _kill_trees(alive)
    pytest.fail(f"test left {len(alive)} process(es) running (now killed):\n{described}")

