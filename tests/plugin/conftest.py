"""Fixtures for the MLflow deployments plugin and the example third-party target.

- ``mlflow_deployments``: MLflow's own `mlflow deployments` CLI as a real subprocess, against
  this test's ``ORCHESTRATE_HOME``; endpoints it created are deleted after the test.
- ``registered_iris`` (session), ``tracking_env``: the example models as versions 1 and 2 of
  a registered model in the tracking server scripts/test.sh starts, and this test pointed at it.
- ``aws``, ``stub_images``: the SageMaker emulator and its stand-in images, shared with
  tests/sagemaker (see tests/sagemaker/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.sagemaker.conftest import ROLE, aws, aws_emulator, docker_client, stub_images

__all__ = ["ROLE", "MlflowDeployments", "RegisteredIris", "aws", "aws_emulator", "docker_client", "stub_images"]

# SageMaker config that makes the emulator's short phases quick to poll.
SAGEMAKER_FAST = {"role_arn": ROLE, "poll_interval": "0.05", "poll_max_interval": "0.2", "retry_initial_s": "0.1"}


def mlflow_executable() -> str:
    beside = Path(sys.executable).parent / "mlflow"
    if not beside.is_file():
        pytest.fail("the `mlflow` console script is not installed beside this Python (pip install -e '.[test]')")
    return str(beside)


@dataclass
class MlflowDeployments:
    """`mlflow deployments ARGS` as a subprocess; remembers the names it created."""

    home: Path
    names: set[str] = field(default_factory=set)

    def run(self, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        if "--name" in args:
            self.names.add(args[args.index("--name") + 1])
        return subprocess.run([mlflow_executable(), "deployments", *args], check=False, stdin=subprocess.DEVNULL,
                              env={**os.environ, "ORCHESTRATE_HOME": str(self.home), **(env or {})},
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, env=env)
        assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture
def mlflow_deployments(orchestrate_home: Path) -> Iterator[MlflowDeployments]:
    cli = MlflowDeployments(orchestrate_home)
    yield cli
    delete_all(cli.names)


def delete_all(names: set[str]) -> None:
    """Stop what a test left running (its servers would fail the leak check)."""
    import orchestrator

    for name in names:
        try:
            orchestrator.delete(name)
        except orchestrator.NotFound:
            pass


@dataclass(frozen=True)
class RegisteredIris:
    name: str  # registered model: version 1 is example_model (alias champion), 2 is example_model_v2


@pytest.fixture(scope="session")
def registered_iris(example_model: Path, example_model_v2: Path) -> RegisteredIris:
    """Both example models registered in the tracking server scripts/test.sh starts
    (ORCHESTRATE_TEST_MLFLOW_URI), through the MLflow client."""
    import uuid

    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus

    tracking_uri = os.environ.get("ORCHESTRATE_TEST_MLFLOW_URI")
    if not tracking_uri:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("CI=true but ORCHESTRATE_TEST_MLFLOW_URI is not set; run the suite through scripts/test.sh")
        pytest.skip("no MLflow tracking server configured; run scripts/test.sh")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    tag = uuid.uuid4().hex[:8]
    experiment_id = client.create_experiment(f"orchestrate-plugin-{tag}")
    run_id = client.create_run(experiment_id).info.run_id
    name = f"iris-plugin-{tag}"
    client.create_registered_model(name)
    for directory in (example_model, example_model_v2):
        logged = client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
        client.log_model_artifacts(logged.model_id, str(directory))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        client.create_model_version(name, source=f"models:/{logged.model_id}", run_id=run_id,
                                    model_id=logged.model_id)
    client.set_terminated(run_id)
    client.set_registered_model_alias(name, "champion", "1")
    return RegisteredIris(name)


@pytest.fixture
def tracking_env(registered_iris: RegisteredIris, monkeypatch: pytest.MonkeyPatch) -> RegisteredIris:
    """This test (and the commands it runs) read models from that server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", os.environ["ORCHESTRATE_TEST_MLFLOW_URI"])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return registered_iris
