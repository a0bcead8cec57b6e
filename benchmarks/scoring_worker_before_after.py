"""Benchmark: the scoring worker before and after llhttp framing (issue 17), side by side.

The OLD server is the scoring package of another checkout (by default a git worktree of
fdfdcbf, the last commit with the hand-written HTTP/1.1 parser), run with its own directory
on PYTHONPATH; the NEW one is this checkout's. Both run at once, one worker each, on the
same model; each wrk run goes to one, then the other, for ``--rounds`` rounds, so background
load affects both alike. Printed, not asserted: requests/s, p50 and p99 of each, and the
ratios new/old. Uses wrk (Debian package ``wrk``), 127.0.0.1 only.

    git worktree add /tmp/old-scoring fdfdcbf
    flock /tmp/team/heavy.lock python benchmarks/scoring_worker_before_after.py

Models: the iris logistic regression (4 columns, ``dataframe_split``) and a Pipeline of
StandardScaler and LogisticRegression over the 13 float columns of scikit-learn's wine data
(``dataframe_records``); 1-row requests, wrk with 16 connections.

``--stall`` also measures issue 11's C10: the longest ``/ping`` wait while one large request
(``--stall-rows`` iris rows as ``dataframe_records``: 800,000, 83 MB, by default) is being answered.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import requests
import scoring_vs_mlflow  # the wrk runner and its parsing (this folder)

REPO_ROOT = Path(__file__).resolve().parents[1]
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
"""


@dataclass
class Model:
    name: str
    path: Path
    body: str  # one row


Result = scoring_vs_mlflow.Result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_models(root: Path) -> list[Model]:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris, load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y = load_iris(return_X_y=True, as_frame=True)
        lr = LogisticRegression(max_iter=1000).fit(X, y)
        mlflow.sklearn.save_model(lr, root / "iris", signature=infer_signature(X, lr.predict(X)))
        Xw, yw = load_wine(return_X_y=True, as_frame=True)
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(Xw, yw)
        mlflow.sklearn.save_model(
            pipe, root / "wine", signature=infer_signature(Xw, pipe.predict(Xw))
        )
    iris_row = X.iloc[0].tolist()
    return [
        Model(
            "iris (4 columns, split)",
            root / "iris",
            json.dumps({"dataframe_split": {"columns": list(X.columns), "data": [iris_row]}}),
        ),
        Model(
            "wine pipeline (13 columns, records)",
            root / "wine",
            json.dumps({"dataframe_records": [dict(zip(Xw.columns, Xw.iloc[0].tolist()))]}),
        ),
    ]


class Server:
    def __init__(self, name: str, tree: Path, model: Path, log: Path, workers: int = 1) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scoring", "serve", str(model), "--port", str(self.port)]
                + ["--workers", str(workers)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tree,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(tree)},
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"{name} exited {self.proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                if requests.get(self.url + "/ping", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{name} not ready in 120 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wrk(url: str, script: Path, duration: float) -> Result:
    """wrk with 16 connections against ``url``'s server, as scoring_vs_mlflow.py runs and reads it."""
    return scoring_vs_mlflow.wrk(url.removesuffix("/invocations"), script, 16, duration)


def ping_stall(server: Server, body: bytes, fresh: bool = False) -> tuple[float, float, int]:
    """(longest /ping wait in s, time the big request took in s, its status) while one
    large request is answered; /ping is asked every 20 ms on a kept-alive connection, or on
    a new connection each time (``fresh``: as kubelet and load balancers probe)."""
    done = threading.Event()
    outcome: dict[str, float] = {}

    def big() -> None:
        started = time.monotonic()
        response = requests.post(
            server.url + "/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=300,
        )
        outcome["seconds"] = time.monotonic() - started
        outcome["status"] = response.status_code
        done.set()

    longest = 0.0
    with requests.Session() as session:
        session.get(server.url + "/ping", timeout=10)
        thread = threading.Thread(target=big)
        thread.start()
        while not done.is_set():
            started = time.monotonic()
            if fresh:
                requests.get(server.url + "/ping", timeout=60)
            else:
                session.get(server.url + "/ping", timeout=60)
            longest = max(longest, time.monotonic() - started)
            time.sleep(0.02)
        thread.join()
    return longest, outcome["seconds"], int(outcome["status"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, default=Path("/tmp/old-scoring"), help="old checkout")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="old/new alternations per model")
    parser.add_argument("--stall", action="store_true", help="also measure /ping during a big body")
    parser.add_argument("--stall-rows", type=int, default=800_000)
    parser.add_argument("--stall-only", action="store_true", help="skip the wrk runs")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    if not (args.old / "scoring" / "_worker.py").exists():
        raise SystemExit(f"no old checkout at {args.old} (git worktree add {args.old} fdfdcbf)")
    work = Path(tempfile.mkdtemp(prefix="scoring-before-after-"))
    trees = {"old": args.old.resolve(), "new": REPO_ROOT}
    try:
        models = make_models(work)
        print(
            f"# 1 worker each, wrk -t1 -c16 {args.duration:g} s per run, {args.rounds} rounds, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
            flush=True,
        )
        print("| model | server | req/s | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|---|")
        summary = []
        for model in [] if args.stall_only else models:
            script = work / "post.lua"
            script.write_text(LUA.format(body=model.body))
            servers = {
                name: Server(name, tree, model.path, work / f"{name}.log")
                for name, tree in trees.items()
            }
            results: dict[str, list[Result]] = {name: [] for name in servers}
            try:
                for server in servers.values():  # warm-up
                    wrk(server.url + "/invocations", script, 2)
                for _ in range(args.rounds):
                    for name, server in servers.items():
                        result = wrk(server.url + "/invocations", script, args.duration)
                        results[name].append(result)
                        print(
                            f"| {model.name} | {name} | {result.rps:.0f} | {result.p50_ms:.2f} "
                            f"| {result.p99_ms:.2f} | {result.errors} |",
                            flush=True,
                        )
            finally:
                for server in servers.values():
                    server.stop()
            best = {name: max(rs, key=lambda r: r.rps) for name, rs in results.items()}
            mean_rps = {name: sum(r.rps for r in rs) / len(rs) for name, rs in results.items()}
            mean_p99 = {name: sum(r.p99_ms for r in rs) / len(rs) for name, rs in results.items()}
            summary.append(
                (
                    model.name,
                    mean_rps["new"] / mean_rps["old"],
                    mean_p99["new"] / mean_p99["old"],
                    best["new"].rps / best["old"].rps,
                )
            )
        if summary:
            print("\n| model | req/s new/old (mean) | p99 new/old (mean) | req/s new/old (best) |")
            print("|---|---|---|---|")
        for name, rps, p99, best_rps in summary:
            print(f"| {name} | {rps:.3f} | {p99:.3f} | {best_rps:.3f} |")
        if args.stall:
            iris = models[0]
            row = json.loads(iris.body)["dataframe_split"]
            record = dict(zip(row["columns"], row["data"][0]))
            body = json.dumps({"dataframe_records": [record] * args.stall_rows}).encode()
            print(f"\n/ping while one {len(body) / 1e6:.0f} MB, {args.stall_rows}-row request runs")
            print("| server | workers | /ping asked on | longest /ping s | big request s | big request status |")
            print("|---|---|---|---|---|---|")
            for workers, fresh in ((1, False), (2, True)):
                for name, tree in trees.items():
                    server = Server(name, tree, iris.path, work / f"{name}-stall.log", workers)
                    try:
                        longest, seconds, status = ping_stall(server, body, fresh)
                    finally:
                        server.stop()
                    how = "new connections" if fresh else "one kept-alive connection"
                    print(
                        f"| {name} | {workers} | {how} | {longest:.2f} | {seconds:.2f} | {status} |",
                        flush=True,
                    )
        print(f"\n# load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
