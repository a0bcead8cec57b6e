"""Benchmark: `status` and `list` latency with 10,000 and 100,000 deployments in the store.

Seeds a migrated store with realistic volumes through SQLAlchemy Core bulk inserts (endpoints
with ~20 deployments each, 7 stage attempts, 2 resources and 16 events per deployment, plus one
quiet endpoint whose only deployment is the oldest), then
times the read commands two ways: the real `orchestrate` subprocess (wall time, includes
Python start-up and imports) and the same call in-process through `orchestrator.api.Client`.

    python benchmarks/core_status.py [--quick] [--sizes 10000,100000] [--pg-sizes N,...] [--no-pg]

Target (issue 2): status under 200 ms at 100,000 deployments. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import bench_env, median, ms, pg_database, print_table, run_cli, timed

DEPLOYMENTS_PER_ENDPOINT = 20
STAGES = ["validate", "build", "push", "create_endpoint", "health_check", "shift_traffic", "cleanup"]
CHUNK = 20_000


def seed(db_url: str, n_deployments: int) -> dict[str, Any]:
    """Fill a freshly migrated store; returns the names and ids the benchmark reads back."""
    from sqlalchemy import insert

    from orchestrator.store import Store
    from orchestrator.store.tables import Deployment, Endpoint, Event, Resource, StageAttempt

    store = Store(db_url, actor="bench")  # runs the migrations
    n_endpoints = max(1, n_deployments // DEPLOYMENTS_PER_ENDPOINT)
    quiet_id = n_endpoints + 1  # one old deployment, then nothing: its history is far back
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    example = {"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[5.1, 3.5, 1.4, 0.2]] * 4}}
    counts = {"endpoints": n_endpoints, "deployments": n_deployments, "stage_attempts": 0, "resources": 0,
              "events": 0}
    started = time.perf_counter()
    with store.engine.begin() as connection:
        connection.execute(insert(Endpoint), [
            {"id": e + 1, "name": f"model-{e:06d}", "target": "local", "config": {"workers": 1},
             "live_deployment_id": None, "fencing_token": DEPLOYMENTS_PER_ENDPOINT, "created_at": t0}
            for e in range(n_endpoints)
        ] + [{"id": quiet_id, "name": "model-quiet", "target": "local", "config": {"workers": 1},
              "live_deployment_id": None, "fencing_token": 1, "created_at": t0}])
    batches: dict[str, list[dict[str, Any]]] = {"d": [], "a": [], "r": [], "v": []}
    tables = {"d": Deployment, "a": StageAttempt, "r": Resource, "v": Event}
    attempt_id = resource_id = event_id = 0

    def flush(force: bool = False) -> None:
        with store.engine.begin() as connection:
            for key in ("d", "a", "r", "v"):  # parents first
                if batches[key] and (force or len(batches["d"]) >= CHUNK // 10):
                    connection.execute(insert(tables[key]), batches[key])
                    counts_key = {"a": "stage_attempts", "r": "resources", "v": "events"}.get(key)
                    if counts_key:
                        counts[counts_key] += len(batches[key])
                    batches[key] = []

    for d in range(n_deployments):
        deployment_id = d + 1
        endpoint_id = quiet_id if d == 0 else d % n_endpoints + 1
        created = t0 + dt.timedelta(seconds=30 * d)
        status = "failed" if d % 17 == 5 else "succeeded"
        batches["d"].append({
            "id": deployment_id, "endpoint_id": endpoint_id, "target": "local",
            "model_uri": f"/models/model-{endpoint_id}/v{d // n_endpoints}", "model_digest": f"{d:064x}",
            "config": {"host": "127.0.0.1", "port": 0, "workers": 1, "threads": 4, "startup_timeout": 120},
            "status": status, "current_stage": None if status == "succeeded" else "health_check",
            "error": None if status == "succeeded" else "health_check failed: server exited",
            "source_deployment_id": None, "previous_live_id": deployment_id - n_endpoints if d >= n_endpoints else None,
            "restart_stage": None, "cancel_requested": False, "actor": "bench", "created_at": created,
            "started_at": created, "finished_at": created + dt.timedelta(seconds=4),
        })
        outputs = {
            "validate": {"model_dir": f"/home/.orchestrate/models/{d:064x}", "python_version": "3.11.9",
                         "requirements": ["mlflow==3.17.2", "scikit-learn==1.5.2", "numpy==2.1.0"],
                         "input_example": example, "duration_s": 0.05},
            "build": {"env_path": "/home/.orchestrate/envs/0123456789abcdef0123", "env_key": "0123456789abcdef0123",
                      "env_reused": True, "installer": "uv", "server_path": "/home/.orchestrate/server/1",
                      "duration_s": 0.2},
            "push": {"skipped": "push does not apply to local"},
            "create_endpoint": {"pid": 4_000_000 + d % 100_000, "host": "127.0.0.1", "port": 20000 + endpoint_id % 30000,
                                "private_port": 40000, "log": f"/home/.orchestrate/logs/servers/{d}.log",
                                "pid_file": f"/home/.orchestrate/run/{d}.pid",
                                "url": f"http://127.0.0.1:{20000 + endpoint_id % 30000}", "duration_s": 0.01},
            "health_check": {"ready_s": 1.9, "predict_ms": 4.2, "predictions_shape": [4], "duration_s": 2.1},
            "shift_traffic": {"url": f"http://127.0.0.1:{20000 + endpoint_id % 30000}", "duration_s": 0.0},
            "cleanup": {"stopped": [], "duration_s": 0.3},
        }
        events = [("deployment_created", f"deployment {deployment_id} created")]
        for i, stage in enumerate(STAGES):
            attempt_id += 1
            skipped = stage == "push"
            failed = status == "failed" and stage == "health_check"
            batches["a"].append({
                "id": attempt_id, "deployment_id": deployment_id, "stage": stage, "attempt": 1,
                "status": "skipped" if skipped else ("failed" if failed else "succeeded"),
                "runner": "bench@host/pid:1/abcdef", "started_at": created + dt.timedelta(seconds=i),
                "finished_at": created + dt.timedelta(seconds=i + 1), "error_kind": "permanent" if failed else None,
                "error_class": "PermanentTargetError" if failed else None,
                "error_message": "server exited" if failed else None, "outputs": outputs[stage],
            })
            if skipped:
                events.append(("stage_skipped", f"{stage} skipped"))
            else:
                events += [("stage_started", f"{stage} attempt 1 started"),
                           ("stage_failed" if failed else "stage_succeeded", f"{stage} attempt 1")]
            if failed:
                break
        events.append(("traffic_shifted" if status == "succeeded" else "deployment_failed", "end"))
        events.append(("deployment_" + status, f"deployment {deployment_id} {status}"))
        for kind, name, state in (("virtualenv", "0123456789abcdef0123", "adopted"),
                                  ("process", f"model-{endpoint_id:06d}-{deployment_id}", "deleted")):
            resource_id += 1
            batches["r"].append({
                "id": resource_id, "endpoint_id": endpoint_id, "deployment_id": deployment_id,
                "stage": "build" if kind == "virtualenv" else "create_endpoint", "target": "local", "kind": kind,
                "name": name, "external_id": str(4_000_000 + d % 100_000), "state": state,
                "data": {"port": 20000 + endpoint_id % 30000}, "created_at": created, "updated_at": created,
            })
        for kind, message in events:
            event_id += 1
            batches["v"].append({
                "id": event_id, "time": created, "actor": "bench", "endpoint_id": endpoint_id,
                "deployment_id": deployment_id, "kind": kind, "message": message, "data": {},
            })
        if len(batches["d"]) >= CHUNK // 10:
            flush()
    flush(force=True)
    # The newest succeeded deployment of each endpoint is live.
    from sqlalchemy import text

    with store.engine.begin() as connection:
        connection.execute(text(
            "UPDATE endpoints SET live_deployment_id = (SELECT max(d.id) FROM deployments d "
            "WHERE d.endpoint_id = endpoints.id AND d.status = 'succeeded')"))
        if connection.dialect.name == "postgresql":
            for table in ("endpoints", "deployments", "stage_attempts", "resources", "events"):
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                        f"(SELECT max(id) FROM {table}))"))
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
    else:
        with store.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
    store.dispose()
    counts["seed_s"] = round(time.perf_counter() - started, 1)
    counts["endpoints"] += 1
    return {"counts": counts, "name": "model-000001", "deployment_id": n_deployments // 2}


def measure(db_url: str, home: Path, target: dict[str, Any], cli_runs: int, api_runs: int) -> list[list[str]]:
    from orchestrator.api import Client

    env = bench_env(home, db_url)
    client = Client(db_url=db_url)
    name, deployment_id = target["name"], target["deployment_id"]
    cases = [
        ("status NAME --json", ["status", name, "--json"], lambda: client.endpoint_status(name)),
        ("status ID --json", ["status", str(deployment_id), "--json"],
         lambda: client.deployment_record(deployment_id, describe=True)),
        ("list --json (50)", ["list", "--json"], lambda: client.list_deployments(limit=50)),
        ("status --json (all endpoints)", ["status", "--json"], client.list_endpoints),
        ("history NAME --json", ["history", name, "--json"], lambda: client.history(name)),
        ("history NAME --json (quiet endpoint)", ["history", "model-quiet", "--json"],
         lambda: client.history("model-quiet")),
    ]
    rows = []
    for label, args, call in cases:
        cli = [run_cli(args, env)[0] for _ in range(cli_runs + 1)][1:]
        api = timed(call, api_runs)
        rows.append([label, ms(median(cli)), ms(min(cli)), ms(median(api)), ms(max(api))])
    client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 deployments only, fewer runs")
    parser.add_argument("--sizes", default=None, help="comma-separated deployment counts (default 10000,100000)")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--pg-sizes", default=None, help="deployment counts on PostgreSQL (default: --sizes)")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10000" if args.quick else "10000,100000")).split(",")]
    cli_runs, api_runs = (3, 10) if args.quick else (7, 30)

    with tempfile.TemporaryDirectory(prefix="orchestrate-bench-status-") as tmp:
        home = Path(tmp)
        # The CLI's start-up floor: no database work at all.
        floor = [run_cli(["--help"], bench_env(home))[0] for _ in range(cli_runs + 1)][1:]
        print_table("CLI start-up (`orchestrate --help`, no database)", ["command", "median ms", "min ms"],
                    [["orchestrate --help", ms(median(floor)), ms(min(floor))]])
        backends: list[tuple[str, Any]] = [("sqlite", None)]
        if not args.no_pg:
            backends.append(("postgresql", "pg"))
        for backend, _ in backends:
            for size in (sizes if backend == "sqlite" or not args.pg_sizes
                         else [int(s) for s in args.pg_sizes.split(",")]):
                if backend == "sqlite":
                    url, drop = f"sqlite:///{home / f'state-{size}.db'}", None
                else:
                    made = pg_database(f"status{size}")
                    if made is None:
                        break
                    url, drop = made
                try:
                    target = seed(url, size)
                    counts = target["counts"]
                    rows = measure(url, home, target, cli_runs, api_runs)
                    print_table(
                        f"{backend}, {size:,} deployments ({counts['endpoints']:,} endpoints, "
                        f"{counts['stage_attempts']:,} attempts, {counts['resources']:,} resources, "
                        f"{counts['events']:,} events; seeded in {counts['seed_s']} s)",
                        ["command", "CLI median ms", "CLI min ms", "in-process median ms", "in-process max ms"],
                        rows,
                    )
                finally:
                    if drop:
                        drop()


if __name__ == "__main__":
    main()
