"""A tracking server with MLflow's basic authentication (a real `mlflow server --app-name basic-auth`
of the session's own): a registry tag the user may not write is a warning on a deployment that
succeeds; credentials the server refuses are exit 2 naming the server and the fix, with nothing
recorded; the http(s) artifact route is read with the user's credentials. No password is ever in
an output or in a file of the home (state store, logs, snapshots)."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from _mlflow_helpers import AuthServer, Cli, artifact_route, describe, secret_in

from orchestrator.model import mlmodel

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _anonymous_by_default(auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands given no `env` (the cli fixture's clean-up deletes) talk to the auth server too,
    never to MLflow's default store in the working directory."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)


def assert_no_password(auth: AuthServer, cli: Cli, *results: subprocess.CompletedProcess[str],
                       extra: tuple[str, ...] = ()) -> None:
    for password in (*auth.passwords.values(), *extra):
        for result in results:
            assert password not in result.stdout + result.stderr, describe(result)
        assert secret_in(cli.home, password) == [], "a password was written under ORCHESTRATE_HOME"


def version_tags(auth: AuthServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    from mlflow import MlflowClient

    with monkeypatch.context() as patch:
        for name, value in auth.as_user("admin").items():
            patch.setenv(name, value)
        return dict(MlflowClient(tracking_uri=auth.url, registry_uri=auth.url).get_model_version(auth.model, "1").tags)


def test_a_read_only_user_deploys_and_is_warned_that_the_tag_failed(cli: Cli, auth_server: AuthServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"models:/{auth_server.model}/1"
    reader = auth_server.as_user("reader")
    deployed = cli.run("deploy", uri, "--name", "readonly", "--target", "noop", "-C", "registry_tags=true",
                       env=reader)
    assert deployed.returncode == 0, describe(deployed)
    output = deployed.stdout + deployed.stderr
    assert "warning: could not tag secured version 1 as serving on readonly: the model registry " \
           f"{auth_server.url} does not let user 'reader' edit registered model secured" in output, output
    assert "EDIT permission" in output and "-C registry_tags=false" in output
    assert "Traceback" not in output
    live = cli.json("status", "readonly", env=reader)["live"]
    assert live["status"] == "succeeded" and live["model_source"]["version"] == "1"
    history = json.loads(cli.ok("history", "readonly", "--json", env=reader).stdout)
    failed = [event for event in history if event["kind"] == "registry_tag_failed"]
    assert len(failed) == 1 and "EDIT permission" in failed[0]["message"], history
    assert "orchestrate.endpoint.readonly" not in version_tags(auth_server, monkeypatch)

    # The permission the warning names is the one that is missing: with EDIT the tag is written.
    editor = auth_server.as_user("editor")
    tagged = cli.run("deploy", uri, "--name", "editable", "--target", "noop", "-C", "registry_tags=true",
                     env=editor)
    assert tagged.returncode == 0 and "warning" not in tagged.stdout + tagged.stderr, describe(tagged)
    tag = json.loads(version_tags(auth_server, monkeypatch)["orchestrate.endpoint.editable"])
    assert tag["target"] == "noop" and tag["deployment_id"] == cli.json("status", "editable", env=editor)["live"]["id"]

    # Deleting is not stopped by the tag it cannot remove either.
    deleted = cli.run("delete", "readonly", "--yes", env=reader)
    assert deleted.returncode == 0, describe(deleted)
    assert "warning: could not remove the readonly tag of secured version 1" in deleted.stdout + deleted.stderr
    assert_no_password(auth_server, cli, deployed, tagged, deleted)


# Each URI form that reaches the authenticated server: (how to write it).
FORMS: dict[str, Callable[[AuthServer], str]] = {
    "models": lambda a: f"models:/{a.model}/1",
    "runs": lambda a: f"runs:/{a.run_id}/model",
    "mlflow-artifacts": lambda a: a.artifact_uri,
    "http": lambda a: artifact_route(a.url, a.artifact_uri),
}


def test_refused_credentials_are_exit_2_naming_the_server_and_the_fix(cli: Cli, auth_server: AuthServer) -> None:
    reader = auth_server.as_user("reader")
    cli.ok("deploy", f"models:/{auth_server.model}/1", "--name", "kept", "--target", "noop", env=reader)
    before, snapshots = cli.store_counts(), cli.snapshots()
    wrong = f"wrong-{secrets.token_hex(12)}"
    cases = {
        "a wrong password": ({**reader, "MLFLOW_TRACKING_PASSWORD": wrong}, "refused the credentials",
                             "user 'reader'", "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        "no credentials": ({"MLFLOW_TRACKING_URI": auth_server.url}, "refused the credentials",
                           "anonymous: MLFLOW_TRACKING_USERNAME is not set", "MLFLOW_TRACKING_PASSWORD"),
        "no permission": (auth_server.as_user("outsider"), "does not let", "user 'outsider'", "READ permission"),
    }
    results = []
    for form, write in FORMS.items():
        uri = write(auth_server)
        for case, (env, refused, who, fix) in cases.items():
            if case == "no credentials" and form != "models":
                continue  # the same refusal (401) as a wrong password: once is enough
            result = cli.run("deploy", uri, "--name", "kept", "--target", "noop", "--force", env=env)
            results.append(result)
            where = f"{form} with {case}: {describe(result)}"
            assert result.returncode == 2, where
            error = result.stderr
            assert f"Error: the MLflow server {auth_server.url} {refused}" in error, where
            assert uri in error and who in error and fix in error, where
            assert "Traceback" not in error and "trying again" not in error, where  # a refusal is not retried
            assert cli.store_counts() == before, where
            assert cli.snapshots() == snapshots, where
    assert_no_password(auth_server, cli, *results, extra=(wrong,))


def test_the_http_artifact_route_is_read_with_the_users_credentials(cli: Cli, auth_server: AuthServer,
                                                                    example_model: Path) -> None:
    """`http://HOST/api/2.0/mlflow-artifacts/artifacts/PATH` names its own server: it deploys with
    MLFLOW_TRACKING_URI pointing nowhere, signed in with MLFLOW_TRACKING_USERNAME/PASSWORD."""
    uri = artifact_route(auth_server.url, auth_server.artifact_uri)
    env = {**auth_server.as_user("reader"), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    deployed = cli.run("deploy", uri, "--name", "over-http", "--target", "noop", "--json", env=env)
    assert deployed.returncode == 0, describe(deployed)
    record = json.loads(deployed.stdout)
    assert record["model_source"]["kind"] == "artifacts" and record["model_uri"] == uri
    assert record["model_digest"] == mlmodel.read_model(str(example_model)).digest  # the files logged, whole

    not_a_route = f"{auth_server.url}/static-files/model"
    refused = cli.run("deploy", not_a_route, "--name", "over-http", "--target", "noop", env=env)
    assert refused.returncode == 2, describe(refused)
    assert f"model URI {not_a_route} is not a tracking server's artifact route" in refused.stderr
    assert "mlflow-artifacts" in refused.stderr and "Traceback" not in refused.stderr
    assert_no_password(auth_server, cli, deployed, refused)
