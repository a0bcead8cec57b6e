"""Benchmark: deployments per second through `orchestrate worker` processes on PostgreSQL.

The noop target returns at once from every stage (sleep_s=0), so a deployment costs only what
orchestrate does: the claim (`SELECT ... FOR UPDATE SKIP LOCKED` and the lease), seven stage
attempts with their fenced writes and events, the heartbeat thread, the release. For 1, 2, 4
and 8 worker processes (`--concurrency 1` each), a fresh database gets D deployments queued over
D/2 endpoints, the workers start with `--once`, and the figures come from the database and the
workers' JSON logs:

- throughput: deployments / (last finish - first claim);
- claim latency: in each worker, from the moment it is idle (started, or finished the previous
  deployment) to its next `claimed` line: the claim queries and their commit, under contention;
- overhead per deployment: busy worker-time per deployment (claim to finished).

    python benchmarks/workers_throughput.py [--quick] [--deployments 200] [--workers 1,2,4,8]

Needs ORCHESTRATE_TEST_PG_URL. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import bench_env, median, ms, pg_database, print_table


def _model(directory: Path) -> Path:
    model = directory / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n")
    (model / "requirements.txt").write_text("scikit-learn\n")
    return model


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _queue(db_url: str, home: Path, model: Path, count: int) -> None:
    os.environ["ORCHESTRATE_HOME"] = str(home)
    from orchestrator.api import Client

    client = Client(db_url=db_url)
    try:
        endpoints = max(1, count // 2)
        for index in range(count):
            client.deploy(str(model), name=f"bench-{index % endpoints}", target="noop", config={"sleep_s": 0},
                          detach=True)
    finally:
        client.close()


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def one_run(workers: int, count: int, model: Path) -> dict[str, float]:
    created = pg_database(f"w{workers}")
    if created is None:
        raise SystemExit("PostgreSQL unavailable: set ORCHESTRATE_TEST_PG_URL")
    db_url, drop = created
    try:
        with tempfile.TemporaryDirectory() as scratch:
            home = Path(scratch)
            _queue(db_url, home, model, count)
            env = bench_env(home, db_url)
            logs = [home / f"w{i}.jsonl" for i in range(workers)]
            procs = []
            for i, log_path in enumerate(logs):
                with log_path.open("wb") as log:
                    procs.append(subprocess.Popen(
                        ["orchestrate", "worker", "--once", "--concurrency", "1", "--poll-interval", "0.05",
                         "--name", f"w{i}"], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL))
            for proc in procs:
                if proc.wait() != 0:
                    raise SystemExit(f"a worker exited {proc.returncode}; see its log")

            claims: list[float] = []
            busy: list[float] = []
            first_claim: dt.datetime | None = None
            last_finish: dt.datetime | None = None
            for log_path in logs:
                idle_since: dt.datetime | None = None
                claimed_at: dt.datetime | None = None
                for line in log_path.read_text().splitlines():
                    if not line.startswith("{"):
                        continue
                    entry = json.loads(line)
                    moment = _time(entry["time"])
                    if entry["event"] in ("started", "finished"):
                        if entry["event"] == "finished" and claimed_at is not None:
                            busy.append((moment - claimed_at).total_seconds())
                            last_finish = max(last_finish or moment, moment)
                        idle_since = moment
                    elif entry["event"] == "claimed":
                        if idle_since is not None:
                            claims.append((moment - idle_since).total_seconds())
                        claimed_at = moment
                        first_claim = min(first_claim or moment, moment)
                        idle_since = None
            from sqlalchemy import create_engine, text

            engine = create_engine(db_url)
            with engine.connect() as connection:
                statuses = dict(connection.execute(
                    text("SELECT status, count(*) FROM deployments GROUP BY status")).all())
            engine.dispose()
            if statuses != {"succeeded": count}:
                raise SystemExit(f"not every deployment succeeded: {statuses}")
            assert first_claim is not None and last_finish is not None
            span = (last_finish - first_claim).total_seconds()
            return {"throughput": count / span, "span": span, "claim_p50": median(claims),
                    "claim_p99": _p99(claims), "busy_median": median(busy)}
    finally:
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 deployments per run")
    parser.add_argument("--deployments", type=int, default=None, help="deployments per run (default 200)")
    parser.add_argument("--workers", default="1,2,4,8", help="worker process counts to measure")
    args = parser.parse_args()
    count = args.deployments or (40 if args.quick else 200)
    counts = [int(n) for n in args.workers.split(",")]
    print(f"{count} deployments (noop, sleep_s=0) over {max(1, count // 2)} endpoints per run; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    rows = []
    baseline = None
    with tempfile.TemporaryDirectory() as scratch:
        model = _model(Path(scratch))
        for workers in counts:
            started = time.monotonic()
            result = one_run(workers, count, model)
            baseline = baseline or result["throughput"] / workers
            rows.append([workers, f"{result['throughput']:.1f}", f"{result['throughput'] / baseline:.2f}x",
                         ms(result["claim_p50"]), ms(result["claim_p99"]), ms(result["busy_median"])])
            print(f"  {workers} worker(s): {result['span']:.1f}s of work, {time.monotonic() - started:.1f}s "
                  "with set-up", file=sys.stderr)
    print_table("Workers on PostgreSQL (noop target)",
                ["workers", "deployments/s", "speed-up", "claim p50 ms", "claim p99 ms",
                 "worker-time per deployment ms"], rows)


if __name__ == "__main__":
    main()
