"""`orchestrate build`, `generate-dockerfile` and registry push on a real engine and registries."""

from __future__ import annotations

import inspect
import json
import shutil
import socket
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator import images
from orchestrator.images import docker_engine

pytestmark = pytest.mark.docker

# Unique per run: the registries keep what earlier runs pushed, and a content tag already in a
# registry is (by design) not pushed again, which would make the digests below an earlier run's.
REPOSITORY = f"orchestrate-test/iris-{uuid.uuid4().hex[:8]}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ping(url: str, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url}/ping did not answer within {timeout}s")


def _invoke(url: str, model: Path) -> list[Any]:
    body = (model / "serving_input_example.json").read_bytes()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return list(json.loads(answer.read())["predictions"])


@pytest.fixture(scope="module")
def built_v1(docker_client: Any, registry: str, example_model: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Any]:
    """The example model's image, built once for this module through the real CLI."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ORCHESTRATE_HOME": str(tmp_path_factory.mktemp("build-home"))}
    result = subprocess.run([sys.executable, "-m", "orchestrator", "build", str(example_model), "-t",
                             f"{registry}/{REPOSITORY}", "--json"], capture_output=True, text=True, env=env,
                            stdin=subprocess.DEVNULL, timeout=1200, check=False)
    assert result.returncode == 0, result.stderr[-6000:]
    return dict(json.loads(result.stdout))


def test_image_serves_on_8080_as_non_root_with_labels_and_healthcheck(
        docker_client: Any, built_v1: dict[str, Any], example_model: Path) -> None:
    image = docker_client.images.get(built_v1["image"])
    config = image.attrs["Config"]
    assert config["User"] not in ("", "0", "root")
    assert config["Cmd"] == ["serve"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"] == ["CMD", "healthcheck"]
    labels = config["Labels"]
    from orchestrator.model import mlmodel

    assert labels["io.orchestrate.model-digest"] == mlmodel.read_model(str(example_model)).digest
    for key in ("requirements-hash", "server-version", "version", "base-image-id"):
        assert labels[f"io.orchestrate.{key}"]

    port = _free_port()
    container = docker_client.containers.run(built_v1["image"], detach=True, ports={"8080/tcp": ("127.0.0.1", port)},
                                             labels={"io.orchestrate.endpoint": "test"})
    try:
        _wait_ping(f"http://127.0.0.1:{port}")
        assert len(_invoke(f"http://127.0.0.1:{port}", example_model)) == 4
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
        # mlflow is served by mlflow-skinny: the full package is not in the image.
        listed = container.exec_run(["python", "-m", "pip", "--version"]).exit_code
        assert listed != 0  # no pip in the serving venv either
        script = ("import importlib.metadata as m, sys; print(m.version('mlflow-skinny')); "
                  "sys.exit(3 if any(d.metadata['Name'] == 'mlflow' for d in m.distributions()) else 0)")
        found = container.exec_run(["python", "-c", script])
        assert found.exit_code == 0, found.output
    finally:
        container.remove(force=True)


def test_port_from_sagemaker_variable_and_serve_entry(docker_client: Any, built_v1: dict[str, Any],
                                                      example_model: Path) -> None:
    port = _free_port()
    # SageMaker's contract: `docker run IMAGE serve`, port from SAGEMAKER_BIND_TO_PORT.
    container = docker_client.containers.run(built_v1["image"], ["serve"], detach=True,
                                             environment={"SAGEMAKER_BIND_TO_PORT": "9090"},
                                             ports={"9090/tcp": ("127.0.0.1", port)},
                                             labels={"io.orchestrate.endpoint": "test"})
    try:
        _wait_ping(f"http://127.0.0.1:{port}")
        assert len(_invoke(f"http://127.0.0.1:{port}", example_model)) == 4
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the Docker HEALTHCHECK follows the port too
            container.reload()
            if container.attrs["State"]["Health"]["Status"] == "healthy":
                break
            time.sleep(1)
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
    finally:
        container.remove(force=True)


def test_second_build_with_same_inputs_is_skipped(cli: Any, built_v1: dict[str, Any], registry: str,
                                                  example_model: Path) -> None:
    again = cli.build(example_model, f"{registry}/{REPOSITORY}")
    assert again["skipped"] is True
    assert again["image"] == built_v1["image"]
    assert again["image_id"] == built_v1["image_id"]


def test_image_has_byte_code_for_every_module_serving_imports(docker_client: Any, built_v1: dict[str, Any]) -> None:
    # The image runs with PYTHONDONTWRITEBYTECODE: a module without byte code is compiled at every start.
    script = ("import os, sys, scoring; scoring.create_app(); "
              "modules = [m for m in list(sys.modules.values()) if (getattr(m, '__file__', None) or '')"
              ".startswith('/opt/orchestrate/venv/') and m.__file__.endswith('.py')]; "
              "missing = [m.__name__ for m in modules if not os.path.exists(getattr(m, '__cached__', None) or '')]; "
              "print(len(modules), len(missing), *missing[:20])")
    output = docker_client.containers.run(built_v1["image"], ["python", "-c", script], remove=True).decode().split()
    imported, missing = int(output[0]), int(output[1])
    assert imported > 300  # flask, numpy, pandas, scikit-learn, skops...
    assert missing == 0, f"no byte code in the image for: {output[2:]}"


def test_model_only_change_adds_only_the_model_layer(docker_client: Any, cli: Any, built_v1: dict[str, Any],
                                                     registry: str, example_model_v2: Path) -> None:
    v2 = cli.build(example_model_v2, f"{registry}/{REPOSITORY}")
    # Built here, or tagged from the image another test built of it (same content tag).
    assert v2["requirements_reused"] is True
    assert v2["image"] != built_v1["image"]
    old = images.layers(docker_client, built_v1["image"])
    new = images.layers(docker_client, v2["image"])
    assert len(old) == len(new)
    assert old[:-1] == new[:-1]  # base, user, requirements venv, server, scripts: all shared
    assert old[-1] != new[-1]  # the model files


def test_push_then_pull_back_by_digest(docker_client: Any, cli: Any, built_v1: dict[str, Any],
                                       registry: str, example_model: Path) -> None:
    pushed = cli.build(example_model, f"{registry}/{REPOSITORY}:v1", "--push")
    by_reference = {p["reference"]: p for p in pushed["pushed"]}
    first = by_reference[built_v1["image"]]
    assert first["digest"].startswith("sha256:")
    assert by_reference[f"{registry}/{REPOSITORY}:v1"]["digest"] == first["digest"]
    pulled = docker_client.images.pull(first["pinned"])
    assert pulled.id == built_v1["image_id"]
    again = cli.build(example_model, f"{registry}/{REPOSITORY}", "--push")
    assert again["pushed"][0]["skipped"] is True
    assert again["pushed"][0]["digest"] == first["digest"]


def test_registry_login_and_refused_auth(cli: Any, built_v1: dict[str, Any], auth_registry: tuple[str, str, str],
                                         example_model: Path) -> None:
    address, user, password = auth_registry
    image = f"{address}/{REPOSITORY}"
    wrong = "not-the-password-7f3a"
    refused = cli("build", str(example_model), "-t", image, "--push", "--username", user, check=False,
                  env={"ORCHESTRATE_REGISTRY_PASSWORD": wrong})
    assert refused.returncode == 1, refused.stderr
    assert f"registry {address} refused the credentials for user {user!r}" in refused.stderr
    assert wrong not in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    anonymous = cli("build", str(example_model), "-t", image, "--push", check=False)
    assert anonymous.returncode == 1
    assert f"registry {address} requires a login" in anonymous.stderr
    accepted = cli.build(example_model, image, "--push", "--username", user,
                         env={"ORCHESTRATE_REGISTRY_PASSWORD": password})
    assert accepted["pushed"][0]["digest"].startswith("sha256:")
    assert password not in json.dumps(accepted)


def test_generate_dockerfile_builds_with_plain_docker(docker_client: Any, cli: Any, built_v1: dict[str, Any],
                                                      example_model: Path, tmp_path: Path) -> None:
    directory = tmp_path / "context"
    cli("generate-dockerfile", str(example_model), "-d", str(directory))
    text = (directory / "Dockerfile").read_text()
    order = [text.index(step) for step in ("FROM ${BASE_IMAGE}\n", "COPY venv", "RUN useradd", "COPY server",
                                           "COPY model")]
    assert order == sorted(order)
    assert "AS requirements" not in text  # host-installed: no throwaway stage, the venv is copied once
    # venv: the requirements uv installed on the host for the image's platform (wheelhouse/ on the fallback)
    assert {"venv", "requirements.txt", "server", "bin", "model"} <= {p.name for p in directory.iterdir()}
    assert (directory / "venv" / "bin" / "gunicorn").read_text().startswith("#!/opt/orchestrate/venv/bin/python\n")
    assert "mlflow-skinny==" in (directory / "requirements.txt").read_text()
    image, _logs = docker_client.images.build(path=str(directory), tag="orchestrate-test/generated:latest", rm=True)
    try:
        # `orchestrate build` loads the venv as a ready-made layer; plain docker copies it: same tree.
        assert _venv_listing(docker_client, image.id) == _venv_listing(docker_client, built_v1["image"])
        assert image.attrs["Config"]["Cmd"] == ["serve"]
    finally:
        docker_client.images.remove(image.id, force=True)


def _venv_listing(docker_client: Any, image: str) -> str:
    """Every entry of the image's venv with its mode and owner, files' sizes and links' targets."""
    command = r"cd /opt/orchestrate/venv && find . -type f -printf '%p %M %U %s\n' -o -printf '%p %M %U %l\n' | sort"
    listing = docker_client.containers.run(image, ["sh", "-c", command], remove=True, user="root")
    assert b"./lib/python3.11/site-packages/sklearn/__init__.py" in listing
    return listing.decode()


def test_a_package_that_does_not_exist_is_named_with_the_override_hint(cli: Any, docker_client: Any,
                                                                       example_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(example_model, model)
    with (model / "requirements.txt").open("a") as handle:
        handle.write("\norchestrate-no-such-package==1.0\n")
    result = cli("build", str(model), "-t", "orchestrate-test/missing", check=False)
    assert result.returncode == 1
    # uv on the host cannot, so the build falls back to pip's wheelhouse, says so, and pip names the package
    assert "uv could not install the requirements on the host (" in result.stderr
    assert "falling back to a pip wheelhouse" in result.stderr
    assert "could not install 'orchestrate-no-such-package==1.0'" in result.stderr
    assert "--pip-requirements-override 'orchestrate-no-such-package==VERSION'" in result.stderr


def test_no_engine_says_how_to_start_one(cli: Any, example_model: Path, tmp_path: Path) -> None:
    result = cli("build", str(example_model), "-t", "orchestrate-test/x", check=False,
                 env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert result.returncode == 1
    assert f"no Docker engine answers at unix://{tmp_path}/no-engine.sock" in result.stderr
    assert "start the engine" in result.stderr
    assert "Traceback" not in result.stderr


def test_error_table_covers_every_docker_exception() -> None:
    import docker.errors

    classes = {name for name, value in vars(docker.errors).items()
               if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == "docker.errors"}
    assert classes <= set(docker_engine.ERROR_TABLE), classes - set(docker_engine.ERROR_TABLE)
    error = docker.errors.APIError("boom", response=None, explanation="no such image")
    translated = docker_engine.translate(error, "testing")
    assert translated is not None and "testing" in str(translated)


def test_mlflow_is_served_by_skinny_of_the_same_version() -> None:
    # The whole rule (numpy and pandas at full mlflow's pins) is tested in tests/core/test_environments.py.
    served = images.image_requirements(["mlflow==3.17.2", "numpy==2.0.0"], None)
    assert served[0] == "mlflow-skinny==3.17.2" and "mlflow==3.17.2" not in served
    assert "numpy==1.26.4" in images.image_requirements(["mlflow==3.17.2"], "numpy==1.26.4")


def test_host_pip_settings_become_uv_options(tmp_path: Path) -> None:
    from orchestrator.images import host_install

    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = https://pypi.example/simple\n"
                      "extra-index-url = https://a.example/simple https://b.example/simple\n"
                      "trusted-host = a.example\ncert = /etc/custom-ca.pem\nproxy = http://proxy.example:3128\n"
                      "[download]\ntimeout = 42\n")
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_CONFIG_FILE": str(config),
               "PIP_FIND_LINKS": "/srv/wheels"}
    pip = host_install.pip_settings(environ)
    settings = host_install.uv_settings(pip, environ)
    options = " ".join(settings.options)
    assert "--index-url https://pypi.example/simple" in options
    assert "--extra-index-url https://a.example/simple --extra-index-url https://b.example/simple" in options
    assert "--allow-insecure-host a.example" in options and "--find-links /srv/wheels" in options
    assert "--index-strategy unsafe-best-match" in options  # pip's best version across indexes
    assert settings.environment == {"SSL_CERT_FILE": "/etc/custom-ca.pem", "UV_HTTP_TIMEOUT": "42",
                                    "HTTPS_PROXY": "http://proxy.example:3128",
                                    "HTTP_PROXY": "http://proxy.example:3128"}
    # What the user set for uv itself wins over the translation.
    mine = host_install.uv_settings(pip, {**environ, "UV_INDEX_URL": "https://mine/simple",
                                          "SSL_CERT_FILE": "/mine.pem", "UV_INDEX_STRATEGY": "first-index"})
    assert "--index-url" not in mine.options and "--index-strategy" not in mine.options
    assert "SSL_CERT_FILE" not in mine.environment


def test_uv_platform_is_the_newest_manylinux_the_glibc_accepts() -> None:
    from orchestrator.images.host_install import uv_platform
    from orchestrator.images.wheelhouse import Platform

    assert uv_platform(Platform("3.11", "x86_64", "2.36")) == "x86_64-manylinux_2_36"
    assert uv_platform(Platform("3.11", "aarch64", "2.30")) == "aarch64-manylinux_2_28"
    assert uv_platform(Platform("3.11", "x86_64", "2.12")) is None  # older than manylinux2014: pip wheelhouse
    assert uv_platform(Platform("3.11", "ppc64le", "2.36")) is None


def test_host_install_says_why_when_uv_cannot_install(tmp_path: Path) -> None:
    from orchestrator.images import dockerfile, host_install
    from orchestrator.images.wheelhouse import Platform

    result = host_install.install(["orchestrate-no-such-package==1.0"], Platform("3.11", "x86_64", "2.36"),
                                  tmp_path / "venv", venv=dockerfile.VENV, log_file=tmp_path / "log",
                                  log=lambda _line: None)
    assert not result.ok and result.reason and not (tmp_path / "venv").exists()


def test_a_ready_made_layer_is_the_directory_at_its_place_owned_by_root(tmp_path: Path) -> None:
    import hashlib
    import io
    import os
    import tarfile

    from orchestrator.images import layer_image

    tree = tmp_path / "venv"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_text("#!/opt/x/venv/bin/python\n")
    (tree / "bin" / "tool").chmod(0o700)  # a private mode on the host must not hide it from the image's user
    (tree / "lib").mkdir()
    (tree / "lib" / "data.txt").write_text("data")
    (tree / "lib" / "data.txt").chmod(0o600)
    os.symlink("lib", tree / "lib64")
    layer = io.BytesIO()
    diff_id = layer_image.write_layer(tree, "/opt/x/venv", layer)
    assert diff_id == "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    layer.seek(0)
    with tarfile.open(fileobj=layer) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert list(members)[:3] == ["opt", "opt/x", "opt/x/venv"]  # parents first, then the tree
    assert {"opt/x/venv/bin/tool", "opt/x/venv/lib/data.txt", "opt/x/venv/lib64"} <= set(members)
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "root" for m in members.values())
    assert members["opt/x/venv/bin/tool"].mode & 0o777 == 0o755
    assert members["opt/x/venv/lib/data.txt"].mode & 0o777 == 0o644
    assert members["opt/x/venv/lib64"].issym() and members["opt/x/venv/lib64"].linkname == "lib"
