"""Benchmark: the orchestrator's own overhead per deployment, with the `noop` target.

Every stage of the noop target returns at once (sleep_s=0), so a deployment's wall time is
what orchestrate itself costs: reading and hashing the model, the store transactions of seven
stage attempts and their events, the lease and its heartbeat thread. Measured in-process
through `orchestrator.api.Client` (redeploys of one endpoint), and for a few deployments
through the real `orchestrate deploy` subprocess to show the process start cost.

    python benchmarks/core_overhead.py [--quick] [--n 200] [--no-pg]

Target (issue 2): overhead under 50 ms per deployment. Redeploys pass --force: an unchanged
redeploy is a no-op (nothing recorded), which would time nothing. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, bench_env, median, ms, p90, pg_database, print_table, run_cli


def in_process(db_url: str, home: Path, model: Path, n: int) -> tuple[list[float], list[float], dict[str, float]]:
    os.environ["ORCHESTRATE_HOME"] = str(home)
    from orchestrator.api import Client

    client = Client(db_url=db_url)
    client.deploy(str(model), name="bench-warmup", target="noop", config={"sleep_s": 0})  # imports, caches
    samples, cpu = [], []
    for _ in range(n):
        started, started_cpu = time.perf_counter(), time.process_time()
        client.deploy(str(model), name="bench-noop", target="noop", config={"sleep_s": 0}, force=True)
        samples.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    record = client.deployment_record(client.list_deployments(limit=1)[0].id)
    stages = {a.stage: a.outputs.get("duration_s") or 0.0 for a in record.attempts or ()}
    statuses = {row.status for row in client.list_deployments(limit=n)}
    client.close()
    if statuses != {"succeeded"}:
        raise SystemExit(f"some benchmark deployments did not succeed: {statuses}")
    return samples, cpu, stages


def via_cli(db_url: str, home: Path, model: Path, n: int) -> list[float]:
    env = bench_env(home, db_url)
    run_cli(["deploy", str(model), "--target", "noop", "--name", "bench-cli", "-C", "sleep_s=0"], env)
    redeploy = ["deploy", str(model), "--target", "noop", "--name", "bench-cli", "-C", "sleep_s=0", "--force"]
    return [run_cli(redeploy, env)[0] for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 deployments in-process, 2 through the CLI")
    parser.add_argument("--n", type=int, default=None, help="in-process deployments per database (default 200)")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args()
    n = args.n or (30 if args.quick else 200)
    n_cli = 2 if args.quick else 5

    rows = []
    stage_rows = []
    with tempfile.TemporaryDirectory(prefix="orchestrate-bench-overhead-") as tmp:
        tmpdir = Path(tmp)
        model = tmpdir / "model"
        subprocess.run([sys.executable, str(REPO / "examples" / "train_model.py"), str(model)], check=True,
                       capture_output=True)
        backends = [("sqlite", f"sqlite:///{tmpdir / 'sqlite-home' / 'state.db'}", None)]
        if not args.no_pg:
            made = pg_database("overhead")
            if made:
                backends.append(("postgresql", made[0], made[1]))
        for backend, url, drop in backends:
            home = tmpdir / f"{backend}-home"
            home.mkdir(exist_ok=True)
            try:
                # Each measurement in its own interpreter, so one's imports do not flatter the other.
                code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r});"
                        f"import core_overhead as b, pathlib as p;"
                        f"s, c, st = b.in_process({url!r}, p.Path({str(home)!r}), p.Path({str(model)!r}), {n});"
                        f"print(json.dumps([s, c, st]))")
                out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                     env=bench_env(home))
                import json

                samples, cpu, stages = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append([backend, "in-process Client.deploy", len(samples), ms(median(samples)), ms(p90(samples)),
                             ms(min(samples)), ms(max(samples)), ms(median(cpu))])
                stage_rows.append([backend] + [ms(stages.get(s, 0.0)) for s in
                                               ("validate", "build", "push", "create_endpoint", "health_check",
                                                "shift_traffic", "cleanup")])
                cli = via_cli(url, home, model, n_cli)
                rows.append([backend, "`orchestrate deploy` subprocess", len(cli), ms(median(cli)), ms(p90(cli)),
                             ms(min(cli)), ms(max(cli)), "-"])
            finally:
                if drop:
                    drop()
        floor = [run_cli(["--help"], bench_env(tmpdir))[0] for _ in range(n_cli + 1)][1:]
        rows.append(["-", "`orchestrate --help` (start-up floor)", len(floor), ms(median(floor)), ms(p90(floor)),
                     ms(min(floor)), ms(max(floor)), "-"])
    print_table("Orchestrator overhead per noop deployment (7 stages, sleep_s=0), wall time",
                ["store", "how", "n", "median ms", "p90 ms", "min ms", "max ms", "CPU median ms"], rows)
    print(f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; wall times grow with "
          f"contention, the client's CPU time much less)")
    print_table("Stage durations recorded for the last in-process deployment (attempts[].outputs.duration_s)",
                ["store", "validate", "build", "push", "create_endpoint", "health_check", "shift_traffic",
                 "cleanup"], stage_rows)


if __name__ == "__main__":
    main()
