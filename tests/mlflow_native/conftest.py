"""Fixtures for MLflow-native models: a real tracking server and registry, S3 through moto.

- ``tracking_uri`` (session): the `mlflow server` scripts/test.sh starts
  (``ORCHESTRATE_TEST_MLFLOW_URI``). Skips locally when unset; fails in CI (``CI=true``) and
  whenever it is set but does not answer.
- ``registry`` (session): through the MLflow client, one run holding two MLflow 3 logged models
  (``model`` = the example model v1, ``challenger`` = v2) plus the v1 directory as plain run
  artifacts (``plain``), and a registered model with version 1 (v1, alias ``champion``, stage
  Staging) and version 2 (v2). Names are unique per session, so runs never collide.
- ``mlflow_env`` (autouse): this test's environment points MLflow at the server, with MLflow's
  own HTTP retries off (our retries are what the tests check).
- ``s3`` (session): moto's server (tests/emulators/aws.py, S3 only: no Docker needed) holding
  the v1 model under ``s3://models/iris/v1``.
- ``cli``: `orchestrate` as a real subprocess against this test's home; deletes what it deployed.
- ``private_server``: a tracking server of this test's own, to stop and start.
- ``auth_server`` (session): a tracking server of the session's own with MLflow's basic
  authentication (``mlflow server --app-name basic-auth``, needs ``mlflow[auth]``), its users
  and one registered model version (``AuthServer`` in _mlflow_helpers).
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from _mlflow_helpers import (
    S3,
    AuthServer,
    Cli,
    PrivateServer,
    Registry,
    answers,
    in_ci,
    log_model_dir,
)


@pytest.fixture(scope="session")
def tracking_uri() -> str:
    url = os.environ.get("ORCHESTRATE_TEST_MLFLOW_URI")
    if not url:
        if in_ci():
            pytest.fail("CI=true but ORCHESTRATE_TEST_MLFLOW_URI is not set: MLflow tests must not be skipped "
                        "in CI; run the suite through scripts/test.sh")
        pytest.skip("no MLflow tracking server configured; run scripts/test.sh")
    if not answers(url):
        pytest.fail(f"the MLflow tracking server at ORCHESTRATE_TEST_MLFLOW_URI={url} does not answer")
    return url


@pytest.fixture(autouse=True)
def mlflow_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    if "tracking_uri" in request.fixturenames or "registry" in request.fixturenames:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("tracking_uri"))


@pytest.fixture(scope="session")
def registry(tracking_uri: str, example_model: Path, example_model_v2: Path) -> Registry:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    tag = uuid.uuid4().hex[:8]
    experiment_id = client.create_experiment(f"orchestrate-tests-{tag}")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    v1 = log_model_dir(client, experiment_id, run_id, "model", example_model)
    v2 = log_model_dir(client, experiment_id, run_id, "challenger", example_model_v2)
    client.log_artifacts(run_id, str(example_model), "plain")
    client.set_terminated(run_id)
    name = f"iris-{tag}"
    client.create_registered_model(name)
    client.create_model_version(name, source=f"models:/{v1}", run_id=run_id, model_id=v1)
    client.create_model_version(name, source=f"models:/{v2}", run_id=run_id, model_id=v2)
    client.set_registered_model_alias(name, "champion", "1")
    with warnings.catch_warnings():  # stages are deprecated in MLflow, and still in use
        warnings.simplefilter("ignore")
        client.transition_model_version_stage(name, "1", "Staging")
    return Registry(tracking_uri, name, run_id, v1, v2, run.info.artifact_uri)


# -- S3 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3(example_model: Path) -> Iterator[S3]:
    import boto3

    from tests.emulators.aws import AwsEmulator

    emulator = AwsEmulator().start()
    store = S3(emulator.url, "s3://models/iris/v1")
    client = boto3.client("s3", endpoint_url=emulator.url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket="models")
    for file in sorted(example_model.rglob("*")):
        if file.is_file():
            client.upload_file(str(file), "models", f"iris/v1/{file.relative_to(example_model).as_posix()}")
    yield store
    emulator.stop()


@pytest.fixture
def s3_env(s3: S3, monkeypatch: pytest.MonkeyPatch) -> S3:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def cli(orchestrate_home: Path) -> Iterator[Cli]:
    helper = Cli(orchestrate_home)
    try:
        yield helper
    finally:
        helper.teardown()


# -- a tracking server of the test's own ------------------------------------------------------


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[PrivateServer]:
    server = PrivateServer(tmp_path / "private-mlflow")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


# -- a tracking server with authentication ----------------------------------------------------


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory, example_model: Path) -> Iterator[AuthServer]:
    import importlib.util
    import secrets

    import requests
    from mlflow import MlflowClient

    if importlib.util.find_spec("flask_wtf") is None:
        pytest.fail("MLflow's authentication app needs Flask-WTF (mlflow[auth]): pip install -e '.[test]'")
    directory = tmp_path_factory.mktemp("auth-mlflow")
    # Random passwords, so finding one in an output or a file means it leaked from there.
    passwords = {user: f"{user}-{secrets.token_hex(12)}" for user in ("admin", "reader", "editor", "outsider")}
    config = directory / "basic_auth.ini"
    config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                      f"database_uri = sqlite:///{directory / 'auth.db'}\n"
                      f"admin_username = admin\nadmin_password = {passwords['admin']}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    server = PrivateServer(directory, args=("--app-name", "basic-auth"),
                           env={"MLFLOW_AUTH_CONFIG_PATH": str(config),
                                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
    server.start()
    try:
        admin = ("admin", passwords["admin"])
        with pytest.MonkeyPatch.context() as patch:  # the admin makes the model
            patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            patch.setenv("MLFLOW_TRACKING_PASSWORD", passwords["admin"])
            client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
            experiment_id = client.create_experiment("secured")
            run_id = client.create_run(experiment_id).info.run_id
            model_id = log_model_dir(client, experiment_id, run_id, "model", example_model)
            client.log_artifacts(run_id, str(example_model), "plain")
            client.set_terminated(run_id)
            client.create_registered_model("secured")
            client.create_model_version("secured", source=f"models:/{model_id}", run_id=run_id, model_id=model_id)
            artifact_uri = f"{client.get_run(run_id).info.artifact_uri}/plain"
        # MLflow's auth REST API (what AuthServiceClient calls; importing that drags in the
        # server's FastAPI app and its deprecation warnings).
        for user in ("reader", "editor", "outsider"):
            created = requests.post(f"{server.url}/api/2.0/mlflow/users/create", auth=admin, timeout=60,
                                    json={"username": user, "password": passwords[user]})
            assert created.status_code == 200, created.text
        for user, permission in (("reader", "READ"), ("editor", "EDIT")):
            for kind, resource in (("experiment", experiment_id), ("registered_model", "secured")):
                granted = requests.post(f"{server.url}/api/3.0/mlflow/users/permissions/grant", auth=admin,
                                        timeout=60, json={"username": user, "resource_type": kind,
                                                          "resource_id": resource, "permission": permission})
                assert granted.status_code == 200, granted.text
        yield AuthServer(server.url, passwords, "secured", run_id, artifact_uri)
    finally:
        server.stop()
