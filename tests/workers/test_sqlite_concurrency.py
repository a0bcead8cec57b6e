"""SQLite under concurrent CLI use on one host: eight processes reading and queueing at once,
a worker writing beside them, from a store that does not exist yet. Nobody sees
`database is locked`; every command succeeds, except that a read started before the first
deploy created the store may say there is no store yet (a named store is never created by a read)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from _cluster import Cluster, describe

PROCESSES = 8
DURATION_S = 6.0


def test_concurrent_cli_never_shows_database_is_locked(cluster: Cluster, noop_model: Path, tmp_path: Path) -> None:
    cluster.db_url = f"sqlite:///{tmp_path / 'state.db'}"
    # --force: a second identical deploy of an endpoint would be a no-op and queue nothing
    commands = [
        ("deploy", str(noop_model), "--name", "shared", "--target", "noop", "--detach", "--force"),
        ("list", "--json"),
        ("status",),
        ("deploy", str(noop_model), "--name", "ep-{index}", "--target", "noop", "--detach", "--force"),
        ("status", "--json"),
        ("events", "--json"),
    ]
    results: list[tuple[float, subprocess.CompletedProcess[str]]] = []  # (start time, result)
    running: dict[int, tuple[subprocess.Popen[str], tuple[str, ...], float]] = {}
    store_created_at: float | None = None
    turn = [0] * PROCESSES
    deadline = time.monotonic() + DURATION_S
    worker = None
    while running or time.monotonic() < deadline or min(turn) < 3:
        for index in range(PROCESSES):
            if index in running:
                proc, args, started = running[index]
                if proc.poll() is None:
                    continue
                out, err = proc.communicate()
                results.append((started, subprocess.CompletedProcess(args, proc.returncode, out, err)))
                if store_created_at is None and args[0] == "deploy" and proc.returncode == 0:
                    store_created_at = time.monotonic()
                del running[index]
            if time.monotonic() < deadline or turn[index] < 3:  # a slow machine still gets three rounds
                template = commands[(index + turn[index]) % len(commands)]
                turn[index] += 1
                args = tuple(part.format(index=index) for part in template)
                running[index] = (cluster.spawn(*args), args, time.monotonic())
        if worker is None and store_created_at is not None:  # a writer beside them, once the store exists
            worker = cluster.worker("busy-bee", "--concurrency", "2")
        time.sleep(0.02)

    assert len(results) >= PROCESSES * 3, len(results)
    assert store_created_at is not None
    for started, result in results:
        assert "database is locked" not in result.stdout + result.stderr, describe(result)
        if result.returncode == 2 and result.args[0] != "deploy" and started < store_created_at:
            assert "there is no state store" in result.stderr, describe(result)
            continue
        assert result.returncode == 0, describe(result)
    assert worker is not None and worker.stop() == 0
    assert "database is locked" not in worker.log_path.read_text()
    assert "internal_error" not in worker.log_path.read_text()
    queued = sum(1 for _, r in results if r.args[0] == "deploy")
    assert cluster.query("SELECT count(*) AS n FROM deployments")[0].n == queued
