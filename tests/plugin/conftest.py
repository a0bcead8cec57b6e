"""Fixtures for the MLflow deployments plugin and the example third-party target.

- ``mlflow_deployments``: MLflow's own `mlflow deployments` CLI as a real subprocess, against
  this test's ``ORCHESTRATE_HOME``; endpoints it created are deleted after the test.
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

__all__ = ["ROLE", "MlflowDeployments", "aws", "aws_emulator", "docker_client", "stub_images"]

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
