"""The skinny regression (issue 10) in the docker image: the plain pyfunc MLflow saves, with
nothing pulling scikit-learn in, is built, deployed and answers; and an image whose model
cannot import its loader fails `build` naming the module, and is not kept."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from _plain_pyfunc import ANSWER, save_plain_pyfunc

from orchestrator.images import dockerfile

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def plain_pyfunc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_plain_pyfunc(tmp_path_factory.mktemp("plain") / "model")


def _in_image(docker_client: Any, image: str, code: str) -> str:
    output = docker_client.containers.run(image, [f"{dockerfile.VENV}/bin/python", "-c", code], entrypoint=[],
                                          network_mode="none", remove=True)
    return str(output.decode().strip())


def test_plain_pyfunc_image_serves_without_scikit_learn(cli: Any, docker_client: Any, plain_pyfunc: Path) -> None:
    deployed = cli("deploy", str(plain_pyfunc), "-n", "plain-docker", "-t", "docker", "-C", "startup_timeout=180")
    assert "mlflow-skinny" in deployed.stderr + deployed.stdout
    status = json.loads(cli("status", "plain-docker", "--json").stdout)
    try:
        request = urllib.request.Request(f"{status['live']['url']}/invocations",
                                         data=(plain_pyfunc / "request.json").read_bytes(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.loads(answer.read()) == ANSWER
        image = status["live"]["runtime"]["image"]
        assert _in_image(docker_client, image, "import importlib.util as u; print(u.find_spec('sklearn'))") == "None"
        assert _in_image(docker_client, image, "import mlflow; print(mlflow.__file__)").find("mlflow") >= 0
    finally:
        cli("delete", "plain-docker", "--yes")


def test_image_missing_the_loaders_module_fails_build_and_is_not_kept(cli: Any, docker_client: Any,
                                                                      plain_pyfunc: Path, tmp_path: Path) -> None:
    model = tmp_path / "no-mlflow"
    shutil.copytree(plain_pyfunc, model)
    (model / "requirements.txt").write_text("cloudpickle\nnumpy\npandas\n")  # mlflow forgotten
    repository = "orchestrate-test/skinny-missing"
    failed = cli("build", str(model), "-t", repository, check=False)
    assert failed.returncode == 1, failed.stderr
    assert "'mlflow'" in failed.stderr and "--pip-requirements-override" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr
    assert docker_client.images.list(name=repository) == []
