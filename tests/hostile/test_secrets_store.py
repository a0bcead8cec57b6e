"""Hostile and careless input to the state store and to secrets (issue 11), through the real CLI.

Every test fails on 1407a72 and passes after. Where nothing may change, the store's files are
hashed (SQLite: the database with its -wal) or its rows counted before and after.

| finding | what the test checks | test |
|---|---|---|
| D1, point 2 | `db downgrade` needs --revision; says what it drops; refuses without a terminal and --yes; backs the SQLite file up (0600) and prints where | `test_downgrade_needs_a_revision`, `test_downgrade_refuses_without_yes` (+ PostgreSQL: no backup, says pg_dump), `test_downgrade_with_yes_backs_up_first` |
| D1, point 2 | at a terminal, `db downgrade`, `gc` and `delete` ask; "n" changes nothing, "y" goes ahead | `test_destructive_commands_ask_at_a_terminal` |
| D1, point 2 | `gc` and `delete` say what they will destroy and refuse without --yes when stdin is not a terminal | `test_gc_and_delete_refuse_without_yes` |
| S3 | a credential under a key that does not look secret is refused, masked in the message, and never stored: docker `registry=user:PW@host`, `image=`, sagemaker `env=AWS_SECRET_ACCESS_KEY=...` (in -C and YAML), `pip_requirements_override=https://u:PW@...` | `test_credentials_under_any_key_are_refused` |
| S3 | a secret inside a mapping key is accepted as `env:`, stored as the reference | `test_mapping_secret_given_as_reference_is_stored_as_reference` |
| S3 | URL passwords and resolved secrets are masked in event messages and in event data | `test_event_messages_and_data_are_scrubbed` |
| S3, point 4 | `state.db`, -wal, -shm are 0600; ORCHESTRATE_HOME and log directories 0700, log files 0600 | `test_store_and_logs_are_private` |
| S5 | the local server's environment is an allow-list plus the deployment's `env`; the deployer's AWS_SECRET_ACCESS_KEY, ORCHESTRATE_DB_URL, VIRTUAL_ENV are not in /proc/PID/environ | `test_local_server_gets_a_minimal_environment` (slow) |
| S6 | a malformed database URL is printed with its password masked | `test_database_url_passwords_are_masked` |
| S7 | a secret shorter than 8 characters is refused; a longer one is masked as a whole value, never inside words | `test_short_secret_is_refused`, `test_scrubbing_masks_whole_values_only` |
| B (registry_password_env) | docker's documented `registry_password_env` is accepted as a variable's name; a password put there is refused with the right hint | `test_registry_password_env_names_a_variable` |
| B (newer schema) | a store written by a newer orchestrate says so, and is left as it was | `test_newer_schema_is_named` |
| B (full disk) | a full disk is reported as a full disk, not "check the DB is reachable" | `test_full_disk_is_named` |
| C5 | PostgreSQL URL without psycopg names the extra; SQLite path under a file and ORCHESTRATE_HOME a file are clear errors; an immutable DB is refused before writing, no SQL; a corrupted DB is refused by `deploy` and `rollback` and left untouched (reads show what they can read); `db upgrade --revision zzz` | `test_missing_psycopg_names_the_extra`, `test_store_path_under_a_file`, `test_immutable_store`, `test_corrupted_store_is_not_written`, `test_unknown_revision` |
| K (store) | a read command on a --db-url with no store says so and creates nothing (SQLite and PostgreSQL); `sqlite://` in memory is refused | `test_read_on_missing_store_creates_nothing`, `test_read_on_empty_postgres_database`, `test_in_memory_store_is_refused` |
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from _executables import orchestrate_executable
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text

from orchestrator.cli import cli

PASSWORD = "Hunter2-s3cr3t-PW"


# --- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def run(*args: str, home: Path, env: Mapping[str, str] | None = None) -> Outcome:
    """`orchestrate ARGS` in-process (click's CliRunner: stdin is not a terminal) with this home;
    a traceback fails the test."""
    result = CliRunner().invoke(cli, list(args), env={"ORCHESTRATE_HOME": str(home), **(env or {})},
                                catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def run_process(*args: str, home: Path, env: Mapping[str, str] | None = None,
                timeout: float = 240) -> Outcome:
    """`orchestrate ARGS` as a real subprocess, stdin not a terminal."""
    full_env = {**os.environ, "ORCHESTRATE_HOME": str(home), **(env or {})}
    result = subprocess.run([orchestrate_executable(), *args], env=full_env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout, check=False)
    return Outcome(result.returncode, result.stdout, result.stderr)


def describe(result: Outcome) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


def assert_error(result: Outcome, fragment: str, code: int = 2) -> None:
    assert result.returncode == code, describe(result)
    assert "Traceback" not in result.stdout + result.stderr, describe(result)
    assert fragment in result.stderr, describe(result)


def fingerprint(database: Path) -> dict[str, str]:
    """Hashes of a SQLite store's files (the database and a non-empty -wal): equal means untouched.
    (SQLite removes an empty WAL when the last connection closes; that changes nothing.)"""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(database.parent.glob(database.name + "*")) if not p.name.endswith("-shm")
            and ".backup-" not in p.name and p.stat().st_size}


def tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def row_counts(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        return {name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
                for name in tables(database)}


def checkpoint(database: Path) -> None:
    """Fold the WAL into the database file, so a copy of the file alone is the whole store."""
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """Enough of an MLflow model for `deploy` on the noop target."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    python_version: 3.11.7\n")
    (path / "requirements.txt").write_text("scikit-learn\n")
    return path


@pytest.fixture
def seeded(orchestrate_home: Path, model: Path) -> Path:
    """A store with endpoint `seed` (deployments 1, 2 and 3, the last live): its database path."""
    for number in range(3):
        result = run("deploy", str(model), "--name", "seed", "-t", "noop", "-C", f"sleep_s=0.00{number}",
                     home=orchestrate_home)
        assert result.returncode == 0, describe(result)
    database = orchestrate_home / "state.db"
    checkpoint(database)
    return database


def run_at_terminal(args: list[str], home: Path, answer: str, timeout: float = 60) -> tuple[int, str]:
    """`orchestrate ARGS` with a pseudo-terminal as stdin, answering the prompt with `answer`."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "ORCHESTRATE_HOME": str(home)}
    process = subprocess.Popen([orchestrate_executable(), *args], env=env, stdin=terminal,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(terminal)
    try:
        # Answer once the prompt has been printed (stderr is a pipe: read until "?").
        deadline = time.monotonic() + timeout
        seen = ""
        assert process.stderr is not None
        while "Go ahead?" not in seen and time.monotonic() < deadline and process.poll() is None:
            ready, _, _ = select.select([process.stderr], [], [], 0.5)
            if ready:
                chunk = os.read(process.stderr.fileno(), 4096).decode()
                seen += chunk
        os.write(controller, (answer + "\n").encode())
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    return process.returncode, seen + stderr + stdout


# --- D1: destructive commands ---------------------------------------------------------------


def test_downgrade_needs_a_revision(seeded: Path, orchestrate_home: Path) -> None:
    before = fingerprint(seeded)
    result = run("db", "downgrade", home=orchestrate_home)
    assert_error(result, "Missing option '--revision'")
    assert fingerprint(seeded) == before
    assert "deployments" in tables(seeded)


def test_downgrade_refuses_without_yes(seeded: Path, orchestrate_home: Path) -> None:
    before, counts = fingerprint(seeded), row_counts(seeded)
    result = run("db", "downgrade", "--revision", "base", home=orchestrate_home)
    assert_error(result, "pass --yes")
    # It said what it would destroy, with the rows at stake.
    assert "DROPS every table" in result.stderr and f"deployments ({counts['deployments']} rows)" in result.stderr
    assert fingerprint(seeded) == before
    assert not list(seeded.parent.glob("state.db.backup-*"))


def test_downgrade_with_yes_backs_up_first(seeded: Path, orchestrate_home: Path) -> None:
    counts = row_counts(seeded)
    result = run("db", "downgrade", "--revision", "base", "--yes", home=orchestrate_home)
    assert result.returncode == 0, describe(result)
    backups = list(seeded.parent.glob("state.db.backup-*"))
    assert len(backups) == 1 and str(backups[0]) in result.stderr, describe(result)
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    assert row_counts(backups[0]) == counts  # the whole store, WAL included
    assert tables(seeded) <= {"alembic_version"}
    # The backup is a working store: put it back and read it.
    shutil.copy(backups[0], seeded)
    for suffix in ("-wal", "-shm"):
        Path(f"{seeded}{suffix}").unlink(missing_ok=True)
    listed = run("list", "--json", home=orchestrate_home)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == counts["deployments"], describe(listed)


def test_gc_and_delete_refuse_without_yes(seeded: Path, orchestrate_home: Path) -> None:
    time.sleep(1.1)
    before = fingerprint(seeded)
    gc = run("gc", "--older-than", "1s", home=orchestrate_home)
    assert_error(gc, "pass --yes")
    assert "permanently deletes" in gc.stderr and "of 1 deployments" in gc.stderr, describe(gc)
    delete = run("delete", "seed", home=orchestrate_home)
    assert_error(delete, "pass --yes")
    assert "stops endpoint seed (noop, live deployment 3)" in delete.stderr and "noop seed-3" in delete.stderr
    assert fingerprint(seeded) == before
    # A dry run needs no confirmation; --yes goes ahead.
    assert run("gc", "--older-than", "1s", "--dry-run", home=orchestrate_home).returncode == 0
    done = run("gc", "--older-than", "1s", "--yes", "--json", home=orchestrate_home)
    assert done.returncode == 0 and json.loads(done.stdout)["deployments"] == 1, describe(done)
    deleted = run("delete", "seed", "--yes", home=orchestrate_home)
    assert deleted.returncode == 0 and "endpoint seed deleted" in deleted.stdout, describe(deleted)


def test_destructive_commands_ask_at_a_terminal(seeded: Path, orchestrate_home: Path) -> None:
    time.sleep(1.1)
    before = fingerprint(seeded)
    for args in (["db", "downgrade", "--revision", "base"], ["gc", "--older-than", "1s"], ["delete", "seed"]):
        code, output = run_at_terminal(args, orchestrate_home, "n")
        assert code == 1 and "nothing was changed" in output, (args, code, output)
    assert fingerprint(seeded) == before
    code, output = run_at_terminal(["delete", "seed"], orchestrate_home, "y")
    assert code == 0 and "endpoint seed deleted" in output, output
    code, output = run_at_terminal(["db", "downgrade", "--revision", "base"], orchestrate_home, "y")
    assert code == 0 and "backed up the state store to" in output, output
    assert tables(seeded) <= {"alembic_version"}


# --- S3, S6, S7 and B: secrets ----------------------------------------------------------------


def _database_text(home: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in home.rglob("*") if p.is_file())


@pytest.mark.parametrize(("target", "options", "config_file"), [
    ("docker", ["-C", f"registry=user:{PASSWORD}@127.0.0.1:5000"], None),
    ("docker", ["-C", f"image=https://user:{PASSWORD}@127.0.0.1:5000/team/churn"], None),
    ("sagemaker", ["-C", f"env=MODEL_THREADS=2,AWS_SECRET_ACCESS_KEY={PASSWORD}"], None),
    ("sagemaker", [], f"env:\n  AWS_SECRET_ACCESS_KEY: {PASSWORD}\n"),
    ("sagemaker", ["-C", f"role_arn=arn:aws:iam::123456789012:role/x?token={PASSWORD}"], None),
    ("local", ["-C", f"pip_requirements_override=https://u:{PASSWORD}@pypi.example/simple/pkg.whl"], None),
    ("local", ["-C", f"env=HF_TOKEN={PASSWORD}"], None),
])
def test_credentials_under_any_key_are_refused(orchestrate_home: Path, model: Path, tmp_path: Path, target: str,
                                               options: list[str], config_file: str | None) -> None:
    seed = run("deploy", str(model), "--name", "seed", "-t", "noop", home=orchestrate_home)
    assert seed.returncode == 0, describe(seed)
    database = orchestrate_home / "state.db"
    checkpoint(database)
    before = fingerprint(database)
    if config_file is not None:
        (tmp_path / "config.yaml").write_text(config_file)
        options = [*options, "--config", str(tmp_path / "config.yaml")]
    result = run("deploy", str(model), "--name", "leaky", "-t", target, *options, "--detach", home=orchestrate_home)
    assert_error(result, "env:NAME or file:PATH")
    assert PASSWORD not in result.stdout + result.stderr
    assert fingerprint(database) == before
    assert PASSWORD not in _database_text(orchestrate_home)


def test_mapping_secret_given_as_reference_is_stored_as_reference(orchestrate_home: Path, model: Path) -> None:
    result = run("deploy", str(model), "--name", "ref", "-t", "sagemaker", "-C",
                 "env=MODEL_THREADS=2,AWS_SECRET_ACCESS_KEY=env:MY_SECRET", "--detach", home=orchestrate_home,
                 env={"MY_SECRET": PASSWORD})
    assert result.returncode == 0, describe(result)
    record = json.loads(run("status", result.stdout.strip(), "--json", home=orchestrate_home).stdout)
    assert record["config"]["env"] == {"MODEL_THREADS": "2", "AWS_SECRET_ACCESS_KEY": "env:MY_SECRET"}
    assert PASSWORD not in _database_text(orchestrate_home)


def test_event_messages_and_data_are_scrubbed(tmp_path: Path) -> None:
    from orchestrator import secret_values
    from orchestrator.states import EventKind
    from orchestrator.store import Store

    database = tmp_path / "events.db"
    store = Store(f"sqlite:///{database}", actor="test")
    secret_values.remember(PASSWORD + "-resolved")
    try:
        with store.write() as tx:
            tx.event(EventKind.STAGE_FAILED, f"pushing to https://ci:{PASSWORD}@registry.example/x",
                     data={"source": f"https://ci:{PASSWORD}@registry.example/x",
                           "nested": [{"note": f"token {PASSWORD}-resolved used"}]})
    finally:
        store.dispose()
    checkpoint(database)
    raw = database.read_bytes().decode("latin-1")
    assert PASSWORD not in raw
    assert "https://ci:***@registry.example/x" in raw and "token *** used" in raw


def test_registry_password_env_names_a_variable(orchestrate_home: Path, model: Path) -> None:
    named = run("deploy", str(model), "--name", "reg", "-t", "docker", "-C", "registry_username=ci",
                "-C", "registry_password_env=CI_REGISTRY_PASSWORD", "--detach", home=orchestrate_home)
    assert named.returncode == 0, describe(named)
    record = json.loads(run("status", named.stdout.strip(), "--json", home=orchestrate_home).stdout)
    assert record["config"]["registry_password_env"] == "CI_REGISTRY_PASSWORD"
    misplaced = run("deploy", str(model), "--name", "reg2", "-t", "docker", "-C",
                    f"registry_password_env={PASSWORD}!", "--detach", home=orchestrate_home)
    assert_error(misplaced, "must name an environment variable, not hold the secret itself")
    assert PASSWORD not in misplaced.stderr + _database_text(orchestrate_home)


def test_short_secret_is_refused(orchestrate_home: Path, model: Path) -> None:
    result = run("deploy", str(model), "--name", "short", "-t", "noop", "-C", "api_token=env:T",
                 home=orchestrate_home, env={"T": "e"})
    assert result.returncode != 0, describe(result)
    assert "too short to mask" in result.stdout + result.stderr, describe(result)
    assert "Traceback" not in result.stderr
    history = run("history", "short", home=orchestrate_home)
    assert "***" not in history.stdout + history.stderr


def test_scrubbing_masks_whole_values_only(orchestrate_home: Path, model: Path) -> None:
    # The secret is a fragment of words every message holds ("deployment").
    secret = "eployment"
    result = run("deploy", str(model), "--name", "whole", "-t", "noop", "-C", "api_token=env:T",
                 home=orchestrate_home, env={"T": secret})
    assert result.returncode == 0, describe(result)
    assert "authenticating with token ***" in result.stdout + result.stderr
    for args in (("history", "whole"), ("events",), ("status", "1", "--json")):
        shown = run(*args, home=orchestrate_home)
        assert shown.returncode == 0, describe(shown)
        assert "***" not in shown.stdout, (args, shown.stdout)
        assert "deployment 1" in shown.stdout or '"id": 1' in shown.stdout
    logs = list((orchestrate_home / "logs").rglob("validate-*.log"))
    assert logs and "authenticating with token ***\n" in logs[0].read_text()


def test_database_url_passwords_are_masked(orchestrate_home: Path) -> None:
    for url in (f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:notaport/db",
                f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/db"):
        result = run("list", home=orchestrate_home, env={"ORCHESTRATE_DB_URL": url})
        assert result.returncode == 2, describe(result)
        assert PASSWORD not in result.stdout + result.stderr and "u:***@127.0.0.1" in result.stderr, describe(result)
        assert "Traceback" not in result.stderr


@pytest.mark.postgres
def test_postgres_downgrade_refuses_without_yes(fresh_pg_url: str, orchestrate_home: Path, model: Path) -> None:
    env = {"ORCHESTRATE_DB_URL": fresh_pg_url}
    assert run("deploy", str(model), "--name", "pg", "-t", "noop", home=orchestrate_home, env=env).returncode == 0
    engine = create_engine(fresh_pg_url)
    try:
        before = set(inspect(engine).get_table_names())
        result = run("db", "downgrade", "--revision", "base", home=orchestrate_home, env=env)
        assert_error(result, "pass --yes")
        assert "take a pg_dump first" in result.stderr and "DROPS every table" in result.stderr
        assert set(inspect(engine).get_table_names()) == before
    finally:
        engine.dispose()


def test_store_and_logs_are_private(orchestrate_home: Path, model: Path) -> None:
    home = orchestrate_home / "fresh"
    result = run("deploy", str(model), "--name", "private", "-t", "noop", "-C", "api_token=env:TOKEN", home=home,
                 env={"TOKEN": PASSWORD})
    assert result.returncode == 0, describe(result)
    # The -wal and -shm files exist while a connection is open; SQLite gives them the
    # database file's mode.
    with sqlite3.connect(home / "state.db") as connection:
        connection.execute("UPDATE endpoints SET name = name")
        files = [home / "state.db", home / "state.db-wal", home / "state.db-shm"]
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), [oct(p.stat().st_mode) for p in files]
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    log_dirs = [home / "logs", home / "logs" / "deployments", home / "logs" / "deployments" / "1"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in log_dirs)
    logs = list(log_dirs[-1].glob("*.log"))
    assert logs and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in logs)
    # A store at a --db-url of its own is private too.
    elsewhere = orchestrate_home / "elsewhere" / "store.db"
    result = run("--db-url", f"sqlite:///{elsewhere}", "deploy", str(model), "--name", "p2", "-t", "noop",
                 home=home)
    assert result.returncode == 0, describe(result)
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o600 and stat.S_IMODE(elsewhere.parent.stat().st_mode) == 0o700


# --- S5: the local server's environment -------------------------------------------------------


@pytest.mark.slow
def test_local_server_gets_a_minimal_environment(orchestrate_home: Path, example_model: Path) -> None:
    deployer = {"AWS_SECRET_ACCESS_KEY": PASSWORD, "ORCHESTRATE_DB_URL": f"sqlite:///{orchestrate_home}/state.db",
                "VIRTUAL_ENV": "/somewhere/venv", "GITHUB_TOKEN": PASSWORD, "LC_ALL": "C.UTF-8",
                "MODEL_SECRET": "shhh-it-is-a-secret"}
    result = run_process("deploy", str(example_model), "--name", "envtest", "-t", "local",
                 "-C", "env=MODEL_MODE=fast,MODEL_KEY=env:MODEL_SECRET", home=orchestrate_home, env=deployer)
    try:
        assert result.returncode == 0, describe(result)
        record = json.loads(run_process("status", "envtest", "--json", home=orchestrate_home, env=deployer).stdout)
        master = psutil.Process(int(record["live"]["runtime"]["pid"]))
        for process in [master, *master.children(recursive=True)]:
            environ = dict(item.split("=", 1) for item in
                           Path(f"/proc/{process.pid}/environ").read_text().split("\0") if "=" in item)
            assert "AWS_SECRET_ACCESS_KEY" not in environ and "GITHUB_TOKEN" not in environ, environ
            assert not any(name.startswith("ORCHESTRATE_DB") for name in environ), environ
            assert "VIRTUAL_ENV" not in environ
            assert PASSWORD not in "".join(environ.values())
            assert environ["MODEL_MODE"] == "fast" and environ["MODEL_KEY"] == "shhh-it-is-a-secret"
            assert environ["LC_ALL"] == "C.UTF-8" and environ["PATH"] == os.environ["PATH"]
            allowed = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SSL_CERT_FILE",
                       "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PYTHONPATH", "MODEL_MODE", "MODEL_KEY"}
            # What gunicorn and the server set for themselves is theirs; nothing else of ours.
            inherited = {n for n in environ if n in os.environ or n in deployer} - allowed
            assert {n for n in inherited if not n.startswith("LC_")} == set(), inherited
        # The stored config keeps the reference, never the value.
        assert record["live"]["config"]["env"] == {"MODEL_MODE": "fast", "MODEL_KEY": "env:MODEL_SECRET"}
    finally:
        run_process("delete", "envtest", "--yes", home=orchestrate_home, env=deployer, timeout=120)


# --- C5, B and K: the store itself ------------------------------------------------------------


def test_missing_psycopg_names_the_extra(orchestrate_home: Path) -> None:
    # psycopg made unimportable, as on an install without the extra.
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from orchestrator.cli import main\n"
            "sys.argv = ['orchestrate', '--db-url', 'postgresql+psycopg://u:pw@127.0.0.1/db', 'list']\n"
            "main()\n")
    process = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ORCHESTRATE_HOME": str(orchestrate_home)},
                             capture_output=True, text=True, check=False, timeout=60)
    result = Outcome(process.returncode, process.stdout, process.stderr)
    assert_error(result, "pip install 'orchestrate[postgres]'")
    assert "ModuleNotFoundError" not in result.stderr


def test_store_path_under_a_file(orchestrate_home: Path, model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    result = run("--db-url", f"sqlite:///{blocker}/state.db", "deploy", str(model), "--name", "x", "-t", "noop",
                 home=orchestrate_home)
    assert_error(result, f"{blocker} is not a directory")
    result = run("list", home=blocker)
    assert_error(result, f"ORCHESTRATE_HOME {blocker} is not a directory")
    assert blocker.read_text() == "not a directory\n"


def test_immutable_store(seeded: Path, orchestrate_home: Path, model: Path) -> None:
    before = fingerprint(seeded)
    subprocess.run(["chattr", "+i", str(seeded)], check=True)
    try:
        listed = run("list", "--json", home=orchestrate_home)
        assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 3, describe(listed)
        result = run("deploy", str(model), "--name", "other", "-t", "noop", home=orchestrate_home)
        assert_error(result, "cannot be written")
        assert "INSERT" not in result.stderr and "OperationalError" not in result.stderr
    finally:
        subprocess.run(["chattr", "-i", str(seeded)], check=True)
    assert fingerprint(seeded) == before


def test_corrupted_store_is_not_written(seeded: Path, orchestrate_home: Path, model: Path) -> None:
    data = bytearray(seeded.read_bytes())
    page = 4096
    for start in range(3 * page, len(data), page):  # damage every table page past the first ones
        data[start + 100:start + 400] = b"\xff" * 300
    seeded.write_bytes(bytes(data))
    before = fingerprint(seeded)
    for args in (("deploy", str(model), "--name", "seed", "-t", "noop", "-C", "sleep_s=0.01"), ("rollback", "seed")):
        result = run(*args, home=orchestrate_home)
        assert_error(result, "is corrupted")
    # A read does not scan the whole file first (that is a writer's price: 0.9 s at 100,000
    # deployments): it shows what it can read, or names the corruption a page it reads has.
    for args in (("list",), ("status", "seed"), ("history", "seed")):
        result = run(*args, home=orchestrate_home)
        assert "Traceback" not in result.stdout + result.stderr, describe(result)
        assert result.returncode == 0 or "is corrupted" in result.stderr, describe(result)
    assert fingerprint(seeded) == before


def test_unknown_revision(seeded: Path, orchestrate_home: Path) -> None:
    before = fingerprint(seeded)
    assert_error(run("db", "upgrade", "--revision", "zzz", home=orchestrate_home), "unknown schema revision 'zzz'")
    assert_error(run("db", "downgrade", "--revision", "zzz", "--yes", home=orchestrate_home),
                 "unknown schema revision 'zzz'")
    assert fingerprint(seeded) == before


def test_newer_schema_is_named(seeded: Path, orchestrate_home: Path, model: Path) -> None:
    with sqlite3.connect(seeded) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099'")
    checkpoint(seeded)
    before = fingerprint(seeded)
    for args in (("list",), ("deploy", str(model), "--name", "seed", "-t", "noop"), ("db", "upgrade")):
        result = run(*args, home=orchestrate_home)
        assert_error(result, "written by a newer orchestrate (schema revision 0099")
        assert "Can't locate revision" not in result.stderr
    assert fingerprint(seeded) == before


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (this machine's tests run as root)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_full_disk_is_named(small_disk: Path, orchestrate_home: Path, model: Path) -> None:
    database = small_disk / "state.db"
    url = f"sqlite:///{database}"
    assert run("--db-url", url, "db", "upgrade", home=orchestrate_home).returncode == 0
    filler = small_disk / "filler"
    with filler.open("wb") as handle:  # fill the disk to the last byte
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    result = run("--db-url", url, "deploy", str(model), "--name", "full", "-t", "noop", home=orchestrate_home)
    assert result.returncode != 0, describe(result)
    assert "disk holding the state store is full" in result.stderr, describe(result)
    assert "reachable" not in result.stderr and "Traceback" not in result.stderr and "INSERT" not in result.stderr


def test_read_on_missing_store_creates_nothing(orchestrate_home: Path, tmp_path: Path) -> None:
    typo = tmp_path / "stat.db"
    for args in (("list",), ("status",), ("history", "x"), ("events",), ("gc", "--older-than", "1d", "--yes"),
                 ("delete", "x", "--yes"), ("db", "current"), ("db", "downgrade", "--revision", "base", "--yes")):
        result = run("--db-url", f"sqlite:///{typo}", *args, home=orchestrate_home)
        assert_error(result, "there is no state store at")
        assert not typo.exists(), args


@pytest.mark.postgres
def test_read_on_empty_postgres_database(fresh_pg_url: str, orchestrate_home: Path) -> None:
    result = run("list", home=orchestrate_home, env={"ORCHESTRATE_DB_URL": fresh_pg_url})
    assert_error(result, "there is no state store at")
    engine = create_engine(fresh_pg_url)
    try:
        assert inspect(engine).get_table_names() == []
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_in_memory_store_is_refused(orchestrate_home: Path, model: Path) -> None:
    for args in (("deploy", str(model), "--name", "m", "-t", "noop"), ("list",), ("worker", "--once")):
        result = run("--db-url", "sqlite://", *args, home=orchestrate_home)
        assert_error(result, "in-memory database")
