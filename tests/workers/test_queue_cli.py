"""Queueing from the CLI on SQLite and PostgreSQL: `deploy --detach`, `deploy --queue`, the
busy error for a plain deploy, and cancelling queued work."""

from __future__ import annotations

import json
import time
from pathlib import Path

from _cluster import Cluster, attempt_rows, describe


def _deploy_args(model: Path, name: str, *extra: str, sleep_s: str = "0") -> list[str]:
    return ["deploy", str(model), "--name", name, "--target", "noop", "-C", f"sleep_s={sleep_s}", *extra]


def test_detach_prints_the_id_and_json_gives_the_row(any_cluster: Cluster, noop_model: Path) -> None:
    cluster = any_cluster
    started = time.monotonic()
    first = cluster.ok(*_deploy_args(noop_model, "queued-ep", "--detach"))
    assert first.stdout.strip() == "1" and first.stderr == "", describe(first)
    assert time.monotonic() - started < 10
    row = json.loads(cluster.ok(*_deploy_args(noop_model, "queued-ep", "--detach", "--json")).stdout)
    assert row["id"] == 2 and row["status"] == "queued" and row["endpoint"] == "queued-ep"
    assert row["started_at"] is None and row["config"]["sleep_s"] == 0.0
    assert not attempt_rows(cluster, 1) and not attempt_rows(cluster, 2)

    # A plain deploy does not jump the queue: exit 3, naming the queued deployment.
    busy = cluster.run(*_deploy_args(noop_model, "queued-ep"))
    assert busy.returncode == 3, describe(busy)
    assert "queued deployment 1 waiting its turn" in busy.stderr and "--queue" in busy.stderr, busy.stderr
    assert "Traceback" not in busy.stderr
    assert cluster.query("SELECT count(*) AS n FROM deployments")[0].n == 2

    # Cancel the second while queued; a worker then runs the first only.
    cancelled = cluster.ok("cancel", "2")
    assert "deployment 2 cancelled" in cancelled.stdout
    worker = cluster.worker("solo", "--once")
    assert worker.proc.wait(timeout=60) == 0, worker.log_path.read_text()
    statuses = [r.status for r in cluster.query("SELECT status FROM deployments ORDER BY id")]
    assert statuses == ["succeeded", "cancelled"]
    assert not attempt_rows(cluster, 2)
    again = cluster.run("cancel", "2")
    assert again.returncode == 2 and "already cancelled" in again.stderr, describe(again)


def test_queue_waits_behind_a_busy_endpoint_then_runs(any_cluster: Cluster, noop_model: Path) -> None:
    cluster = any_cluster
    holder = cluster.spawn(*_deploy_args(noop_model, "busy-ep", sleep_s="1.5"))
    cluster.wait_for("SELECT id FROM stage_attempts WHERE deployment_id = 1", lambda rows: len(rows) >= 1)

    refused = cluster.run(*_deploy_args(noop_model, "busy-ep"))
    assert refused.returncode == 3, describe(refused)
    assert "busy with deployment 1" in refused.stderr and "--queue" in refused.stderr

    waiter = cluster.run(*_deploy_args(noop_model, "busy-ep", "--queue"))
    _, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err
    assert waiter.returncode == 0, describe(waiter)
    assert "queued behind" in waiter.stdout + waiter.stderr
    assert "deployment 2 succeeded" in waiter.stdout

    first, second = attempt_rows(cluster, 1), attempt_rows(cluster, 2)
    assert {a.status for a in first + second} == {"succeeded"}
    assert max(a.finished_at for a in first) <= min(a.started_at for a in second)
    rows = cluster.query("SELECT id, status FROM deployments ORDER BY id")
    # The refused plain deploy recorded nothing.
    assert [(r.id, r.status) for r in rows] == [(1, "succeeded"), (2, "succeeded")]
