"""A tracking server that is down before, or goes down during, a model's download: a clear error
naming the URI, exit 2, nothing recorded and no partial snapshot; once it is back, the same
command deploys. The server is a private `mlflow server`, really stopped (SIGKILL)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from _executables import orchestrate_executable
from _mlflow_helpers import Cli, CuttingProxy, PrivateServer, Registry, describe, log_model_dir

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

BIG_FILE_BYTES = 48 << 20  # long enough a download to stop the server in the middle of it


def _staged_bytes(models: Path) -> int:
    total = 0
    for staging in models.glob(".download-*"):
        for file in staging.rglob("*"):
            try:
                total += file.stat().st_size if file.is_file() else 0
            except OSError:
                continue
    return total


@pytest.mark.timeout(1500)  # three starts of a tracking server and a 48 MB model, on a busy machine
def test_tracking_server_down_before_and_during_a_download(cli: Cli, private_server: PrivateServer,
                                                           example_model: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    big = tmp_path / "big-model"
    shutil.copytree(example_model, big)
    with (big / "weights.bin").open("wb") as handle:  # the scoring server never reads it
        handle.write(os.urandom(BIG_FILE_BYTES))
    server = private_server.start()
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    experiment = client.create_experiment("faults")
    run_id = client.create_run(experiment).info.run_id
    model_id = log_model_dir(client, experiment, run_id, "model", big)
    client.create_registered_model("big")
    client.create_model_version("big", source=f"models:/{model_id}", run_id=run_id, model_id=model_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    uri = "models:/big/1"

    # Down before: nothing can be resolved.
    server.stop()
    before = cli.run("deploy", uri, "--name", "big", "--target", "noop")
    assert before.returncode == 2, describe(before)
    assert uri in before.stderr and server.url in before.stderr and "Traceback" not in before.stderr
    assert cli.store_counts()["deployments"] == 0 and cli.snapshots() == []

    # Down during: the version resolves, then the server dies in the middle of the download.
    server.start()
    models = cli.home / "models"
    deploy = subprocess.Popen([orchestrate_executable(), "deploy", uri, "--name", "big", "--target", "noop"],
                              env={**os.environ, "ORCHESTRATE_HOME": str(cli.home)}, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _staged_bytes(models) < (4 << 20):
        assert deploy.poll() is None, f"the deploy ended before the download was caught:\n{deploy.communicate()}"
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.01)
    server.stop()
    stdout, stderr = deploy.communicate(timeout=240)
    assert deploy.returncode == 2, f"exit {deploy.returncode}\n{stdout}\n{stderr}"
    assert "could not download model models:/big/1 after 3 tries" in stderr, stderr
    assert "Traceback" not in stderr
    assert cli.store_counts()["deployments"] == 0
    assert cli.snapshots() == [], "a partial download or its staging directory was left behind"

    # Back up: the same command deploys the whole model.
    server.start()
    done = cli.json("deploy", uri, "--name", "big", "--target", "noop")
    assert done["status"] == "succeeded" and done["model_source"]["version"] == "1"
    snapshot = models / done["model_digest"]
    assert (snapshot / "weights.bin").stat().st_size == BIG_FILE_BYTES
    assert cli.snapshots() == [done["model_digest"]]


def test_a_download_cut_midway_is_retried(cli: Cli, registry: Registry, example_model: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The link to the (shared) tracking server drops in the middle of a file: the download is
    tried again from empty and the deployment holds the whole model."""
    from urllib.parse import urlsplit

    from mlflow import MlflowClient

    big = tmp_path / "cut-model"
    shutil.copytree(example_model, big)
    (big / "weights.bin").write_bytes(os.urandom(8 << 20))
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    experiment = client.create_experiment(f"cut-{os.getpid()}-{time.time_ns()}")
    run_id = client.create_run(experiment).info.run_id
    model_id = log_model_dir(client, experiment, run_id, "model", big)
    proxy = CuttingProxy(int(urlsplit(registry.tracking_uri).port or 80), cut_after=2 << 20)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
        done = cli.run("deploy", f"models:/{model_id}", "--name", "cut", "--target", "noop", "--json")
    finally:
        proxy.close()
    assert done.returncode == 0, describe(done)
    assert proxy.cut == 1, "the proxy never cut a transfer"
    assert f"download of model models:/{model_id} failed" in done.stdout + done.stderr
    record = cli.json("status", "cut")["live"]
    assert (cli.home / "models" / record["model_digest"] / "weights.bin").stat().st_size == 8 << 20
    assert cli.snapshots() == [record["model_digest"]]
