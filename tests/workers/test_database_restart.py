"""PostgreSQL restarted under a running worker: the deployment finishes (or is left resumable),
is never marked succeeded without its stage results, and never runs twice at once.

This restarts the shared test server (`pg_ctlcluster`), so it must not run beside other
PostgreSQL tests; it waits for the server to answer again before it ends."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from _cluster import Cluster, attempt_rows, describe

from orchestrator.api import Client

STAGES = ["validate", "build", "push", "create_endpoint", "health_check", "shift_traffic", "cleanup"]


def _cluster_id() -> tuple[str, str]:
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True)
    online = [line.split() for line in listing.stdout.splitlines() if "online" in line]
    assert online, listing.stdout
    return online[0][0], online[0][1]


def _wait_ready(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail("PostgreSQL did not come back after the restart")
        time.sleep(0.2)


@pytest.fixture
def restartable_pg(pg_url: str) -> tuple[str, str]:
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        pytest.fail("pg_ctlcluster / pg_lsclusters not found: this test restarts the local cluster")
    return _cluster_id()


@pytest.mark.parametrize("stage", ["build", "create_endpoint"])
def test_worker_survives_a_postgres_restart(pg_cluster: Cluster, noop_model: Path,
                                            restartable_pg: tuple[str, str], stage: str) -> None:
    cluster = pg_cluster
    client = Client(db_url=cluster.db_url)
    try:
        deployment_id = client.deploy(str(noop_model), name="survivor", target="noop",
                                      config={"sleep_s": "0.7"}, detach=True)
    finally:
        client.close()
    worker = cluster.worker("steady", "--lease-ttl", "5")
    cluster.wait_for("SELECT id FROM stage_attempts WHERE deployment_id = :id AND stage = :stage",
                     lambda rows: len(rows) == 1, id=deployment_id, stage=stage)
    version, name = restartable_pg
    try:
        subprocess.run(["pg_ctlcluster", version, name, "restart"], check=True, timeout=120)
    finally:
        _wait_ready()

    final = cluster.wait_for("SELECT status, lease_owner FROM deployments, endpoints",
                             lambda rows: rows[0].status != "running" or rows[0].lease_owner is None,
                             timeout=60)[0]
    if final.status == "running":  # left resumable: the lease is free, `resume` finishes it
        result = cluster.run("resume", str(deployment_id))
        assert result.returncode == 0, describe(result)
    status = cluster.wait_for("SELECT status FROM deployments", lambda rows: rows[0].status != "running")[0].status
    assert status == "succeeded", (status, worker.log_path.read_text()[-3000:])

    attempts = attempt_rows(cluster, deployment_id)
    # Succeeded means every stage has a succeeded attempt with its result recorded.
    for expected in STAGES:
        done = [a for a in attempts if a.stage == expected and a.status == "succeeded"]
        assert len(done) == 1 and done[0].finished_at is not None, (expected, attempts)
    assert {a.status for a in attempts} <= {"succeeded", "abandoned"}, attempts
    # Never two attempts at once: each begins after the one before it ended.
    for earlier, later in itertools.pairwise(attempts):
        assert earlier.finished_at is not None and earlier.finished_at <= later.started_at, attempts
    assert worker.stop() == 0
    # Either a statement hit the outage (the worker waited, then took its own lease back), or
    # none did and pool pre-ping replaced the dead connections unseen; both are correct.
    events = [line["event"] for line in worker.lines()]
    if "database_unavailable" in events:
        assert "database_back" in events, events


def test_a_cli_deploy_that_loses_the_database_says_how_to_resume(pg_cluster: Cluster, noop_model: Path,
                                                                   restartable_pg: tuple[str, str]) -> None:
    cluster = pg_cluster
    deploy = cluster.spawn("deploy", str(noop_model), "--name", "stranded", "--target", "noop", "-C", "sleep_s=0.7")
    version, name = restartable_pg
    try:
        cluster.wait_for("SELECT id FROM stage_attempts WHERE stage = 'build'", lambda rows: len(rows) == 1)
        subprocess.run(["pg_ctlcluster", version, name, "stop", "-m", "fast"], check=True, timeout=120)
        _out, err = deploy.communicate(timeout=120)
    finally:
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=True, timeout=120)
        _wait_ready()
    assert deploy.returncode == 1, err
    assert "Traceback" not in err, err
    assert "stopped answering during deployment 1" in err and "`orchestrate resume 1`" in err, err
    assert "orchestrate:orchestrate@" not in err  # the password is never shown

    resumed = cluster.run("resume", "1")
    assert resumed.returncode == 0, describe(resumed)
    assert cluster.wait_for("SELECT status FROM deployments", lambda rows: len(rows) == 1)[0].status == "succeeded"
