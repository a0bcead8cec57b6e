"""Benchmark: cold start and first request, per flavor of the compatibility suite.

For each model of ``tests/compat/make_models.py`` (saved by MLflow here and now), the
orchestrate scoring server in the model's own virtualenv (``orchestrate serve``'s command, the
environment built beforehand and not timed) and ``mlflow models serve --env-manager local``
are each started ``--runs`` times, one at a time. Printed, not asserted: the time from process
start to the first ``/ping`` 200 (cold start) and the latency of the first request after it
(the model's first good request from ``compat_requests.json``), medians over the runs.

    python benchmarks/flavor_cold_start.py [--runs 3] [--models pyfunc_plain,onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
MAKE_MODELS = REPO / "tests" / "compat" / "make_models.py"
DEFAULT_MODELS = (
    "pyfunc_plain,pyfunc_artifacts_code,pyfunc_tensor,pyfunc_strings,pyfunc_no_signature,"
    "sklearn_pickle,sklearn_cloudpickle,sklearn_skops,sklearn_pipeline_columns,xgboost,lightgbm,"
    "statsmodels,onnx"
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_request(model: Path) -> dict[str, str]:
    requests_ = json.loads((model / "compat_requests.json").read_text())
    return next(r for r in requests_ if not r["name"].startswith("bad:"))


def measure(command: list[str], env: dict[str, str], port: int, request: dict[str, str],
            log: Path) -> tuple[float, float]:
    """(seconds from process start to /ping 200, seconds of the first request)."""
    with open(log, "wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{command[:4]} exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or listening while the worker still loads the model
            if time.perf_counter() - started > 300:
                raise SystemExit(f"{command[:4]} not ready in 300 s")
            time.sleep(0.01)
        cold = time.perf_counter() - started
        sent = time.perf_counter()
        answer = requests.post(url + "/invocations", data=request["body"].encode(),
                               headers={"Content-Type": request["content_type"]}, timeout=60)
        first = time.perf_counter() - sent
        if answer.status_code != 200:
            raise SystemExit(f"{command[:4]} answered {answer.status_code}: {answer.text[:500]}")
        return cold, first
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    args = parser.parse_args()
    from orchestrator.serving import scoring_command

    names = args.models.split(",")
    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    os.environ.setdefault("ORCHESTRATE_HOME", str(work / "home"))
    try:
        subprocess.run([sys.executable, str(MAKE_MODELS), str(work / "models"), *names], check=True,
                       capture_output=True)
        print(f"# {args.runs} run(s) each, one server at a time, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
        print("| flavor | orchestrate cold start s | orchestrate first request ms | "
              "mlflow cold start s | mlflow first request ms |")
        print("|---|---:|---:|---:|---:|")
        for name in names:
            model = work / "models" / name
            request = first_request(model)
            figures: dict[str, list[tuple[float, float]]] = {"orchestrate": [], "mlflow": []}
            for _ in range(args.runs):
                port = free_port()
                command, env = scoring_command(
                    str(model), ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                    env_manager="virtualenv", overrides=[], log=lambda line: None,
                )
                figures["orchestrate"].append(measure(command, env, port, request, work / "o.log"))
                port = free_port()
                mlflow_command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model),
                                  "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
                figures["mlflow"].append(measure(mlflow_command, dict(os.environ), port, request,
                                                 work / "m.log"))
            cells = []
            for server in ("orchestrate", "mlflow"):
                cold = statistics.median(c for c, _ in figures[server])
                first = statistics.median(f for _, f in figures[server])
                cells += [f"{cold:.2f}", f"{first * 1000:.1f}"]
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        print(f"# load average {os.getloadavg()[0]:.1f} at end")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
