"""Model URIs end to end through the real CLI, a real tracking server and moto's S3: every URI
form deploys and serves, provenance is recorded and shown, one version has one digest, an alias
that moves does not move a deployment, and a URI that cannot be resolved records nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _mlflow_helpers import S3, Cli, Registry, artifact_route, describe

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

# Predictions of the example model's versions on its serving_input_example.json.
V1_PREDICTIONS = [0, 1, 2, 2]
V2_PREDICTIONS = [0, 2, 2, 1]


def predictions(cli: Cli, ref: str, example: Path, *extra: str) -> list[int]:
    answer: list[int] = json.loads(cli.ok("predict", ref, "-i", str(example), *extra).stdout)["predictions"]
    return answer


def live(cli: Cli, name: str) -> dict[str, Any]:
    record: dict[str, Any] = cli.json("status", name)["live"]
    return record


# Each form: (how to write it, version it names, what its recorded source says).
FORMS: dict[str, tuple[Callable[[Registry, S3, Path], str], int, Callable[[Registry], dict[str, Any]]]] = {
    "path": (lambda r, s, m: str(m), 1, lambda r: {"kind": "path"}),
    "file": (lambda r, s, m: m.as_uri(), 1, lambda r: {"kind": "path"}),
    "runs": (lambda r, s, m: f"runs:/{r.run_id}/model", 1, lambda r: {"kind": "runs", "run_id": r.run_id}),
    "models-version": (lambda r, s, m: f"models:/{r.name}/1", 1,
                       lambda r: {"kind": "registered", "registered_name": r.name, "version": "1", "run_id": r.run_id,
                                  "model_id": r.v1_model_id, "artifact_source": f"models:/{r.v1_model_id}"}),
    "models-alias": (lambda r, s, m: f"models:/{r.name}@champion", 1,
                     lambda r: {"kind": "registered", "version": "1", "alias": "champion",
                                "pinned_uri": f"models:/{r.name}/1"}),
    "models-stage": (lambda r, s, m: f"models:/{r.name}/Staging", 1,
                     lambda r: {"kind": "registered", "version": "1", "stage": "Staging"}),
    "models-latest": (lambda r, s, m: f"models:/{r.name}/latest", 2,
                      lambda r: {"kind": "registered", "version": "2", "pinned_uri": f"models:/{r.name}/2"}),
    "logged-model": (lambda r, s, m: f"models:/{r.v1_model_id}", 1,
                     lambda r: {"kind": "logged_model", "model_id": r.v1_model_id, "run_id": r.run_id}),
    "mlflow-artifacts": (lambda r, s, m: f"{r.artifact_uri}/plain", 1, lambda r: {"kind": "artifacts"}),
    # The same files through the tracking server's artifact route: what MLflow reads http(s) with.
    "http-artifacts": (lambda r, s, m: artifact_route(r.tracking_uri, f"{r.artifact_uri}/plain"), 1,
                       lambda r: {"kind": "artifacts"}),
    "s3": (lambda r, s, m: s.uri, 1, lambda r: {"kind": "s3", "pinned_uri": "s3://models/iris/v1"}),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_each_uri_form_deploys_on_local_and_serves(form: str, cli: Cli, registry: Registry, s3_env: S3,
                                                   example_model: Path) -> None:
    write, version, expected = FORMS[form]
    uri = write(registry, s3_env, example_model)
    name = f"uri-{form}"
    cli.ok("deploy", uri, "--name", name, "--target", "local")

    record = live(cli, name)
    assert record["model_source"].items() >= expected(registry).items(), record["model_source"]
    assert record["model_uri"] == (str(example_model) if form in ("path", "file") else uri)
    assert record["model_source"].get("uri") == record["model_uri"]
    assert predictions(cli, name, example_model / "serving_input_example.json") == (
        V1_PREDICTIONS if version == 1 else V2_PREDICTIONS)
    # The snapshot, not the registry, is what the stages read: it lies under this home, whole.
    assert record["model_digest"] in cli.snapshots()
    assert not [entry for entry in cli.snapshots() if entry.startswith(".")]


def test_status_list_and_history_show_what_an_alias_resolved_to(cli: Cli, registry: Registry) -> None:
    uri = f"models:/{registry.name}@champion"
    cli.ok("deploy", uri, "--name", "shown", "--target", "noop")
    line = f"{uri} → version 1 (run {registry.run_id[:8]}…)"
    assert line in cli.ok("status", "shown").stdout
    assert line in cli.ok("list").stdout
    assert line in cli.ok("history", "shown").stdout
    record = cli.json("list")[0]
    assert record["model"] == line
    assert record["model_source"]["alias"] == "champion" and record["model_source"]["version"] == "1"


def test_one_version_has_one_digest_however_it_is_addressed(cli: Cli, registry: Registry,
                                                           example_model: Path, example_model_v2: Path) -> None:
    forms = {
        "by-path": str(example_model),
        "by-version": f"models:/{registry.name}/1",
        "by-alias": f"models:/{registry.name}@champion",
        "by-logged-model": f"models:/{registry.v1_model_id}",
        "by-run": f"runs:/{registry.run_id}/model",
    }
    digests = {}
    for name, uri in forms.items():
        cli.ok("deploy", uri, "--name", name, "--target", "noop")
        digests[name] = live(cli, name)["model_digest"]
    assert len(set(digests.values())) == 1, digests
    # ... and that digest is the model's, not a constant: version 2 differs.
    cli.ok("deploy", f"models:/{registry.name}/2", "--name", "v2", "--target", "noop")
    assert live(cli, "v2")["model_digest"] not in digests.values()
    # A redeploy of the same version by another form is the no-op it should be.
    again = cli.ok("deploy", f"runs:/{registry.run_id}/model", "--name", "by-alias", "--target", "noop")
    assert "already live" in again.stdout


def test_runs_uri_picks_one_of_a_runs_two_models(cli: Cli, registry: Registry, example_model: Path,
                                                example_model_v2: Path) -> None:
    cli.ok("deploy", f"runs:/{registry.run_id}/model", "--name", "first", "--target", "noop")
    cli.ok("deploy", f"runs:/{registry.run_id}/challenger", "--name", "second", "--target", "noop")
    cli.ok("deploy", str(example_model), "--name", "v1-dir", "--target", "noop")
    cli.ok("deploy", str(example_model_v2), "--name", "v2-dir", "--target", "noop")
    assert live(cli, "first")["model_digest"] == live(cli, "v1-dir")["model_digest"]
    assert live(cli, "second")["model_digest"] == live(cli, "v2-dir")["model_digest"]
    assert live(cli, "first")["model_digest"] != live(cli, "second")["model_digest"]


def test_an_alias_moved_between_deploys_moves_only_the_next_deployment(
        cli: Cli, registry: Registry, example_model: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri)
    example = example_model / "serving_input_example.json"
    uri = f"models:/{registry.name}@champion"
    first = cli.json("deploy", uri, "--name", "moving", "--target", "local")
    assert predictions(cli, "moving", example) == V1_PREDICTIONS
    try:
        client.set_registered_model_alias(registry.name, "champion", "2")
        second = cli.json("deploy", uri, "--name", "moving", "--target", "local")
    finally:
        client.set_registered_model_alias(registry.name, "champion", "1")
    assert predictions(cli, "moving", example) == V2_PREDICTIONS
    assert second["model_source"]["version"] == "2" and first["model_source"]["version"] == "1"
    assert cli.json("status", str(first["id"]))["model_source"]["version"] == "1"  # the record stays

    # A rollback uses the recorded snapshot: it works with the tracking server unreachable.
    dead = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    restored = cli.json("rollback", "moving", env=dead)
    assert restored["status"] == "succeeded" and restored["model_source"]["version"] == "1"
    assert restored["model_digest"] == first["model_digest"]
    assert predictions(cli, "moving", example) == V1_PREDICTIONS


@pytest.mark.parametrize("missing", ["model", "version", "alias", "run", "logged-model", "artifact-path",
                                     "http-artifact-path", "http-not-an-artifact-route"])
def test_a_uri_that_names_nothing_is_exit_2_and_records_nothing(missing: str, cli: Cli,
                                                                registry: Registry) -> None:
    uri = {
        "model": "models:/no-such-model-anywhere/1",
        "version": f"models:/{registry.name}/99",
        "alias": f"models:/{registry.name}@nobody",
        "run": "runs:/0123456789abcdef0123456789abcdef/model",
        "logged-model": "models:/m-0123456789abcdef0123456789abcdef",
        "artifact-path": f"{registry.artifact_uri}/no-such-dir",
        "http-artifact-path": artifact_route(registry.tracking_uri, f"{registry.artifact_uri}/no-such-dir"),
        # MLflow reads http(s) only through a tracking server's artifact route (HttpArtifactRepository).
        "http-not-an-artifact-route": f"{registry.tracking_uri}/static-files/model",
    }[missing]
    cli.ok("deploy", f"models:/{registry.name}/1", "--name", "kept", "--target", "noop")
    before, snapshots = cli.store_counts(), cli.snapshots()
    result = cli.run("deploy", uri, "--name", "kept", "--target", "noop")
    assert result.returncode == 2, describe(result)
    assert uri in result.stderr and "Traceback" not in result.stderr
    assert cli.store_counts() == before
    assert cli.snapshots() == snapshots


def test_s3_endpoint_from_mlflow_s3_endpoint_url(cli: Cli, s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**s3.env(), "MLFLOW_S3_ENDPOINT_URL": s3.url}
    env.pop("AWS_ENDPOINT_URL")
    cli.ok("deploy", s3.uri, "--name", "from-s3", "--target", "noop", env=env)
    assert live(cli, "from-s3")["model_source"]["kind"] == "s3"
    empty = cli.run("deploy", "s3://models/nothing/here", "--name", "from-s3", "--target", "noop", env=env)
    assert empty.returncode == 2 and "s3://models/nothing/here" in empty.stderr, describe(empty)


def test_serve_predict_and_generate_dockerfile_take_uris(cli: Cli, registry: Registry, example_model: Path,
                                                         tmp_path: Path) -> None:
    example = example_model / "serving_input_example.json"
    assert predictions(cli, f"models:/{registry.name}@champion", example, "--env-manager", "local") == V1_PREDICTIONS
    assert predictions(cli, f"runs:/{registry.run_id}/challenger", example, "--env-manager", "local") == V2_PREDICTIONS
    cli.ok("generate-dockerfile", "-m", f"models:/{registry.name}/2", "-d", str(tmp_path / "context"))
    assert (tmp_path / "context" / "Dockerfile").is_file()
    assert "MLmodel" in {p.name for p in (tmp_path / "context").rglob("MLmodel")}


@pytest.mark.parametrize(("uri", "needs"), [("models:/churn@champion", "orchestrate[mlflow]"),
                                            ("s3://models/iris/v1", "orchestrate[aws]")])
def test_without_the_client_library_the_error_names_the_extra(uri: str, needs: str, orchestrate_home: Path) -> None:
    import subprocess
    import sys

    # The library is made unimportable in that process, as on a machine without the extra.
    blocked = "mlflow" if "mlflow" in needs else "boto3"
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            "from orchestrator.cli import main\n"
            f"sys.argv = ['orchestrate', 'deploy', {uri!r}, '--name', 'x', '--target', 'noop']\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert uri in result.stderr and needs in result.stderr and "Traceback" not in result.stderr
