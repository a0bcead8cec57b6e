"""Fixtures of the Docker tests: the engine, the two local registries, a container leak check.

``scripts/test.sh`` starts the engine and the registries (scripts/_docker.sh) and exports
``TEST_REGISTRY``, ``TEST_AUTH_REGISTRY`` and its account. Without them these tests skip on a
developer machine and fail in CI (``CI=true``), so they never silently skip there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LABEL = "io.orchestrate.endpoint"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true but {message}: Docker tests must not be skipped in CI; run scripts/test.sh")
    pytest.skip(f"{message}; run scripts/test.sh")


@pytest.fixture(scope="session")
def docker_client() -> Any:
    docker = pytest.importorskip("docker") if not in_ci() else __import__("docker")
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the engine
        _unavailable(f"no Docker engine answers ({exc})")
    if not any(t.startswith("python:3.11-slim") for image in client.images.list() for t in image.tags):
        _unavailable("the base image python:3.11-slim is missing")
    return client


def _registry(variable: str, default: str) -> str:
    address = os.environ.get(variable, default)
    try:
        urllib.request.urlopen(f"http://{address}/v2/", timeout=5)
    except urllib.error.HTTPError as error:
        if error.code != 401:
            _unavailable(f"registry {address} answers HTTP {error.code}")
    except OSError as exc:
        _unavailable(f"no registry answers at {address} ({exc})")
    return address


@pytest.fixture(scope="session")
def registry(docker_client: Any) -> str:
    """host:port of the plain local registry."""
    return _registry("TEST_REGISTRY", "127.0.0.1:15000")


@pytest.fixture(scope="session")
def auth_registry(docker_client: Any) -> tuple[str, str, str]:
    """(host:port, user, password) of the registry that requires a login."""
    address = _registry("TEST_AUTH_REGISTRY", "127.0.0.1:15001")
    return (address, os.environ.get("TEST_AUTH_REGISTRY_USER", "orchestrate-test"),
            os.environ.get("TEST_AUTH_REGISTRY_PASSWORD", "registry-test-password"))


@pytest.fixture(autouse=True)
def _no_leaked_containers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves an orchestrate container running; remove what it left."""
    if "docker_client" not in request.fixturenames:
        yield
        return
    client = request.getfixturevalue("docker_client")
    before = {c.id for c in client.containers.list(all=True, filters={"label": LABEL})}
    yield
    left = [c for c in client.containers.list(all=True, filters={"label": LABEL}) if c.id not in before]
    for container in left:
        container.remove(force=True)
    if left:
        pytest.fail("test left container(s) behind (now removed): " + ", ".join(c.name for c in left))


class Cli:
    """The real `orchestrate` command line, run in a subprocess."""

    def __call__(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
                 timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run_orchestrate(*args, env=env, check=check, timeout=timeout)

    def build(self, model: Path, image: str, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        result = self("build", str(model), "-t", image, "--json", *extra, env=env)
        return dict(json.loads(result.stdout))


@pytest.fixture
def cli() -> Cli:
    return Cli()


def run_orchestrate(*args: str, env: dict[str, str] | None = None, check: bool = True,
                timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real `orchestrate` command line in a subprocess."""
    result = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=timeout, env={**os.environ, **(env or {})},
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"orchestrate {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr[-6000:]}")
    return result

