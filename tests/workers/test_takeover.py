"""Runner faults on PostgreSQL: a worker SIGKILLed mid-stage (taken over at once when its pid is
visibly dead, after lease expiry when it looks remote), a worker stopped mid-stage (fenced
out when it wakes), and a worker told to stop with SIGTERM (finishes the stage, lets go)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from _cluster import Cluster, attempt_rows, describe

from orchestrator.api import Client

LONG_STAGE_S = "3"


def _queue(cluster: Cluster, model: Path, name: str = "drill", sleep_s: str = LONG_STAGE_S, **config: str) -> int:
    client = Client(db_url=cluster.db_url)
    try:
        return client.deploy(str(model), name=name, target="noop", config={"sleep_s": sleep_s, **config},
                             detach=True)
    finally:
        client.close()


def _speed_up(cluster: Cluster, deployment_id: int) -> None:
    """The remaining stages need not sleep: the engine reads the config again at each stage."""
    cluster.query("UPDATE deployments SET config = :config WHERE id = :id",
                  config=json.dumps({"sleep_s": 0.0}), id=deployment_id)


def _wait_running_attempt(cluster: Cluster, deployment_id: int, stage: str = "validate") -> Any:
    return cluster.wait_for(
        "SELECT runner FROM stage_attempts WHERE deployment_id = :id AND stage = :stage AND status = 'running'",
        lambda rows: len(rows) == 1, id=deployment_id, stage=stage)[0]


def _check_finished_after_takeover(cluster: Cluster, deployment_id: int, dead: str, taker: str) -> list[Any]:
    cluster.wait_for("SELECT status FROM deployments WHERE id = :id",
                     lambda rows: rows[0].status == "succeeded", timeout=60, id=deployment_id)
    attempts = attempt_rows(cluster, deployment_id)
    validate = [a for a in attempts if a.stage == "validate"]
    assert [(a.status, a.runner.split("/")[0]) for a in validate] == [("abandoned", dead), ("succeeded", taker)]
    assert validate[0].error_kind == "crashed" and validate[0].finished_at is not None
    # The abandoned attempt ended (was marked) before the taker's attempt began.
    assert validate[0].finished_at <= validate[1].started_at
    assert all(a.status == "succeeded" and a.runner.startswith(taker + "/") for a in attempts[1:]), attempts
    lease = cluster.query("SELECT lease_owner FROM endpoints")
    assert lease[0].lease_owner is None
    return attempts


def test_sigkilled_worker_is_taken_over_at_once_on_this_host(pg_cluster: Cluster, noop_model: Path) -> None:
    cluster = pg_cluster
    deployment_id = _queue(cluster, noop_model)
    doomed = cluster.worker("doomed")
    _wait_running_attempt(cluster, deployment_id)
    _speed_up(cluster, deployment_id)
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.wait()
    # The lease still runs for 30 s, but its holder's pid is dead on this host.
    expires = cluster.query("SELECT lease_expires_at FROM endpoints")[0].lease_expires_at
    rescuer = cluster.worker("rescuer")
    rescuer.wait_for_log(lambda line: line["event"] == "claimed" and line.get("taken_over") is True)
    _check_finished_after_takeover(cluster, deployment_id, "doomed", "rescuer")
    taken = cluster.query("SELECT time FROM events WHERE kind = 'deployment_taken_over'")
    assert len(taken) == 1 and taken[0].time < expires
    assert rescuer.stop() == 0


def test_sigkilled_remote_looking_worker_is_taken_over_after_lease_expiry(pg_cluster: Cluster,
                                                                          noop_model: Path) -> None:
    cluster = pg_cluster
    deployment_id = _queue(cluster, noop_model)
    doomed = cluster.worker("doomed", "--lease-ttl", "2")
    _wait_running_attempt(cluster, deployment_id)
    _speed_up(cluster, deployment_id)
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.wait()
    # As if it ran on another machine: its pid says nothing here, only the lease expiry counts.
    cluster.query("UPDATE endpoints SET lease_host = 'elsewhere.example'")
    expires = cluster.query("SELECT lease_expires_at FROM endpoints")[0].lease_expires_at
    rescuer = cluster.worker("rescuer", "--lease-ttl", "2")
    rescuer.wait_for_log(lambda line: line["event"] == "claimed" and line.get("taken_over") is True, timeout=20)
    _check_finished_after_takeover(cluster, deployment_id, "doomed", "rescuer")
    taken = cluster.query("SELECT time FROM events WHERE kind = 'deployment_taken_over'")
    assert len(taken) == 1 and taken[0].time >= expires, (taken, expires)
    assert rescuer.stop() == 0


def test_stopped_worker_is_fenced_out_when_it_wakes(pg_cluster: Cluster, noop_model: Path) -> None:
    """A worker frozen mid-stage (SIGSTOP) loses its lease to another after expiry; woken, its
    writes are refused, so the stage results recorded are the taker's alone."""
    cluster = pg_cluster
    deployment_id = _queue(cluster, noop_model, sleep_s="2")
    frozen = cluster.worker("frozen", "--lease-ttl", "1")
    _wait_running_attempt(cluster, deployment_id)
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        rescuer = cluster.worker("rescuer", "--lease-ttl", "1")
        rescuer.wait_for_log(lambda line: line["event"] == "claimed" and line.get("taken_over") is True,
                             timeout=20)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    frozen.wait_for_log(lambda line: line["event"] == "lease_lost", timeout=20)
    _speed_up(cluster, deployment_id)
    attempts = _check_finished_after_takeover(cluster, deployment_id, "frozen", "rescuer")
    assert not [a for a in attempts if a.runner.startswith("frozen/") and a.status == "succeeded"]
    assert frozen.stop() == 0 and rescuer.stop() == 0


@pytest.mark.parametrize("finisher", ["worker", "resume"])
def test_sigterm_finishes_the_stage_and_leaves_it_resumable(pg_cluster: Cluster, noop_model: Path,
                                                            finisher: str) -> None:
    cluster = pg_cluster
    deployment_id = _queue(cluster, noop_model, sleep_s="1.5")
    leaving = cluster.worker("leaving")
    _wait_running_attempt(cluster, deployment_id)
    leaving.proc.send_signal(signal.SIGTERM)
    assert leaving.proc.wait(timeout=20) == 0, leaving.log_path.read_text()
    events = [line["event"] for line in leaving.lines()]
    assert "stopping" in events and events[-1] == "stopped", events
    assert "released" in events and "finished" not in events, events

    attempts = attempt_rows(cluster, deployment_id)
    assert [(a.stage, a.status) for a in attempts] == [("validate", "succeeded")], attempts
    assert cluster.query("SELECT status FROM deployments")[0].status == "running"
    lease = cluster.query("SELECT lease_owner, lease_deployment_id FROM endpoints")[0]
    assert lease.lease_owner is None and lease.lease_deployment_id is None

    _speed_up(cluster, deployment_id)
    if finisher == "worker":
        taker = cluster.worker("taker", "--once")
        assert taker.proc.wait(timeout=60) == 0, taker.log_path.read_text()
        runner = "taker"
    else:
        result = cluster.run("resume", str(deployment_id))
        assert result.returncode == 0, describe(result)
        runner = cluster.query("SELECT actor FROM events WHERE kind = 'deployment_resumed'")[0].actor
    attempts = attempt_rows(cluster, deployment_id)
    assert cluster.query("SELECT status FROM deployments")[0].status == "succeeded"
    # validate ran once, by the stopped worker; nothing was abandoned.
    assert [a.stage for a in attempts] == ["validate", "build", "push", "create_endpoint", "health_check",
                                           "shift_traffic", "cleanup"], attempts
    assert {a.status for a in attempts} == {"succeeded"}
    assert all(a.runner.startswith(runner.split("/")[0]) for a in attempts[1:]), (runner, attempts)
