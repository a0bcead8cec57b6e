"""Planted secrets: a credential given as env:NAME or file:PATH is used by the stage, and its
value is found nowhere afterwards — not in the database, the logs, the CLI's or the worker's
output, nor in status, history or events. A plain-text secret is refused."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _cluster import Cluster, describe
from sqlalchemy import inspect


def _database_text(cluster: Cluster) -> str:
    """Everything the state store holds, as text."""
    if cluster.db_url.startswith("sqlite"):
        path = Path(cluster.db_url.removeprefix("sqlite:///"))
        # The raw files, WAL included: a value written then overwritten would still be there.
        return "".join(p.read_bytes().decode("latin-1") for p in path.parent.glob(path.name + "*"))
    tables = inspect(cluster.engine).get_table_names()
    assert {"deployments", "stage_attempts", "events", "endpoints", "resources"} <= set(tables)
    return "\n".join(str(row[0]) for table in tables
                     for row in cluster.query(f'SELECT row_to_json(t)::text FROM "{table}" AS t'))


def _home_text(cluster: Cluster) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in cluster.home.rglob("*") if p.is_file())


def _assert_nowhere(value: str, cluster: Cluster, outputs: list[subprocess.CompletedProcess[str]]) -> None:
    reads = [cluster.run(*args) for args in (
        ("status", "1", "--json"), ("status", "secretive", "--json"), ("history", "1", "--json"),
        ("history", "secretive", "--json"), ("events", "--json"), ("list", "--json"), ("status", "1"),
        ("history", "1"))]
    for result in outputs + reads:
        assert result.returncode == 0, describe(result)
        assert value not in result.stdout + result.stderr, describe(result)
    assert value not in _database_text(cluster)
    assert value not in _home_text(cluster)
    # It was used: the stage logged it, scrubbed.
    logs = list((cluster.home / "logs").rglob("validate-*.log"))
    assert logs and all("authenticating with token ***" in p.read_text() for p in logs), logs


@pytest.fixture
def planted() -> str:
    return "planted-" + secrets.token_hex(16)


def test_env_secret_in_process_and_by_a_worker(any_cluster: Cluster, noop_model: Path, planted: str) -> None:
    cluster = any_cluster
    env = {"PLANTED": planted}
    deploy = ("deploy", str(noop_model), "--name", "secretive", "--target", "noop", "-C", "api_token=env:PLANTED")
    outputs = [cluster.run(*deploy, env=env)]
    outputs.append(cluster.run(*deploy, "--detach", "--force", env=env))
    worker = cluster.worker("keeper", "--once", env=env)
    assert worker.proc.wait(timeout=60) == 0
    assert [r.status for r in cluster.query("SELECT status FROM deployments ORDER BY id")] == ["succeeded"] * 2
    record = cluster.json("status", "1")
    assert record["config"]["api_token"] == "env:PLANTED"
    _assert_nowhere(planted, cluster, outputs)


def test_file_secret(any_cluster: Cluster, noop_model: Path, planted: str, tmp_path: Path) -> None:
    cluster = any_cluster
    secret_file = tmp_path / "token"
    secret_file.write_text(planted + "\n")
    result = cluster.run("deploy", str(noop_model), "--name", "secretive", "--target", "noop",
                         "-C", f"api_token=file:{secret_file}")
    _assert_nowhere(planted, cluster, [result])


def test_plain_secret_is_refused(any_cluster: Cluster, noop_model: Path, planted: str) -> None:
    cluster = any_cluster
    result = cluster.run("deploy", str(noop_model), "--name", "secretive", "--target", "noop",
                         "-C", f"api_token={planted}", "--detach")
    assert result.returncode == 2, describe(result)
    assert "env:" in result.stderr and "Traceback" not in result.stderr
    assert planted not in result.stdout + result.stderr
    db_file = Path(cluster.db_url.removeprefix("sqlite:///"))
    if cluster.db_url.startswith("postgresql") or db_file.exists():
        assert planted not in _database_text(cluster)


def test_missing_env_secret_is_refused_before_recording_or_fails_the_workers_stage(
        any_cluster: Cluster, noop_model: Path) -> None:
    cluster = any_cluster
    deploy = ("deploy", str(noop_model), "--name", "secretive", "--target", "noop",
              "-C", "api_token=env:NOT_SET_ANYWHERE")
    # In process the reference is resolved before anything is recorded: bad input, exit 2.
    result = cluster.run(*deploy)
    assert result.returncode == 2 and "NOT_SET_ANYWHERE" in result.stderr, describe(result)
    assert cluster.run("status", "1").returncode != 0
    # Queued, it is resolved by the worker, in the worker's environment: the stage fails and says why.
    cluster.ok(*deploy, "--detach")
    worker = cluster.worker("keeper", "--once")
    assert worker.proc.wait(timeout=60) == 0
    record: dict[str, Any] = cluster.json("status", "1")
    assert record["status"] == "failed" and "NOT_SET_ANYWHERE" in record["error"], record
