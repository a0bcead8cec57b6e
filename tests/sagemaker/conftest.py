"""Fixtures for the sagemaker target: the AWS emulator, stand-in images, and a CLI runner.

- ``aws_emulator`` (session): tests/emulators/aws.py on a free port, ECR mapped to the local
  registry ``TEST_REGISTRY`` (scripts/test.sh starts it and the Docker engine). Skips
  locally when Docker or the registry is missing; fails in CI.
- ``aws``: the emulator, reset, with this test's environment pointing boto3 at it (fake
  credentials, ``AWS_ENDPOINT_URL``, region us-east-1).
- ``stub_images``: tiny images (``v1``, ``v2``, ``broken``) of tests/emulators/stub_server.py
  on the base image, tagged by content, so they are built once per machine.
- ``sm``: runs `orchestrate` as a real subprocess against this test's home.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.aws import AwsEmulator

STUB = Path(__file__).resolve().parents[1] / "emulators" / "stub_server.py"
BASE_IMAGE = "python:3.11-slim"
ROLE = "arn:aws:iam::123456789012:role/orchestrate-sagemaker"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason}: emulator tests must not be skipped in CI (run scripts/test.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        _unavailable(f"no Docker engine: {exc}")
    return client


@pytest.fixture(scope="session")
def aws_emulator(docker_client: Any) -> Iterator[AwsEmulator]:
    registry = os.environ.get("TEST_REGISTRY")
    if not registry:
        _unavailable("TEST_REGISTRY is not set (scripts/test.sh starts the local registry)")
    emulator = AwsEmulator(registry=registry, docker_client=docker_client).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def aws(aws_emulator: AwsEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEmulator]:
    aws_emulator.reset()
    for name, value in {"AWS_ENDPOINT_URL": aws_emulator.url, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    yield aws_emulator
    aws_emulator.reset()


@pytest.fixture(scope="session")
def stub_images(docker_client: Any) -> dict[str, str]:
    """Image ids of the stand-in server: v1, v2 (other predictions) and broken (exits at start)."""
    import docker

    source = STUB.read_bytes()
    images = {}
    for variant, env in (("v1", "STUB_VERSION=1"), ("v2", "STUB_VERSION=2"), ("broken", "STUB_BROKEN=1")):
        dockerfile = (f"FROM {BASE_IMAGE}\nCOPY stub_server.py /srv/stub_server.py\nENV {env}\n"
                      'ENTRYPOINT ["python3", "/srv/stub_server.py"]\nEXPOSE 8080\n').encode()
        tag = "orchestrate-test/sm-stub:" + variant + "-" + hashlib.sha256(dockerfile + source).hexdigest()[:12]
        try:
            images[variant] = docker_client.images.get(tag).id
            continue
        except docker.errors.ImageNotFound:
            pass  # built below
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            for name, data in (("Dockerfile", dockerfile), ("stub_server.py", source)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        context.seek(0)
        image, _logs = docker_client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
        images[variant] = image.id
    return images


def cli_executable() -> str:
    beside = Path(sys.executable).parent / "orchestrate"
    return str(beside) if beside.is_file() else (shutil.which("orchestrate") or "orchestrate")


@dataclass
class Cli:
    """`orchestrate` as a subprocess with this test's environment (home, emulator, credentials)."""

    home: Path

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "ORCHESTRATE_HOME": str(self.home), **(extra or {})}

    def run(self, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli_executable(), *args], check=False, env=self.env(env), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, env=env)
        assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result

    def spawn(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([cli_executable(), *args], env=self.env(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)


@pytest.fixture
def sm(orchestrate_home: Path, aws: AwsEmulator) -> Cli:
    return Cli(orchestrate_home)


def deploy_args(model: Path, name: str, image: str, *extra: str) -> list[str]:
    """`deploy` for the sagemaker target, polling fast (the emulator's phases are short)."""
    return ["deploy", str(model), "--name", name, "--target", "sagemaker", "-C", f"image={image}",
            "-C", f"role_arn={ROLE}", "-C", "poll_interval=0.05", "-C", "poll_max_interval=0.2",
            "-C", "retry_initial_s=0.1", *extra]
