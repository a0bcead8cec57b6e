"""One image stage for every container target (issue 12): the same model deployed with the
docker target and with the sagemaker target (against the AWS emulator, whose ECR is the local
registry) gets the same image -- one tag, one image id, one requirements layer (so the same
byte code), one pushed digest -- and both targets record it the same way.

Each deployment stops with an injected fault at create_endpoint, so only the image stages run
for real (validate, build, push) and no endpoint or container is left behind."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator import images
from tests.emulators.aws import AwsEmulator
from tests.sagemaker.conftest import ROLE, Cli

pytestmark = [pytest.mark.emulator, pytest.mark.docker, pytest.mark.slow]

STOP_BEFORE_ENDPOINT = {"ORCHESTRATE_FAULTS": "create_endpoint:permanent"}
# Unique per run: the registry keeps what earlier runs pushed, and a tag it has is not pushed again.
RUN = uuid.uuid4().hex[:8]


def _image_stages(
    sm: Cli, deployment: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """(build outputs, push outputs, image resources by kind) of one deployment."""
    record = sm.json("status", deployment)
    outputs = {a["stage"]: a["outputs"] for a in record["attempts"] if a["status"] == "succeeded"}
    resources = {
        r["kind"]: r
        for r in record["resources"]
        if r["stage"] in ("build", "push") and r["kind"] != "ecr_repository"
    }
    return outputs["build"], outputs["push"], resources


def _shape(resource: dict[str, Any], repository: str, tag: str) -> dict[str, Any]:
    """A record with its target-specific repository replaced, so the two targets' compare equal."""

    def generic(text: str | None) -> str | None:
        return text.replace(repository, "REPOSITORY") if text else text

    return {
        "kind": resource["kind"],
        "name": generic(resource["name"]),
        "state": resource["state"],
        "external_id": generic(resource["external_id"]),
        "data": {k: generic(v) if k == "repository" else v for k, v in resource["data"].items()},
        "tag_in_name": resource["name"].endswith(f":{tag}"),
    }


def test_docker_and_sagemaker_build_and_push_the_same_image(
    sm: Cli, aws: AwsEmulator, example_model: Path, docker_client: Any
) -> None:
    registry = os.environ["TEST_REGISTRY"]
    docker_repository, ecr_repository = f"{registry}/orchestrate/same-{RUN}", f"same-{RUN}"
    docker = sm.run(
        "deploy",
        str(example_model),
        "--name",
        f"same-{RUN}",
        "--target",
        "docker",
        "-C",
        f"registry={registry}",
        env=STOP_BEFORE_ENDPOINT,
        timeout=1200,
    )
    assert (
        docker.returncode != 0 and "injected permanent fault in create_endpoint" in docker.stderr
    ), docker.stderr
    sagemaker = sm.run(
        "deploy",
        str(example_model),
        "--name",
        f"same-sm-{RUN}",
        "--target",
        "sagemaker",
        "-C",
        f"role_arn={ROLE}",
        "-C",
        f"ecr_repository={ecr_repository}",
        env=STOP_BEFORE_ENDPOINT,
        timeout=1200,
    )
    assert (
        sagemaker.returncode != 0
        and "injected permanent fault in create_endpoint" in sagemaker.stderr
    ), sagemaker.stderr

    docker_build, docker_push, docker_records = _image_stages(sm, "1")
    sm_build, sm_push, sm_records = _image_stages(sm, "2")

    # One image: the same content tag, the very same image id, built for the model's own loader.
    assert sm_build["image_tag"] == docker_build["image_tag"]
    assert sm_build["image_id"] == docker_build["image_id"]
    assert sm_build["build_skipped"] is True  # the docker target's build is reused, not repeated
    assert sm_build["loader_module"] == docker_build["loader_module"] == "mlflow.sklearn"
    assert sm_build["requirements_hash"] == docker_build["requirements_hash"]
    assert sm_build["labels"] == docker_build["labels"]
    # The requirements layer, whose venv holds the byte code compiled at build, is one image.
    requirements_layers = images.layers(
        docker_client, f"{images.DEPENDENCIES_REPOSITORY}:{docker_build['requirements_hash']}"
    )
    assert (
        images.layers(docker_client, docker_build["image"])[: len(requirements_layers)]
        == requirements_layers
    )

    # One pushed manifest: the emulator's ECR is the same registry, in another repository.
    assert docker_push["pushed_image"].startswith(f"{docker_repository}@sha256:")
    assert sm_push["pushed_image"].startswith(f"{registry}/{ecr_repository}@sha256:")
    assert sm_push["digest"] == docker_push["digest"]

    # Recorded alike: `image` in build, `pushed_image` in push, differing only in the repository.
    assert set(docker_records) == set(sm_records) == {"image", "pushed_image"}
    for kind, sm_repository in (
        ("image", ecr_repository),
        ("pushed_image", f"{registry}/{ecr_repository}"),
    ):
        docker_shape = _shape(docker_records[kind], docker_repository, docker_build["image_tag"])
        sm_shape = _shape(sm_records[kind], sm_repository, sm_build["image_tag"])
        assert {**sm_shape, "state": None} == {**docker_shape, "state": None}, kind
        assert docker_shape["tag_in_name"]
    assert docker_records["image"]["external_id"] == docker_build["image_id"]
    assert sm_records["pushed_image"]["data"] == {
        "repository": f"{registry}/{ecr_repository}",
        "tag": sm_build["image_tag"],
    }
