"""Benchmark: `deploy models:/NAME/VERSION` on the local target, split into resolve + download
and the rest, cold (no snapshot of that version here) and warm (snapshot present).

A real `mlflow server` (ORCHESTRATE_TEST_MLFLOW_URI, which scripts/test.sh starts; else one is
started here on a free port) gets the example model as a registered version, logged through the
MLflow client. Each run deploys it in-process through `orchestrator.api.Client`, timing the call to
`orchestrator.model.uri.resolve` (ask the registry, download into staging, read, snapshot) and
the whole deploy; "rest" is the difference (record, validate, build — the virtualenv is already
cached —, start the server, health check, shift, cleanup). Cold: a fresh ORCHESTRATE_HOME per
run. Warm: the same home, the version already downloaded (no second download), `force=True`.
Both use one virtualenv cache, built before timing starts. Every endpoint is deleted at the end.

    python benchmarks/model_uri_deploy.py [--runs N]

Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from _common import REPO, median, print_table


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _tracking_server(scratch: Path) -> tuple[str, subprocess.Popen[bytes] | None]:
    url = os.environ.get("ORCHESTRATE_TEST_MLFLOW_URI")
    if url and _answers(url):
        return url, None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{scratch / 'mlflow.db'}", "--artifacts-destination",
         str(scratch / "artifacts"), "--serve-artifacts"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while not _answers(url):
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the mlflow server did not start")
        time.sleep(0.5)
    return url, server


def _register(url: str, model: Path) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiment = client.create_experiment(f"bench-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment).info.run_id
    logged = client.create_logged_model(experiment, name="model", source_run_id=run_id)
    client.log_model_artifacts(logged.model_id, str(model))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.set_terminated(run_id)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"models:/{logged.model_id}", run_id=run_id,
                                          model_id=logged.model_id)
    return f"models:/{name}/{version.version}"


def _deploy(home: Path, uri: str, name: str, force: bool) -> tuple[float, float, float]:
    """(total, resolve + download, snapshot) seconds of one in-process deploy."""
    os.environ["ORCHESTRATE_HOME"] = str(home)
    from orchestrator import api
    from orchestrator.model import uri as model_uri

    timings: list[model_uri.ResolvedModel] = []
    resolve = model_uri.resolve

    def timed_resolve(uri: str, snapshot_dir: Path, **kwargs: object) -> model_uri.ResolvedModel:
        resolved = resolve(uri, snapshot_dir, **kwargs)  # type: ignore[arg-type]
        timings.append(resolved)
        return resolved

    api.model_uri_module.resolve = timed_resolve  # type: ignore[assignment]
    client = api.Client()
    try:
        started = time.perf_counter()
        deployment_id = client.deploy(uri, name=name, target="local", force=force)
        total = time.perf_counter() - started
        if client.deployment_record(deployment_id).status != "succeeded":
            raise SystemExit(f"deployment {deployment_id} did not succeed")
    finally:
        client.close()
        api.model_uri_module.resolve = resolve  # type: ignore[assignment]
    return total, timings[0].resolve_s, timings[0].snapshot_s


def _delete(home: Path, name: str) -> None:
    os.environ["ORCHESTRATE_HOME"] = str(home)
    from orchestrator import api

    client = api.Client()
    try:
        client.delete(name)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-model-uri-"))
    os.environ.setdefault("ORCHESTRATE_ENVS_DIR", str(Path(tempfile.gettempdir()) / "orchestrate-test-envs"))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    server = None
    deployed: list[tuple[Path, str]] = []
    try:
        model = scratch / "iris"
        subprocess.run([sys.executable, str(REPO / "examples" / "train_model.py"), str(model)], check=True,
                       capture_output=True)
        url, server = _tracking_server(scratch)
        os.environ["MLFLOW_TRACKING_URI"] = url
        uri = _register(url, model)
        print(f"tracking server {url}; model {uri}; virtualenvs in {os.environ['ORCHESTRATE_ENVS_DIR']}")
        # Untimed: build the virtualenv once, and import MLflow, so neither lands in a figure.
        _deploy(scratch / "home-prime", uri, "bench-prime", force=False)
        deployed.append((scratch / "home-prime", "bench-prime"))

        rows = []
        warm_home = scratch / "home-warm"
        for run in range(args.runs):
            home = scratch / f"home-cold-{run}"
            total, resolve_s, snapshot_s = _deploy(home, uri, f"bench-cold-{run}", force=False)
            deployed.append((home, f"bench-cold-{run}"))
            rows.append(("cold", run + 1, total, resolve_s, snapshot_s))
        _deploy(warm_home, uri, "bench-warm", force=False)  # makes the snapshot the warm runs find
        deployed.append((warm_home, "bench-warm"))
        for run in range(args.runs):
            total, resolve_s, snapshot_s = _deploy(warm_home, uri, "bench-warm", force=True)
            rows.append(("warm", run + 1, total, resolve_s, snapshot_s))

        print_table("deploy models:/… on local, per run (seconds)",
                    ["run", "#", "total", "resolve + download", "read + snapshot", "rest"],
                    [(kind, n, f"{t:.2f}", f"{r:.2f}", f"{s:.2f}", f"{t - r - s:.2f}") for kind, n, t, r, s in rows])
        summary = []
        for kind in ("cold", "warm"):
            chosen = [row for row in rows if row[0] == kind]
            summary.append((kind, f"{median([r[2] for r in chosen]):.2f}", f"{median([r[3] for r in chosen]):.2f}",
                            f"{median([r[4] for r in chosen]):.2f}",
                            f"{median([r[2] - r[3] - r[4] for r in chosen]):.2f}"))
        print_table(f"medians of {args.runs} runs (seconds)",
                    ["run", "total", "resolve + download", "read + snapshot", "rest"], summary)
    finally:
        for home, name in deployed:
            try:
                _delete(home, name)
            except Exception as exc:  # noqa: BLE001 - report and go on deleting the others
                print(f"could not delete {name}: {exc}", file=sys.stderr)
        if server is not None:
            os.killpg(server.pid, 15)
            server.wait()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
