"""Four worker processes drain 400 queued deployments over 40 endpoints on PostgreSQL:
each runs exactly once, in queue order per endpoint, never two at once on one endpoint."""

from __future__ import annotations

import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from _cluster import Cluster

from orchestrator.api import Client

ENDPOINTS = 40
PER_ENDPOINT = 10
WORKERS = 4
STAGES = 7
DRAIN_TIMEOUT_S = 420


def test_four_workers_drain_four_hundred_deployments(pg_cluster: Cluster, noop_model: Path) -> None:
    cluster = pg_cluster
    client = Client(db_url=cluster.db_url)
    try:
        queued: dict[int, str] = {}
        # Round-robin over endpoints, so each endpoint's queue interleaves with the others'.
        for round_ in range(PER_ENDPOINT):
            for index in range(ENDPOINTS):
                name = f"ep-{index:02d}"
                deployment_id = client.deploy(str(noop_model), name=name, target="noop",
                                              config={"sleep_s": "0.005"}, detach=True)
                queued[deployment_id] = name
    finally:
        client.close()
    assert len(queued) == ENDPOINTS * PER_ENDPOINT

    started = time.monotonic()
    workers = [cluster.worker(f"w{i}", "--concurrency", "1", "--once") for i in range(WORKERS)]
    # ~2 minutes on this 2-CPU VM when it is otherwise quiet; generous for when it is not.
    deadline = started + DRAIN_TIMEOUT_S
    for worker in workers:
        try:
            code = worker.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            done = cluster.query("SELECT count(*) AS n FROM deployments WHERE status = 'succeeded'")[0].n
            raise AssertionError(f"only {done} of {len(queued)} deployments done after {DRAIN_TIMEOUT_S}s") from None
        assert code == 0, worker.log_path.read_text()[-3000:]
    elapsed = time.monotonic() - started

    deployments = cluster.query("SELECT id, status, started_at, finished_at FROM deployments ORDER BY id")
    assert Counter(row.status for row in deployments) == {"succeeded": len(queued)}, elapsed

    attempts: dict[int, list[Any]] = defaultdict(list)
    for row in cluster.query("SELECT deployment_id, stage, status, runner, started_at, finished_at "
                             "FROM stage_attempts ORDER BY id"):
        attempts[row.deployment_id].append(row)
    claims = Counter(row.deployment_id for row in cluster.query(
        "SELECT deployment_id FROM events WHERE kind = 'deployment_claimed'"))
    for deployment_id in queued:
        rows = attempts[deployment_id]
        # Exactly once: one attempt per stage, all succeeded, one runner, one claim.
        assert len(rows) == STAGES and {r.status for r in rows} == {"succeeded"}, rows
        assert len({r.stage for r in rows}) == STAGES, rows
        assert len({r.runner for r in rows}) == 1, rows
        assert claims[deployment_id] == 1, (deployment_id, claims[deployment_id])

    by_endpoint: dict[str, list[int]] = defaultdict(list)
    for deployment_id, name in sorted(queued.items()):
        by_endpoint[name].append(deployment_id)
    claimed_at = {row.id: row.started_at for row in deployments}
    for name, ids in by_endpoint.items():
        spans = [(min(r.started_at for r in attempts[i]), max(r.finished_at for r in attempts[i])) for i in ids]
        for (earlier_id, (_, earlier_end)), (later_id, (later_start, _)) in zip(
                zip(ids, spans), zip(ids[1:], spans[1:])):
            # In queue order, and the later one starts only after the earlier one ended.
            assert claimed_at[earlier_id] < claimed_at[later_id], (name, earlier_id, later_id)
            assert earlier_end <= later_start, (name, earlier_id, earlier_end, later_id, later_start)

    # Every worker did a share of the work.
    runners = Counter(r.runner.split("/")[0] for rows in attempts.values() for r in rows)
    assert set(runners) == {f"w{i}" for i in range(WORKERS)}, runners
    print(f"\n{len(queued)} deployments by {WORKERS} workers in {elapsed:.1f}s")
