"""Bad input: a clear message, exit code 2, no traceback, and a database left as it was."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from orchestrator.cli import cli
from orchestrator.store import make_engine
from orchestrator.store.tables import Base


@pytest.fixture
def run(orchestrate_home: Path) -> Iterator[object]:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    yield invoke


def _row_counts(home: Path) -> dict[str, int]:
    engine = make_engine(f"sqlite:///{home / 'state.db'}")
    with engine.connect() as connection:
        counts = {name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                  for name, table in Base.metadata.tables.items()}
    engine.dispose()
    return counts


def _assert_bad_input(result: Result, fragment: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture
def seeded(run, example_model: Path, orchestrate_home: Path) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """A store with one succeeded deployment (id 1), and its row counts."""
    result = run("deploy", str(example_model), "--name", "seed", "--target", "noop")
    assert result.exit_code == 0, result.stderr
    return _row_counts(orchestrate_home)


def _model_variant(example_model: Path, tmp_path: Path, mlmodel: str | None) -> Path:
    model = tmp_path / "model"
    shutil.copytree(example_model, model)
    if mlmodel is None:
        (model / "MLmodel").unlink()
    else:
        (model / "MLmodel").write_text(mlmodel)
    return model


@pytest.mark.parametrize(
    ("mlmodel", "fragment"),
    [
        (None, "has no MLmodel file"),
        ("flavors: [unclosed\n", "is not valid YAML"),
        ("flavors:\n  sklearn:\n    code: null\n", "has no python_function flavor (flavors found: sklearn)"),
    ],
    ids=["no-mlmodel", "not-yaml", "no-pyfunc"],
)
def test_bad_model_directories(run, seeded, example_model, tmp_path, orchestrate_home, mlmodel, fragment):  # type: ignore[no-untyped-def]
    model = _model_variant(example_model, tmp_path, mlmodel)
    _assert_bad_input(run("deploy", str(model), "--name", "m", "--target", "noop"), fragment)
    assert _row_counts(orchestrate_home) == seeded


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--target", "nowhere"], "unknown target 'nowhere' — installed targets: "),
        (["-C", "prot=1"], "unknown config key 'prot' for target 'local' (-C) — valid keys: "),
        (["-C", "port"], "malformed -C option 'port'"),
        (["-C", "workers=many"], "config key 'workers' (-C) must be int"),
    ],
    ids=["unknown-target", "unknown-key", "malformed-C", "bad-type"],
)
def test_bad_deploy_options(run, seeded, example_model, orchestrate_home, args, fragment):  # type: ignore[no-untyped-def]
    _assert_bad_input(run("deploy", str(example_model), "--name", "m", *args), fragment)
    assert _row_counts(orchestrate_home) == seeded


def test_missing_model_path(run, seeded, tmp_path, orchestrate_home):  # type: ignore[no-untyped-def]
    _assert_bad_input(run("deploy", str(tmp_path / "nope"), "--name", "m"), "does not exist")
    assert _row_counts(orchestrate_home) == seeded


@pytest.mark.parametrize("name", ["-lead", "has_underscore", "x" * 64, "trail-"])
def test_invalid_endpoint_name(run, seeded, example_model, orchestrate_home, name):  # type: ignore[no-untyped-def]
    _assert_bad_input(run("deploy", str(example_model), "--name", name), "invalid endpoint name")
    assert _row_counts(orchestrate_home) == seeded


def test_port_in_use(run, seeded, example_model, orchestrate_home):  # type: ignore[no-untyped-def]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("deploy", str(example_model), "--name", "m", "-C", f"port={port}")
    _assert_bad_input(result, f"port {port} on 127.0.0.1 is in use")
    assert _row_counts(orchestrate_home) == seeded


def test_resume_of_a_succeeded_deployment(run, seeded, orchestrate_home):  # type: ignore[no-untyped-def]
    _assert_bad_input(run("resume", "1"), "deployment 1 already succeeded; there is nothing to resume")
    assert _row_counts(orchestrate_home) == seeded


@pytest.mark.parametrize("command", [["resume", "999"], ["cancel", "999"], ["status", "999"], ["history", "999"]])
def test_unknown_deployment_id(run, seeded, orchestrate_home, command):  # type: ignore[no-untyped-def]
    _assert_bad_input(run(*command), "no deployment with id 999")
    assert _row_counts(orchestrate_home) == seeded


@pytest.mark.parametrize("command", [["status", "ghost"], ["rollback", "ghost"], ["delete", "ghost"],
                                     ["predict", "ghost", "-i", __file__]])
def test_unknown_endpoint(run, seeded, orchestrate_home, command):  # type: ignore[no-untyped-def]
    _assert_bad_input(run(*command), "no endpoint named 'ghost'")
    assert _row_counts(orchestrate_home) == seeded


def test_endpoint_on_another_target(run, seeded, example_model, orchestrate_home):  # type: ignore[no-untyped-def]
    _assert_bad_input(run("deploy", str(example_model), "--name", "seed", "--target", "local"),
                      "endpoint 'seed' already exists on target 'noop'")
    assert _row_counts(orchestrate_home) == seeded


def test_bad_database_url(run):  # type: ignore[no-untyped-def]
    _assert_bad_input(run("--db-url", "mysql://x/y", "list"), "unsupported database 'mysql'")
    _assert_bad_input(run("--db-url", "not a url", "list"), "cannot parse database URL")
