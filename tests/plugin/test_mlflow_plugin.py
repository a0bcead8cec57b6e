"""The `orchestrate` MLflow deployments plugin: MLflow's real `mlflow deployments` CLI as a
subprocess and `get_deploy_client` in process, on the noop, local and SageMaker (emulated)
targets, with every change checked in orchestrate's own records."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.deployments import PredictionsResponse, get_deploy_client
from mlflow.exceptions import MlflowException

import orchestrator
from orchestrator.model import mlmodel
from tests.emulators.aws import AwsEmulator
from tests.plugin.conftest import (
    SAGEMAKER_FAST,
    MlflowDeployments,
    RegisteredIris,
    delete_all,
    mlflow_executable,
)


def iris_frame(model: Path) -> pd.DataFrame:
    split = json.loads((model / "serving_input_example.json").read_text())["dataframe_split"]
    return pd.DataFrame(split["data"], columns=split["columns"])


def records_file(model: Path, tmp_path: Path) -> Path:
    """The input `mlflow deployments predict -I` reads (with pandas.read_json)."""
    path = tmp_path / "input.json"
    iris_frame(model).to_json(path, orient="records")
    return path


def live(name: str) -> dict[str, Any]:
    """What `orchestrate status NAME` records as live."""
    record = orchestrator.status(name)["live"]
    assert record is not None, f"{name} has no live deployment"
    return record  # type: ignore[no-any-return]


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int, *phrases: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("Error: "), result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)


# -- found by MLflow, target URIs ------------------------------------------------------------


def test_mlflow_finds_the_plugin_and_prints_its_help(mlflow_deployments: MlflowDeployments) -> None:
    result = mlflow_deployments.ok("help", "-t", "orchestrate")
    for phrase in ("orchestrate:/local", "orchestrate:/sagemaker", "orchestrate:/noop", "-C instance_type=",
                   "-C workers=", "create-endpoint is not supported"):
        assert phrase in result.stdout, phrase


def test_target_uris_name_orchestrate_targets() -> None:
    assert get_deploy_client("orchestrate").target == "local"
    assert get_deploy_client("orchestrate:/sagemaker").target == "sagemaker"
    assert get_deploy_client("orchestrate://noop").target == "noop"
    with pytest.raises(MlflowException, match="unknown target 'azure'.*installed targets: .*local") as unknown:
        get_deploy_client("orchestrate:/azure")
    assert unknown.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException, match="not an orchestrate target URI.*orchestrate:/<target>"):
        get_deploy_client("orchestrate:/local/extra")


# -- the noop target: the whole command set, fast --------------------------------------------


@pytest.mark.timeout(1800)  # a dozen `mlflow deployments` commands; importing mlflow is slow
@pytest.mark.slow
def test_cli_create_update_get_list_delete_on_noop(mlflow_deployments: MlflowDeployments, example_model: Path,
                                                    example_model_v2: Path) -> None:
    target = ("-t", "orchestrate:/noop")
    created = mlflow_deployments.ok("create", *target, "--name", "churn", "-m", str(example_model),
                                    "-C", "sleep_s=0.01")
    assert "python_function deployment churn is created" in created.stdout
    first = live("churn")
    assert first["model_uri"] == str(example_model) and first["config"]["sleep_s"] == 0.01

    # MLflow's contract: create on a name that serves is an error; nothing new is recorded.
    again = mlflow_deployments.run("create", *target, "--name", "churn", "-m", str(example_model_v2))
    assert_clean_error(again, 2, "already exists", "mlflow deployments update")
    assert len(orchestrator.list_deployments()) == 1

    # A new model: the live config is kept (sleep_s), -C applies on top.
    mlflow_deployments.ok("update", *target, "--name", "churn", "-m", str(example_model_v2),
                          "-C", "max_attempts=2")
    second = live("churn")
    assert second["id"] != first["id"] and second["model_digest"] != first["model_digest"]
    assert second["config"]["sleep_s"] == 0.01 and second["config"]["max_attempts"] == 2

    # Config only: the live model again, config patched.
    updated = mlflow_deployments.ok("update", *target, "--name", "churn", "-C", "sleep_s=0")
    assert "Deployment churn is updated (with flavor python_function)" in updated.stdout
    third = live("churn")
    assert third["model_digest"] == second["model_digest"] and third["model_uri"] == second["model_uri"]
    assert third["config"]["sleep_s"] == 0 and third["config"]["max_attempts"] == 2

    got = mlflow_deployments.ok("get", *target, "--name", "churn").stdout
    assert "name: churn" in got and "flavor: python_function" in got and f"deployment_id: {third['id']}" in got
    listed = mlflow_deployments.ok("list", *target).stdout
    assert "'name': 'churn'" in listed and f"'live_deployment_id': {third['id']}" in listed

    bad_key = mlflow_deployments.run("update", *target, "--name", "churn", "-C", "sleep=1")
    assert_clean_error(bad_key, 2, "unknown config key 'sleep'", "valid keys:", "sleep_s")

    for _ in range(2):  # repeatable
        assert "Deployment churn is deleted" in mlflow_deployments.ok("delete", *target, "--name", "churn").stdout
    gone = mlflow_deployments.run("get", *target, "--name", "churn")
    assert_clean_error(gone, 2, "no endpoint named 'churn'")
    kinds = [event["kind"] for event in orchestrator.history("churn")]
    assert kinds.count("deployment_succeeded") == 3 and kinds[-1] == "endpoint_deleted"


@pytest.mark.slow
def test_an_interrupted_create_is_resumed_by_orchestrate(mlflow_deployments: MlflowDeployments,
                                                         example_model: Path) -> None:
    crashed = mlflow_deployments.run("create", "-t", "orchestrate:/noop", "--name", "churn", "-m",
                                     str(example_model), env={"ORCHESTRATE_FAULTS": "shift_traffic:crash-before"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    deployment_id = orchestrator.list_deployments()[0]["id"]
    client = get_deploy_client("orchestrate:/noop")
    with pytest.raises(MlflowException, match=f"unfinished deployment {deployment_id}.*orchestrate resume") as busy:
        client.create_deployment("churn", str(example_model))
    assert busy.value.error_code == "RESOURCE_CONFLICT"

    resumed = orchestrator.resume(deployment_id)
    assert resumed["status"] == "succeeded"
    assert client.get_deployment("churn")["deployment_id"] == deployment_id
    stages = [a["stage"] for a in resumed["attempts"] if a["status"] == "succeeded"]
    assert stages.count("create_endpoint") == 1  # done before the crash, not again


def test_mlflow_create_endpoint_command_fails_for_every_plugin(mlflow_deployments: MlflowDeployments) -> None:
    """MLflow 3.17.2's `create-endpoint` passes `endpoint=` to a function without that
    parameter: docs/mlflow-plugin.md says so. When MLflow fixes it, this test tells us to
    update the docs; the Python method answers clearly either way."""
    result = mlflow_deployments.run("create-endpoint", "-t", "orchestrate", "--endpoint", "churn")
    assert result.returncode == 1
    assert "TypeError: create_endpoint() got an unexpected keyword argument 'endpoint'" in result.stderr
    with pytest.raises(MlflowException, match="created by its first deployment") as refused:
        get_deploy_client("orchestrate").create_endpoint("churn")
    assert refused.value.error_code == "NOT_IMPLEMENTED"


# -- the local target -----------------------------------------------------------------------


# The local target starts its detached server with Popen in this process; the server outlives
# the Popen object by design, which Python reports when the object is collected.
@pytest.mark.filterwarnings(r"ignore:subprocess \d+ is still running:ResourceWarning")
@pytest.mark.slow
def test_local_target_through_cli_and_client(mlflow_deployments: MlflowDeployments, example_model: Path,
                                             example_model_v2: Path, tmp_path: Path) -> None:
    mlflow_deployments.ok("create", "-t", "orchestrate:/local", "--name", "iris", "-m", str(example_model),
                          "-C", "workers=2")
    predicted = mlflow_deployments.ok("predict", "-t", "orchestrate", "--name", "iris", "-I",
                                      str(records_file(example_model, tmp_path)))
    first_predictions = json.loads(predicted.stdout)["predictions"]
    assert len(first_predictions) == 4

    client = get_deploy_client("orchestrate:/local")
    answer = client.predict("iris", iris_frame(example_model))
    assert isinstance(answer, PredictionsResponse) and answer["predictions"] == first_predictions
    assert list(answer.get_predictions()[0]) == first_predictions
    deployment = client.get_deployment("iris")
    assert deployment["flavor"] == "python_function" and deployment["runtime"]["answering"] is True
    assert deployment["url"].startswith("http://127.0.0.1:")

    updated = client.update_deployment("iris", model_uri=str(example_model_v2))
    assert updated["name"] == "iris" and updated["flavor"] == "python_function"
    assert updated["url"] == deployment["url"]  # the endpoint keeps its address
    assert updated["config"]["workers"] == 2  # patched, not reset to the default
    assert client.predict("iris", iris_frame(example_model))["predictions"] != first_predictions

    reconfigured = client.update_deployment("iris", config={"threads": 2})
    assert reconfigured["model_digest"] == updated["model_digest"]
    assert reconfigured["deployment_id"] != updated["deployment_id"]
    assert (reconfigured["config"]["workers"], reconfigured["config"]["threads"]) == (2, 2)
    assert orchestrator.status("iris")["live"]["id"] == reconfigured["deployment_id"]

    assert [row["name"] for row in client.list_deployments()] == ["iris"]
    assert client.list_endpoints() == client.list_deployments()
    with pytest.raises(MlflowException, match="explain is not supported"):
        client.explain("iris", iris_frame(example_model))
    with pytest.raises(MlflowException, match="input"):
        client.predict("iris", {"dataframe_split": {"columns": ["nonsense"], "data": [["x"]]}})

    client.delete_deployment("iris")
    client.delete_deployment("iris")
    with pytest.raises(MlflowException, match="no endpoint named 'iris'") as missing:
        client.get_deployment("iris")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.filterwarnings(r"ignore:subprocess \d+ is still running:ResourceWarning")
@pytest.mark.mlflow
@pytest.mark.slow
def test_registry_models_on_local_target(mlflow_deployments: MlflowDeployments, tracking_env: RegisteredIris,
                                         example_model: Path, example_model_v2: Path, tmp_path: Path) -> None:
    champion = f"models:/{tracking_env.name}@champion"
    mlflow_deployments.ok("create", "-t", "orchestrate", "--name", "reg", "-m", champion)
    first = live("reg")
    assert first["model_uri"] == champion and first["model_digest"] == mlmodel.digest(example_model)
    predicted = mlflow_deployments.ok("predict", "-t", "orchestrate", "--name", "reg", "-I",
                                      str(records_file(example_model, tmp_path)))
    first_predictions = json.loads(predicted.stdout)["predictions"]

    client = get_deploy_client("orchestrate")
    updated = client.update_deployment("reg", model_uri=f"models:/{tracking_env.name}/2")
    assert updated["model_uri"] == f"models:/{tracking_env.name}/2"
    assert updated["model_digest"] == mlmodel.digest(example_model_v2)
    assert client.predict("reg", iris_frame(example_model))["predictions"] != first_predictions

    # Config only: the recorded snapshot of version 2 again, the registry not asked.
    reconfigured = client.update_deployment("reg", config={"workers": 2})
    assert reconfigured["model_uri"] == updated["model_uri"]
    assert reconfigured["model_digest"] == updated["model_digest"]
    client.delete_deployment("reg")
    client.delete_deployment("reg")

    missing = mlflow_deployments.run("create", "-t", "orchestrate", "--name", "reg2", "-m",
                                     f"models:/{tracking_env.name}@nosuch")
    assert_clean_error(missing, 2, "nosuch")


def test_client_errors_carry_orchestrates_message_and_hint(example_model: Path) -> None:
    client = get_deploy_client("orchestrate:/noop")
    with pytest.raises(MlflowException, match="nothing to update"):
        client.update_deployment("churn")
    with pytest.raises(MlflowException, match="no endpoint named 'churn' — see `orchestrate list`"):
        client.update_deployment("churn", config={"sleep_s": 1})
    with pytest.raises(MlflowException, match="flavor 'sklearn' is not supported"):
        client.create_deployment("churn", str(example_model), flavor="sklearn")
    with pytest.raises(MlflowException, match="invalid endpoint name 'Bad_Name'"):
        client.create_deployment("Bad_Name", str(example_model))
    with pytest.raises(MlflowException, match="config key 'sleep_s' .* must be float") as bad:
        client.create_deployment("churn", str(example_model), config={"sleep_s": "soon"})
    assert bad.value.error_code == "INVALID_PARAMETER_VALUE"
    assert orchestrator.list_deployments() == []  # bad input records nothing
    client.create_deployment("churn", str(example_model))
    try:
        with pytest.raises(MlflowException, match="is on target 'noop', not 'local'.*orchestrate:/noop"):
            get_deploy_client("orchestrate:/local").get_deployment("churn")
    finally:
        client.delete_deployment("churn")


@pytest.mark.slow
def test_run_local_serves_until_interrupted(mlflow_deployments: MlflowDeployments, example_model: Path,
                                           tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "run-local.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [mlflow_executable(), "deployments", "run-local", "-t", "orchestrate", "--name", "iris", "-m",
             str(example_model), "-C", f"port={port}", "-C", "env_manager=local"],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as ping:
                    assert ping.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "run-local never answered /ping"
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=(example_model / "serving_input_example.json").read_bytes(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert len(json.loads(answer.read())["predictions"]) == 4
        assert orchestrator.list_deployments() == []  # nothing recorded
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C: the plugin stops its server, then exits
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # its server too: nothing left behind
            server.wait()
            pytest.fail("run-local did not stop within 60 s of Ctrl-C:\n" + log.read_text())
    assert "serving" in log.read_text()


# -- the SageMaker emulator ------------------------------------------------------------------


@pytest.mark.emulator
@pytest.mark.docker
@pytest.mark.mlflow
def test_sagemaker_through_cli_and_client(mlflow_deployments: MlflowDeployments, aws: AwsEmulator,
                                          stub_images: dict[str, str], example_model: Path,
                                          example_model_v2: Path, tmp_path: Path,
                                          tracking_env: RegisteredIris) -> None:
    aws.container_mode = True  # each endpoint runs its stub image: predictions come from it
    aws.creating_s = 0.3
    fast = [arg for key, value in SAGEMAKER_FAST.items() for arg in ("-C", f"{key}={value}")]
    try:
        _sagemaker_steps(mlflow_deployments, aws, stub_images, example_model, example_model_v2, tmp_path, fast,
                         champion=f"models:/{tracking_env.name}@champion")
    finally:  # while the emulator still holds what was made (it is reset after the test)
        get_deploy_client("orchestrate:/sagemaker").delete_deployment("churn")


def _sagemaker_steps(mlflow_deployments: MlflowDeployments, aws: AwsEmulator, stub_images: dict[str, str],
                     example_model: Path, example_model_v2: Path, tmp_path: Path, fast: list[str],
                     champion: str) -> None:
    # Created from the registry (version 1 is example_model), updated below from a path.
    mlflow_deployments.ok("create", "-t", "orchestrate:/sagemaker", "--name", "churn", "-m", champion,
                          "-C", f"image={stub_images['v1']}", "-C", "instance_type=ml.c5.xlarge", *fast)
    assert aws.counts() == {"models": 1, "endpoint_configs": 1, "endpoints": 1}
    created = live("churn")
    assert created["model_uri"] == champion and created["model_digest"] == mlmodel.digest(example_model)
    predicted = mlflow_deployments.ok("predict", "-t", "orchestrate:/sagemaker", "--name", "churn", "-I",
                                      str(records_file(example_model, tmp_path)))
    assert json.loads(predicted.stdout) == {"predictions": ["1"] * 4}

    client = get_deploy_client("orchestrate:/sagemaker")
    deployment = client.get_deployment("churn")
    assert deployment["runtime"]["endpoint_status"] == "InService"
    assert [row["name"] for row in client.list_deployments()] == ["churn"]
    assert get_deploy_client("orchestrate:/local").list_deployments() == []

    # A new model (and its image): the instance type given at create is kept.
    updated = client.update_deployment("churn", model_uri=str(example_model_v2),
                                       config={"image": stub_images["v2"]})
    assert updated["config"]["instance_type"] == "ml.c5.xlarge"
    assert client.predict("churn", iris_frame(example_model))["predictions"] == ["2"] * 4

    # Config only: the same model and image on two instances.
    reconfigured = client.update_deployment("churn", config={"instance_count": 2})
    assert reconfigured["model_digest"] == updated["model_digest"]
    variant = aws.endpoints[("us-east-1", "churn")]
    config = next(p for op, p in reversed(aws.requests) if op == "CreateEndpointConfig")
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 2
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c5.xlarge"
    assert variant is not None
    assert client.predict("churn", iris_frame(example_model))["predictions"] == ["2"] * 4
    assert orchestrator.status("churn")["live"]["id"] == reconfigured["deployment_id"]

    for _ in range(2):
        mlflow_deployments.ok("delete", "-t", "orchestrate:/sagemaker", "--name", "churn")
    assert aws.counts() == {"models": 0, "endpoint_configs": 0, "endpoints": 0}


@pytest.fixture(autouse=True)
def _no_endpoint_left(orchestrate_home: Path) -> Any:
    yield
    delete_all({row["endpoint"] for row in orchestrator.list_deployments()})
