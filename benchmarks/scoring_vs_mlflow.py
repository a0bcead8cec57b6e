"""Benchmark: the orchestrate scoring server against ``mlflow models serve --env-manager local``.

Same machine, same model, same payload, same number of workers, measured side by side in
one run: both servers run at once and each load configuration is sent to one, then the other,
so background load affects both alike. Uses wrk (Debian package ``wrk``), 127.0.0.1 only.

    python benchmarks/scoring_vs_mlflow.py [--duration 8] [--workers 1] [--markdown]

Models: the iris logistic regression, a 100-tree random forest on 20 features (both
``dataframe_split``), and a Pipeline of StandardScaler and LogisticRegression over the 13
float columns of scikit-learn's wine data set (``dataframe_records``, the model whose own
predict dominates); all scikit-learn, saved by mlflow with a column signature. Loads: 1 and
16 connections, payloads of 1 and 100 rows. Printed, not asserted: requests/s, p50 and p99 of
both servers and their ratios, cold start (launch to the first ``/ping`` 200), resident memory
per serving process, server CPU time per request, and the model's own time per call: the
payload made a DataFrame as MLflow does (``DataFrame(data, columns=...)`` for split,
``DataFrame.from_records`` for records) plus ``predict``, and the requests/s that allows one
core ("bound"), beside which each server's throughput is printed as a share.

    python benchmarks/scoring_vs_mlflow.py --models wine --rows 1 --connections 16
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BenchModel:
    path: Path
    columns: list[str]
    rows: list[list[float]]  # sample rows, repeated to make larger payloads
    orient: str  # the payload's format: "split" (dataframe_split) or "records"

    def body(self, n_rows: int) -> str:
        data = (self.rows * 100)[:n_rows]
        if self.orient == "records":
            return json.dumps({"dataframe_records": [dict(zip(self.columns, r)) for r in data]})
        return json.dumps({"dataframe_split": {"columns": self.columns, "data": data}})


def make_models(root: Path, wanted: list[str]) -> dict[str, BenchModel]:
    """The benchmark models whose short name (iris, forest, wine) is in ``wanted``."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris, load_wine, make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y = load_iris(return_X_y=True, as_frame=True)
        lr = LogisticRegression(max_iter=1000).fit(X, y)
        path = root / "iris"
        mlflow.sklearn.save_model(lr, path, signature=infer_signature(X, lr.predict(X)))
        models["iris logistic regression"] = BenchModel(
            path, list(X.columns), X.to_numpy().tolist(), "split"
        )

        Xw, yw = load_wine(return_X_y=True, as_frame=True)
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(Xw, yw)
        path = root / "wine"
        mlflow.sklearn.save_model(pipeline, path, signature=infer_signature(Xw, pipeline.predict(Xw)))
        models["wine pipeline (scaler + logistic regression, 13 columns)"] = BenchModel(
            path, list(Xw.columns), Xw.to_numpy().tolist(), "records"
        )

        Xf, yf = make_classification(n_samples=2000, n_features=20, random_state=0)
        frame = pd.DataFrame(Xf, columns=[f"f{i}" for i in range(20)])
        rf = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(frame, yf)
        path = root / "forest"
        mlflow.sklearn.save_model(
            rf,
            path,
            signature=infer_signature(frame, rf.predict(frame)),
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
        rng = np.random.default_rng(0)
        models["random forest (100 trees, 20 features)"] = BenchModel(
            path, list(frame.columns), rng.normal(size=(200, 20)).round(6).tolist(), "split"
        )
    return {
        name: model
        for name, model in models.items()
        if any(name.startswith(w) or w in name for w in wanted)
    }


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    cold_start: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serving_processes(self) -> list[psutil.Process]:
        """The processes that answer requests: the leaves of the process tree."""
        root = psutil.Process(self.proc.pid)
        tree = [root, *root.children(recursive=True)]
        return [p for p in tree if not p.children()]

    def rss_mb(self) -> tuple[float, float]:
        """(mean RSS of a serving process, RSS of the whole tree), in MB."""
        root = psutil.Process(self.proc.pid)
        tree = [root, *root.children(recursive=True)]
        leaves = self.serving_processes()
        per = sum(p.memory_info().rss for p in leaves) / max(len(leaves), 1) / 2**20
        return per, sum(p.memory_info().rss for p in tree) / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start(name: str, cmd: list[str], port: int, log: Path) -> Server:
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    deadline = t0 + 120
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return Server(name, proc, port, time.perf_counter() - t0)
        except requests.ConnectionError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"{name} not ready in 120 s")


LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float = 0.0  # server CPU time (all its processes) per request


def tree_cpu_seconds(server: Server) -> float:
    root = psutil.Process(server.proc.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def model_ms(model: BenchModel, n_rows: int) -> float:
    """Median CPU time per call of the model's own work on the payload: the decoded JSON made
    a DataFrame the way MLflow makes it, then the bare estimator's predict. What no server can
    go below; 1000 / this is the bound on requests/s for one core. CPU time (of the whole
    process, BLAS threads included), not wall time: other jobs on the machine stretch the wall
    time of a call, not the work it needs, and the servers' figure beside it is CPU time too."""
    import mlflow.pyfunc
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = mlflow.pyfunc.load_model(str(model.path))._model_impl.sklearn_model
    payload = json.loads(model.body(n_rows))
    if model.orient == "records":
        records = payload["dataframe_records"]

        def frame() -> Any:
            return pd.DataFrame.from_records(records)
    else:
        split = payload["dataframe_split"]

        def frame() -> Any:
            return pd.DataFrame(split["data"], columns=split["columns"])

    times = []
    for _ in range(20):  # batches: one call is below the CPU clock's useful resolution
        t0 = time.process_time()
        for _ in range(25):
            estimator.predict(frame())
        times.append((time.process_time() - t0) / 25)
    return sorted(times)[len(times) // 2] * 1000


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url: str, script: Path, connections: int, duration: float) -> Result:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            "-s",
            str(script),
            url + "/invocations",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return Result(rps, p50, p99, errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=1, help="workers for both servers")
    parser.add_argument("--connections", default="1,16")
    parser.add_argument("--rows", default="1,100")
    parser.add_argument("--models", default="iris,forest,wine", help="iris, forest, wine")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    import mlflow

    connections = [int(c) for c in args.connections.split(",")]
    row_counts = [int(r) for r in args.rows.split(",")]
    work = Path(tempfile.mkdtemp(prefix="scoring-bench-"))
    try:
        models = make_models(work, args.models.split(","))
        print(
            f"# mlflow {mlflow.__version__}, {args.workers} worker(s) each, {os.cpu_count()} CPUs, "
            f"wrk -t1 {args.duration:g} s per run, load average {os.getloadavg()[0]:.1f} at start",
            flush=True,
        )
        rows_out: list[dict[str, Any]] = []
        starts: list[dict[str, Any]] = []
        for model_name, model in models.items():
            path = model.path
            servers: dict[str, Server] = {}
            try:
                port = free_port()
                servers["orchestrate"] = start(
                    "orchestrate",
                    [
                        sys.executable,
                        "-m",
                        "scoring",
                        "serve",
                        str(path),
                        "--port",
                        str(port),
                        "--workers",
                        str(args.workers),
                    ],  # access log on, as uvicorn's is for mlflow
                    port,
                    work / "orchestrate.log",
                )
                port = free_port()
                servers["mlflow"] = start(
                    "mlflow",
                    [
                        sys.executable,
                        "-m",
                        "mlflow",
                        "models",
                        "serve",
                        "-m",
                        str(path),
                        "--env-manager",
                        "local",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "-w",
                        str(args.workers),
                    ],
                    port,
                    work / "mlflow.log",
                )
                for server in servers.values():
                    per, total = server.rss_mb()
                    starts.append(
                        {
                            "model": model_name,
                            "server": server.name,
                            "cold_start_s": server.cold_start,
                            "rss_per_worker_mb": per,
                            "rss_total_mb": total,
                        }
                    )
                for n_rows in row_counts:
                    body = model.body(n_rows)
                    script = work / f"post-{n_rows}.lua"
                    script.write_text(LUA.format(body=body))
                    answers = [
                        requests.post(
                            s.url + "/invocations",
                            data=body,
                            timeout=30,
                            headers={"Content-Type": "application/json"},
                        ).json()
                        for s in servers.values()
                    ]
                    if answers[0] != answers[1]:
                        raise SystemExit(f"different predictions for {model_name}: {answers}")
                    for s in servers.values():  # warm up
                        wrk(s.url, script, 4, 1)
                    alone = model_ms(model, n_rows)
                    bound = 1000 / alone
                    for n_conn in connections:
                        result = {}
                        for s in servers.values():
                            cpu0 = tree_cpu_seconds(s)
                            r = wrk(s.url, script, n_conn, args.duration)
                            r.cpu_ms = (
                                (tree_cpu_seconds(s) - cpu0) * 1000 / max(r.rps * args.duration, 1)
                            )
                            result[s.name] = r
                        row = {
                            "model": model_name,
                            "rows": n_rows,
                            "connections": n_conn,
                            "model_ms": alone,
                            "orient": model.orient,
                            **{f"{k}": v for k, v in result.items()},
                        }
                        rows_out.append(row)
                        ours, theirs = result["orchestrate"], result["mlflow"]
                        print(
                            f"{model_name}, {n_rows} row(s), {n_conn} conn: "
                            f"orchestrate {ours.rps:.0f} req/s p50 {ours.p50_ms:.2f} ms "
                            f"p99 {ours.p99_ms:.2f} ms | mlflow {theirs.rps:.0f} req/s "
                            f"p50 {theirs.p50_ms:.2f} ms p99 {theirs.p99_ms:.2f} ms | "
                            f"{ours.rps / theirs.rps:.1f}x throughput, "
                            f"p99 {ours.p99_ms / theirs.p99_ms:.2f} of mlflow's | CPU/request "
                            f"{ours.cpu_ms:.2f} vs {theirs.cpu_ms:.2f} ms | model alone "
                            f"{alone:.3f} ms CPU = bound {bound:.0f} req/s: orchestrate "
                            f"{ours.rps / bound:.0%}, mlflow {theirs.rps / bound:.0%} of it; "
                            f"by CPU per request {alone / ours.cpu_ms:.0%} and "
                            f"{alone / theirs.cpu_ms:.0%} (server's own share "
                            f"{ours.cpu_ms - alone:.2f} and {theirs.cpu_ms - alone:.2f} ms)"
                            + (
                                f" | ERRORS {ours.errors}/{theirs.errors}"
                                if ours.errors or theirs.errors
                                else ""
                            ),
                            flush=True,
                        )
            finally:
                for server in servers.values():
                    server.stop()
        print()
        if args.markdown:
            print(
                "| model | payload | rows | conns | orchestrate req/s | mlflow req/s | ratio | "
                "orchestrate p50 / p99 ms | mlflow p50 / p99 ms | p99 ratio | "
                "CPU ms/request orchestrate / mlflow | model alone CPU ms | bound req/s | "
                "orchestrate / mlflow share of bound | by CPU per request |"
            )
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in rows_out:
                o, m = r["orchestrate"], r["mlflow"]
                bound = 1000 / r["model_ms"]
                print(
                    f"| {r['model']} | {r['orient']} | {r['rows']} | {r['connections']} | "
                    f"{o.rps:.0f} | {m.rps:.0f} | {o.rps / m.rps:.1f}x | "
                    f"{o.p50_ms:.2f} / {o.p99_ms:.2f} | {m.p50_ms:.2f} / {m.p99_ms:.2f} | "
                    f"{o.p99_ms / m.p99_ms:.2f} | {o.cpu_ms:.2f} / {m.cpu_ms:.2f} | "
                    f"{r['model_ms']:.3f} | {bound:.0f} | {o.rps / bound:.0%} / {m.rps / bound:.0%} | "
                    f"{r['model_ms'] / o.cpu_ms:.0%} / {r['model_ms'] / m.cpu_ms:.0%} |"
                )
            print()
            print("| model | server | cold start s | RSS per serving process MB | RSS total MB |")
            print("|---|---|---:|---:|---:|")
            for s in starts:
                print(
                    f"| {s['model']} | {s['server']} | {s['cold_start_s']:.2f} | "
                    f"{s['rss_per_worker_mb']:.0f} | {s['rss_total_mb']:.0f} |"
                )
        else:
            for s in starts:
                print(
                    f"{s['model']}: {s['server']} cold start {s['cold_start_s']:.2f} s, "
                    f"{s['rss_per_worker_mb']:.0f} MB per serving process, "
                    f"{s['rss_total_mb']:.0f} MB in all"
                )
        print(f"# load average {os.getloadavg()[0]:.1f} at end")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
