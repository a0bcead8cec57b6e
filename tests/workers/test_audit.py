"""The audit trail on SQLite and PostgreSQL: events carry their actor (user@host from the CLI,
the worker's name from a worker), `events --since` and `history --json` stream them, and
`gc --older-than` prunes what ended long ago but keeps live and previous-live deployments."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
from pathlib import Path

from _cluster import Cluster


def _deploy(cluster: Cluster, model: Path, name: str, *extra: str) -> None:
    # --force: these tests redeploy the same model to make history, which is otherwise a no-op.
    cluster.ok("deploy", str(model), "--name", name, "--target", "noop", "--force", *extra)


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_events_and_history_carry_actors(any_cluster: Cluster, noop_model: Path) -> None:
    cluster = any_cluster
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    _deploy(cluster, noop_model, "audited")
    _deploy(cluster, noop_model, "audited", "--detach")
    worker = cluster.worker("auditor-7", "--once")
    assert worker.proc.wait(timeout=60) == 0

    events = _json_lines(cluster.ok("events", "--json").stdout)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    by_deployment = {d: {e["actor"] for e in events if e["deployment_id"] == d} for d in (1, 2)}
    assert by_deployment[1] == {me}
    # Deployment 2 was queued from the CLI and run by the worker.
    assert by_deployment[2] == {me, "auditor-7"}
    assert all(e["actor"] == "auditor-7" for e in events if e["deployment_id"] == 2 and e["kind"] != "deployment_created")

    middle = events[len(events) // 2]["id"]
    later = _json_lines(cluster.ok("events", "--since", str(middle), "--json").stdout)
    assert [e["id"] for e in later] == [e["id"] for e in events if e["id"] > middle]
    assert len(_json_lines(cluster.ok("events", "--since", "1h", "--json").stdout)) == len(events)
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    assert cluster.ok("events", "--since", future, "--json").stdout == ""
    plain = cluster.ok("events", "--since", str(middle)).stdout.splitlines()
    assert len(plain) == len(later) and all(("auditor-7" in line or me in line) for line in plain)

    history = cluster.json("history", "2")
    assert history[0]["kind"] == "deployment_created"
    assert history[-1]["kind"] == "deployment_succeeded"
    assert {h["actor"] for h in history} == {me, "auditor-7"}
    assert {h["actor"] for h in cluster.json("history", "audited")} == {me, "auditor-7"}

    bad = cluster.run("events", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_gc_prunes_old_finished_deployments_but_keeps_live_and_previous(any_cluster: Cluster,
                                                                       noop_model: Path) -> None:
    cluster = any_cluster
    for _ in range(4):
        _deploy(cluster, noop_model, "aged")  # 1..4: 4 is live, 3 the previous live
    _deploy(cluster, noop_model, "fresh")  # 5: finished recently
    _deploy(cluster, noop_model, "aged", "--detach")  # 6: queued, never finished
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=100)).replace(tzinfo=None)
    cluster.query("UPDATE deployments SET finished_at = :old WHERE id <= 4", old=old)

    def counts() -> dict[int, tuple[int, int]]:
        return {i: (cluster.query("SELECT count(*) AS n FROM stage_attempts WHERE deployment_id = :i", i=i)[0].n,
                    cluster.query("SELECT count(*) AS n FROM events WHERE deployment_id = :i", i=i)[0].n)
                for i in range(1, 7)}

    before = counts()
    assert all(attempts == 7 for attempts, _ in list(before.values())[:5])

    dry = cluster.json("gc", "--older-than", "90d", "--dry-run")
    assert dry["deployments"] == 2 and dry["attempts"] == 14
    assert dry["events"] == before[1][1] + before[2][1]
    assert counts() == before

    done = cluster.json("gc", "--older-than", "90d", "--yes")
    assert done == dry
    after = counts()
    assert after[1] == after[2] == (0, 0)
    assert {i: after[i] for i in (3, 4, 5, 6)} == {i: before[i] for i in (3, 4, 5, 6)}
    # The deployments themselves stay listed; their status and history of the live ones too.
    assert [r["status"] for r in cluster.json("list")] == ["queued"] + ["succeeded"] * 5
    assert cluster.json("status", "aged")["live_deployment_id"] == 4
    gc_events = [e for e in _json_lines(cluster.ok("events", "--json").stdout) if e["kind"] == "gc"]
    assert len(gc_events) == 1
    again = cluster.json("gc", "--older-than", "90d", "--yes")
    assert (again["attempts"], again["events"]) == (0, 0)
