"""`deploy` to a live endpoint as `mlflow deployments update` does: the config starts from the live
deployment's, -C patches it, --reset-config starts again; the same model and config again is a
no-op unless --force; MLflow's SageMaker -C names are accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _mlflow_helpers import Cli, Registry, describe

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]


def live(cli: Cli, name: str) -> dict[str, object]:
    record: dict[str, object] = cli.json("status", name)["live"]
    return record


def test_config_is_inherited_on_redeploy_and_reset_with_reset_config(cli: Cli, registry: Registry) -> None:
    first = cli.json("deploy", f"models:/{registry.name}/1", "--name", "patched", "--target", "noop",
                     "-C", "max_attempts=5", "-C", "startup_timeout=30")
    # A new model, one key changed: the other chosen key stays, as `mlflow deployments update` patches.
    second = cli.json("deploy", f"models:/{registry.name}/2", "--name", "patched", "--target", "noop",
                      "-C", "startup_timeout=45")
    assert second["config"]["max_attempts"] == 5 and second["config"]["startup_timeout"] == 45
    assert second["config_sources"]["max_attempts"] == f"deployment {first['id']}"
    assert second["config_sources"]["startup_timeout"] == "-C"
    assert second["config_sources"]["retry_max_s"] == "default"
    shown = cli.ok("status", "patched").stdout
    assert f"max_attempts=5 (deployment {first['id']})" in shown and "startup_timeout=45.0 (-C)" in shown

    reset = cli.json("deploy", f"models:/{registry.name}/1", "--name", "patched", "--target", "noop",
                     "--reset-config")
    assert reset["config"]["max_attempts"] == 3 and reset["config"]["startup_timeout"] == 120
    assert set(reset["config_sources"].values()) == {"default"}


def test_deploying_what_is_live_is_a_noop_unless_forced(cli: Cli, registry: Registry) -> None:
    uri = f"models:/{registry.name}@champion"
    first = cli.json("deploy", uri, "--name", "steady", "--target", "noop", "-C", "max_attempts=4")
    counts = cli.store_counts()

    again = cli.ok("deploy", uri, "--name", "steady", "--target", "noop")  # -C max_attempts=4 inherited
    assert "already live" in again.stdout and f"deployment {first['id']}" in again.stdout, describe(again)
    assert cli.store_counts()["deployments"] == counts["deployments"]
    as_json = cli.json("deploy", uri, "--name", "steady", "--target", "noop")
    assert as_json["unchanged"] is True and as_json["id"] == first["id"]

    changed = cli.json("deploy", uri, "--name", "steady", "--target", "noop", "-C", "max_attempts=6")
    assert changed["id"] != first["id"] and changed["status"] == "succeeded"
    forced = cli.json("deploy", uri, "--name", "steady", "--target", "noop", "--force")
    assert forced["id"] != changed["id"] and forced["status"] == "succeeded"
    assert live(cli, "steady")["id"] == forced["id"]


def test_sagemaker_takes_mlflows_config_names(example_model: Path, cli: Cli) -> None:
    from orchestrator import config
    from targets.base import load_target

    target = load_target("sagemaker")
    given = target.normalize_config({
        "region_name": "eu-west-1", "execution_role_arn": "arn:aws:iam::123456789012:role/x",
        "instance_type": "ml.c5.xlarge", "instance_count": "2", "timeout_seconds": "900", "synchronous": "true",
        "vpc_config": '{"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1", "subnet-2"]}',
        "serverless_config": '{"MemorySizeInMB": 2048, "MaxConcurrency": 3}',
        "async_inference_config": '{"OutputConfig": {"S3OutputPath": "s3://b/out"}}',
        "data_capture_config": '{"EnableCapture": true, "DestinationS3Uri": "s3://b/cap"}',
        "env": '{"A": "1"}', "tags": "team=ml",
    }, "-C")
    resolved = config.resolve("sagemaker", target.config_keys, {}, given)
    assert resolved["region"] == "eu-west-1" and resolved["role_arn"].endswith("role/x")
    assert resolved["instance_count"] == 2 and resolved["wait_timeout"] == 900
    assert resolved["vpc.subnets"] == ["subnet-1", "subnet-2"] and resolved["vpc.security_groups"] == ["sg-1"]
    assert resolved["serverless.memory_mb"] == 2048 and resolved["serverless.max_concurrency"] == 3
    assert resolved["async.output_path"] == "s3://b/out"
    assert resolved["data_capture.enabled"] is True and resolved["data_capture.s3_uri"] == "s3://b/cap"
    assert resolved["env"] == {"A": "1"} and resolved["tags"] == {"team": "ml"}

    # Through the CLI: a key MLflow takes that means nothing here, and an unknown key listing
    # every valid one, dotted ones included; both before anything is recorded.
    bucket = cli.run("deploy", str(example_model), "--name", "sm", "--target", "sagemaker", "-C", "bucket=b")
    assert bucket.returncode == 2 and "'bucket'" in bucket.stderr and "image" in bucket.stderr, describe(bucket)
    unknown = cli.run("deploy", str(example_model), "--name", "sm", "--target", "sagemaker", "-C", "nope=1")
    assert unknown.returncode == 2, describe(unknown)
    for key in ("vpc.subnets", "deployment.canary_percent", "serverless.memory_mb", "instance_type"):
        assert key in unknown.stderr
    assert cli.store_counts()["deployments"] == 0


def test_registry_tags_follow_the_version_that_serves(cli: Cli, registry: Registry) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri)
    key = "orchestrate.endpoint.tagged"

    def tags(version: str) -> dict[str, str]:
        return dict(client.get_model_version(registry.name, version).tags)

    cli.ok("deploy", f"models:/{registry.name}/1", "--name", "untagged", "--target", "noop")
    assert "orchestrate.endpoint.untagged" not in tags("1")  # opt-in only

    first = cli.json("deploy", f"models:/{registry.name}@champion", "--name", "tagged", "--target", "noop",
                     "-C", "registry_tags=true")
    assert json.loads(tags("1")[key]) == {"target": "noop", "deployment_id": first["id"], "url": None}
    second = cli.json("deploy", f"models:/{registry.name}/2", "--name", "tagged", "--target", "noop")
    assert json.loads(tags("2")[key])["deployment_id"] == second["id"]  # registry_tags inherited
    assert key not in tags("1"), "the version that stopped serving keeps its tag"
    # Queued and run by a worker, not by the deploying CLI: the tag moves all the same.
    queued = cli.json("deploy", f"models:/{registry.name}/1", "--name", "tagged", "--target", "noop", "--detach")
    cli.ok("worker", "--once")
    assert json.loads(tags("1")[key])["deployment_id"] == queued["id"]
    assert key not in tags("2"), "the version the worker's deployment replaced keeps its tag"
    cli.ok("delete", "tagged", "--yes")
    cli.endpoints.discard("tagged")
    assert key not in tags("1")
