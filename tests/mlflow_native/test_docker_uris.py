"""Registry and S3 URIs on the docker target: the image is built from the snapshot the URI
resolved to, and serves that version; `orchestrator.build_image` takes a URI too."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from _mlflow_helpers import S3, Cli, Registry

pytestmark = [pytest.mark.mlflow, pytest.mark.docker, pytest.mark.slow]

V1_PREDICTIONS = [0, 1, 2, 2]
V2_PREDICTIONS = [0, 2, 2, 1]


@pytest.fixture(scope="module")
def docker_engine() -> Any:
    import docker

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the engine
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true but no Docker engine answers ({exc}): run scripts/test.sh")
        pytest.skip(f"no Docker engine answers ({exc}); run scripts/test.sh")
    return client


def _predict(url: str, example: Path) -> list[int]:
    request = urllib.request.Request(f"{url}/invocations", data=example.read_bytes(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        predictions: list[int] = json.loads(answer.read())["predictions"]
        return predictions


@pytest.mark.parametrize("form", ["models-alias", "s3"])
def test_uri_forms_deploy_on_docker(form: str, docker_engine: Any, cli: Cli, registry: Registry, s3_env: S3,
                                    example_model: Path) -> None:
    uri = f"models:/{registry.name}@champion" if form == "models-alias" else s3_env.uri
    name = f"docker-{form}"
    cli.ok("deploy", uri, "--name", name, "--target", "docker", timeout=900)
    live = cli.json("status", name)["live"]
    assert live["model_uri"] == uri and live["model_source"]["kind"] == ("registered" if form != "s3" else "s3")
    assert _predict(live["url"], example_model / "serving_input_example.json") == V1_PREDICTIONS


def test_build_image_from_a_uri(docker_engine: Any, registry: Registry) -> None:
    import orchestrator

    built = orchestrator.build_image(f"runs:/{registry.run_id}/challenger", "orchestrate-test/mlflow-uri")
    image = docker_engine.images.get(built["image"])
    assert any(tag.startswith("orchestrate-test/mlflow-uri:") for tag in image.tags)
