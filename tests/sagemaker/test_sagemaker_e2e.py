"""The sagemaker target end to end: the real CLI, real boto3, the AWS emulator (moto + layer).

Container mode runs each endpoint's image with the Docker engine, so a deployment is checked
by a real /ping and a real prediction forwarded through InvokeEndpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.emulators.aws import AwsEmulator
from tests.sagemaker.conftest import Cli, deploy_args

pytestmark = [pytest.mark.emulator, pytest.mark.docker]


def client(aws: AwsEmulator, service: str = "sagemaker") -> Any:
    return boto3.client(service, endpoint_url=aws.url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def deployment(sm: Cli, ref: str) -> dict[str, Any]:
    return sm.json("status", ref)  # type: ignore[no-any-return]


def invoke(aws: AwsEmulator, name: str, model: Path) -> Any:
    body = (model / "serving_input_example.json").read_bytes()
    answer = client(aws, "sagemaker-runtime").invoke_endpoint(EndpointName=name, Body=body,
                                                              ContentType="application/json")
    return json.loads(answer["Body"].read())["predictions"]


def test_first_deploy_update_rollback_delete_in_container_mode(
        sm: Cli, aws: AwsEmulator, example_model: Path, example_model_v2: Path, stub_images: dict[str, str],
        tmp_path: Path) -> None:
    aws.container_mode = True
    aws.creating_s = 0.3
    first = sm.run(*deploy_args(example_model, "churn", stub_images["v1"]))
    assert first.returncode == 0, first.stderr
    assert "endpoint churn: Creating" in first.stderr + first.stdout
    assert aws.counts() == {"models": 1, "endpoint_configs": 1, "endpoints": 1}
    assert set(invoke(aws, "churn", example_model)) == {"1"}
    pushed = aws.requests
    assert any(op == "CreateModel" and "@sha256:" in p["PrimaryContainer"]["Image"] for op, p in pushed)

    # A model-only update, blue/green canary: the new config serves, the old one is cleaned up.
    second = sm.run(*deploy_args(example_model_v2, "churn", stub_images["v2"], "-C", "deployment.type=canary",
                                 "-C", "deployment.canary_percent=20", "-C", "deployment.wait_s=1"))
    assert second.returncode == 0, second.stderr
    assert set(invoke(aws, "churn", example_model)) == {"2"}
    endpoint = aws.endpoints[("us-east-1", "churn")]
    assert "CANARY 20%" in endpoint.history
    update = next(p for op, p in aws.requests if op == "UpdateEndpoint")
    assert update["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    assert aws.counts() == {"models": 1, "endpoint_configs": 1, "endpoints": 1}
    assert len(aws.running_containers()) == 1

    status = deployment(sm, "churn")
    assert status["live"]["runtime"]["endpoint_status"] == "InService"
    assert status["live"]["runtime"]["endpoint_config"] == "churn-d2"
    kinds = {r["kind"] for r in deployment(sm, "2")["resources"]}
    assert {"sagemaker_model", "endpoint_config", "endpoint_update"} <= kinds

    # predict goes through sagemaker-runtime
    answer = sm.ok("predict", "churn", "-i", str(example_model / "serving_input_example.json"))
    assert '"2"' in answer.stdout

    # rollback: back to deployment 1's image and config, nothing rebuilt or pushed again
    pushes = aws.calls["GetAuthorizationToken"]
    sm.ok("rollback", "churn")
    assert set(invoke(aws, "churn", example_model)) == {"1"}
    assert aws.calls["GetAuthorizationToken"] == pushes

    sm.ok("delete", "churn", "--yes")
    assert aws.counts() == {"models": 0, "endpoint_configs": 0, "endpoints": 0}
    assert aws.running_containers() == []


def test_broken_model_on_update_keeps_old_config_serving(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    aws.container_mode = True
    sm.ok(*deploy_args(example_model, "churn", stub_images["v1"]))
    broken = sm.run(*deploy_args(example_model, "churn", stub_images["broken"], "-C", "deployment.type=all_at_once",
                                 "-C", "container_startup_timeout=60"))
    assert broken.returncode == 1
    assert "did not pass the ping health check" in broken.stderr
    record = deployment(sm, "2")
    assert record["status"] == "rolled_back"
    assert "rolled endpoint churn back to config churn-d1" in record["error"]
    assert set(invoke(aws, "churn", example_model)) == {"1"}
    assert aws.endpoints[("us-east-1", "churn")].config_name == "churn-d1"
    # the failed deployment's model and config are gone; the live one's remain
    assert aws.counts() == {"models": 1, "endpoint_configs": 1, "endpoints": 1}
    assert "ping health check" in client(aws).describe_endpoint(EndpointName="churn")["FailureReason"]
    assert "did not pass the ping health check" in deployment(sm, "churn")["live"]["runtime"]["failure_reason"]


def test_broken_model_on_first_creation_leaves_no_orphans(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    aws.container_mode = True
    result = sm.run(*deploy_args(example_model, "churn", stub_images["broken"], "-C", "container_startup_timeout=60"))
    assert result.returncode == 1
    assert "Failed" in result.stderr and "ping health check" in result.stderr
    assert deployment(sm, "1")["status"] == "failed"
    assert aws.counts() == {"models": 0, "endpoint_configs": 0, "endpoints": 0}
    assert aws.running_containers() == []


def test_keep_failed_keeps_resources_for_resume(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    aws.fail_next_provision("CapacityError: Unable to provision requested ML compute capacity.")
    result = sm.run(*deploy_args(example_model, "churn", stub_images["v1"], "--keep-failed"))
    assert result.returncode == 1
    assert "CapacityError" in result.stderr
    assert aws.counts() == {"models": 1, "endpoint_configs": 1, "endpoints": 1}
    assert aws.endpoints[("us-east-1", "churn")].status == "Failed"
    states = {r["kind"]: r["state"] for r in deployment(sm, "1")["resources"]}
    assert states["endpoint"] == "created"
    sm.ok("resume", "1")
    assert deployment(sm, "1")["status"] == "succeeded"
    assert aws.counts() == {"models": 1, "endpoint_configs": 1, "endpoints": 1}


def test_throttling_on_create_endpoint_config_is_retried(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    aws.fail("CreateEndpointConfig", "ThrottlingException", times=2, message="Rate exceeded")
    sm.ok(*deploy_args(example_model, "churn", stub_images["v1"]))
    assert aws.calls["CreateEndpointConfig"] == 3
    assert aws.counts() == {"models": 1, "endpoint_configs": 1, "endpoints": 1}


def test_server_error_is_retried(sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    aws.fail("CreateModel", "InternalFailure", status=500, times=1)
    sm.ok(*deploy_args(example_model, "churn", stub_images["v1"]))
    assert aws.calls["CreateModel"] == 2


def test_access_denied_fails_fast_with_the_aws_message(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    aws.fail("CreateModel", "AccessDeniedException", times=99,
             message="User: arn:aws:iam::123456789012:user/ci is not authorized to perform: sagemaker:CreateModel")
    started = time.monotonic()
    result = sm.run(*deploy_args(example_model, "churn", stub_images["v1"]))
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert aws.calls["CreateModel"] == 1
    assert "not authorized to perform: sagemaker:CreateModel" in result.stderr
    assert "IAM permissions" in result.stderr
    assert aws.counts()["endpoints"] == 0


def test_resource_limit_fails_fast_saying_what_to_change(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    aws.fail("CreateEndpoint", "ResourceLimitExceeded", times=99,
             message="The account-level service limit 'ml.m5.large for endpoint usage' is 0 Instances")
    result = sm.run(*deploy_args(example_model, "churn", stub_images["v1"]))
    assert result.returncode == 1
    assert aws.calls["CreateEndpoint"] == 1
    assert "service limit" in result.stderr and "quota increase" in result.stderr
    assert aws.counts() == {"models": 0, "endpoint_configs": 0, "endpoints": 0}


@pytest.mark.parametrize("operation,nth", [("CreateModel", 1), ("CreateEndpointConfig", 1), ("DescribeEndpoint", 2)],
                         ids=["after-create-model", "after-create-endpoint-config", "while-creating"])
def test_sigkill_then_resume_makes_exactly_one_of_each(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str], operation: str,
        nth: int) -> None:
    aws.creating_s = 1.5  # DescribeEndpoint #2 is then answered while the endpoint is Creating
    runner = sm.spawn(*deploy_args(example_model, "churn", stub_images["v1"]))
    aws.kill_after(operation, runner.pid, nth)
    runner.communicate(timeout=120)
    assert runner.returncode == -9
    if operation == "DescribeEndpoint":
        assert aws.endpoints[("us-east-1", "churn")].status == "Creating"
    resumed = sm.run("resume", "1")  # the dead runner was on this host: its lease is free
    assert resumed.returncode == 0, resumed.stderr
    assert aws.counts() == {"models": 1, "endpoint_configs": 1, "endpoints": 1}
    assert aws.calls["CreateEndpoint"] == 1
    assert deployment(sm, "1")["status"] == "succeeded"


def test_serverless_and_async_configs_reach_the_api(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str], tmp_path: Path) -> None:
    sm.ok(*deploy_args(example_model, "lite", stub_images["v1"], "-C", "serverless.memory_mb=2048",
                       "-C", "serverless.max_concurrency=8", "-C", "serverless.provisioned_concurrency=2"))
    variant = client(aws).describe_endpoint_config(EndpointConfigName="lite-d1")["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 8, "ProvisionedConcurrency": 2}
    assert "InstanceType" not in variant

    config = tmp_path / "async.yaml"
    config.write_text("async:\n  output_path: s3://bucket/out\n  failure_path: s3://bucket/failed\n"
                      "  success_topic: arn:aws:sns:us-east-1:123456789012:ok\n  max_concurrent_invocations: 4\n"
                      "tags:\n  team: risk\nenv:\n  MODEL_THREADS: '2'\ncontainer_startup_timeout: 120\n")
    sm.ok(*deploy_args(example_model, "batchy", stub_images["v1"], "--config", str(config)))
    described = client(aws).describe_endpoint_config(EndpointConfigName="batchy-d2")
    assert described["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": "s3://bucket/out", "S3FailurePath": "s3://bucket/failed",
                         "NotificationConfig": {"SuccessTopic": "arn:aws:sns:us-east-1:123456789012:ok"}},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4}}
    assert described["ProductionVariants"][0]["ContainerStartupHealthCheckTimeoutInSeconds"] == 120
    model = client(aws).describe_model(ModelName="batchy-d2")
    assert model["PrimaryContainer"]["Environment"] == {"MODEL_THREADS": "2"}
    tags = client(aws).list_tags(ResourceArn=model["ModelArn"])["Tags"]
    assert {"Key": "team", "Value": "risk"} in tags


def test_add_mode_adds_a_weighted_variant(
        sm: Cli, aws: AwsEmulator, example_model: Path, example_model_v2: Path, stub_images: dict[str, str]) -> None:
    aws.container_mode = True
    sm.ok(*deploy_args(example_model, "churn", stub_images["v1"]))
    sm.ok(*deploy_args(example_model_v2, "churn", stub_images["v2"], "-C", "mode=add", "-C", "variant_weight=0.25"))
    weights = {v["VariantName"]: v["CurrentWeight"]
               for v in client(aws).describe_endpoint(EndpointName="churn")["ProductionVariants"]}
    assert weights == {"AllTraffic": 1.0, "d2": 0.25}
    assert any(op == "UpdateEndpointWeightsAndCapacities" for op, _p in aws.requests)
    # both variants serve; the first deployment's model stays (its variant still serves)
    answers = {invoke(aws, "churn", example_model)[0] for _ in range(40)}
    assert answers == {"1", "2"}
    assert aws.counts() == {"models": 2, "endpoint_configs": 1, "endpoints": 1}
    assert len(aws.running_containers()) == 2


def test_create_mode_refuses_an_existing_endpoint(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    sm.ok(*deploy_args(example_model, "churn", stub_images["v1"]))
    result = sm.run(*deploy_args(example_model, "churn", stub_images["v1"], "-C", "mode=create"))
    assert result.returncode == 1
    assert "already exists" in result.stderr and "mode=replace" in result.stderr
    # and AWS itself rejects a second CreateEndpoint with the same name
    with pytest.raises(client(aws).exceptions.ClientError, match="Cannot create already existing endpoint"):
        client(aws).create_endpoint(EndpointName="churn", EndpointConfigName="churn-d1")


def test_push_is_skipped_when_ecr_has_the_tag(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    sm.ok(*deploy_args(example_model, "one", stub_images["v1"]))
    logins = aws.calls["GetAuthorizationToken"]  # 0 when an earlier test pushed this image already
    sm.ok(*deploy_args(example_model, "two", stub_images["v1"]))
    pushes = [a for a in deployment(sm, "2")["attempts"] if a["stage"] == "push"]
    assert pushes[-1]["outputs"]["pushed"] is False
    assert aws.calls["GetAuthorizationToken"] == logins


def test_bad_config_is_rejected_before_anything_is_recorded(sm: Cli, example_model: Path) -> None:
    result = sm.run("deploy", str(example_model), "--name", "x", "--target", "sagemaker", "-C", "bogus=1")
    assert result.returncode == 2
    assert "unknown config key 'bogus'" in result.stderr and "instance_type" in result.stderr
    result = sm.run("deploy", str(example_model), "--name", "x", "--target", "sagemaker",
                    "-C", "serverless.memory_mb=1500")
    assert result.returncode == 2 and "serverless.memory_mb" in result.stderr
    result = sm.run("deploy", str(example_model), "--name", "x", "--target", "sagemaker", "-C", "role_arn=nope")
    assert result.returncode == 2 and "not an IAM role ARN" in result.stderr


def test_role_cannot_be_derived_from_an_iam_user(sm: Cli, example_model: Path, stub_images: dict[str, str]) -> None:
    result = sm.run("deploy", str(example_model), "--name", "x", "--target", "sagemaker",
                    "-C", f"image={stub_images['v1']}")
    assert result.returncode == 1
    assert "cannot derive a SageMaker execution role" in result.stderr and "role_arn" in result.stderr


def test_cancel_a_failed_deployment_releases_what_it_kept(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    aws.fail_next_provision("CapacityError: Unable to provision requested ML compute capacity.")
    assert sm.run(*deploy_args(example_model, "churn", stub_images["v1"], "-C", "keep_failed=true")).returncode == 1
    assert aws.counts()["endpoints"] == 1
    sm.ok("cancel", "1")
    assert aws.counts() == {"models": 0, "endpoint_configs": 0, "endpoints": 0}


def test_failed_health_check_after_update_restores_the_previous_config(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    aws.container_mode = True
    sm.ok(*deploy_args(example_model, "churn", stub_images["v1"]))
    # passes /ping (so SageMaker calls the update a success) but fails every prediction
    result = sm.run(*deploy_args(example_model, "churn", stub_images["v2"], "-C", "env=STUB_BAD_PREDICT=1"))
    assert result.returncode == 1
    assert "smoke prediction" in result.stderr and "bad weights" in result.stderr
    assert deployment(sm, "2")["status"] == "rolled_back"
    assert aws.endpoints[("us-east-1", "churn")].config_name == "churn-d1"
    assert set(invoke(aws, "churn", example_model)) == {"1"}
    assert aws.counts() == {"models": 1, "endpoint_configs": 1, "endpoints": 1}


def test_cloudwatch_alarm_rolls_the_update_back(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    sm.ok(*deploy_args(example_model, "churn", stub_images["v1"]))
    aws.alarms_firing.add("churn-5xx")
    result = sm.run(*deploy_args(example_model, "churn", stub_images["v2"], "-C", "deployment.type=linear",
                                 "-C", "deployment.linear_percent=50", "-C", "deployment.wait_s=1",
                                 "-C", "deployment.alarms=churn-5xx,churn-latency"))
    assert result.returncode == 1
    record = deployment(sm, "2")
    assert record["status"] == "rolled_back"
    assert "SageMaker rolled endpoint churn back to config churn-d1" in record["error"]
    assert "churn-5xx" in record["error"]
    update = next(p for op, p in aws.requests if op == "UpdateEndpoint")
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": "churn-5xx"}, {"AlarmName": "churn-latency"}]}
    assert "RollingBack" in aws.endpoints[("us-east-1", "churn")].history


@pytest.mark.parametrize("policy", ["all_at_once", "linear"])
def test_blue_green_update_succeeds(sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str],
                                    policy: str) -> None:
    aws.updating_s = 0.2
    sm.ok(*deploy_args(example_model, "churn", stub_images["v1"]))
    sm.ok(*deploy_args(example_model, "churn", stub_images["v2"], "-C", f"deployment.type={policy}",
                       "-C", "deployment.wait_s=0", "-C", "deployment.termination_wait_s=0"))
    endpoint = aws.endpoints[("us-east-1", "churn")]
    assert endpoint.config_name == "churn-d2"
    expected = ["ALL_AT_ONCE 100%"] if policy == "all_at_once" else ["LINEAR 25%", "LINEAR 50%", "LINEAR 75%",
                                                                     "LINEAR 100%"]
    assert [h for h in endpoint.history if "%" in h] == expected
    assert "Updating" in endpoint.history


def test_delete_images_removes_pushed_images(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str], docker_client: Any) -> None:
    sm.ok(*deploy_args(example_model, "churn", stub_images["v1"], "-C", "delete_images=true",
                       "-C", "ecr_repository=delete-me"))
    ecr = client(aws, "ecr")
    tag = next(a for a in deployment(sm, "1")["attempts"] if a["stage"] == "build")["outputs"]["image_tag"]
    assert ecr.describe_images(repositoryName="delete-me", imageIds=[{"imageTag": tag}])["imageDetails"]
    sm.ok("delete", "churn", "--yes")
    with pytest.raises(ecr.exceptions.ImageNotFoundException):
        ecr.describe_images(repositoryName="delete-me", imageIds=[{"imageTag": tag}])
    assert aws.counts() == {"models": 0, "endpoint_configs": 0, "endpoints": 0}


@pytest.mark.slow
def test_real_scoring_image_end_to_end(sm: Cli, aws: AwsEmulator, example_model: Path) -> None:
    """The image orchestrate builds (orchestrator.images) runs as SageMaker runs it: `serve` on 8080."""
    aws.container_mode = True
    args = deploy_args(example_model, "iris", "unused")
    args[args.index("image=unused") - 1: args.index("image=unused") + 1] = []
    result = sm.run(*args, "-C", "container_startup_timeout=300")
    assert result.returncode == 0, result.stderr
    record = deployment(sm, "1")
    build = next(a for a in record["attempts"] if a["stage"] == "build")["outputs"]
    assert build["image"].startswith("orchestrate-models:")
    health = next(a for a in record["attempts"] if a["stage"] == "health_check")["outputs"]
    assert health["smoke_predictions"] == len(invoke(aws, "iris", example_model))
    sm.ok("delete", "iris", "--yes")
    assert aws.running_containers() == []


def test_credentials_are_never_stored(sm: Cli, aws: AwsEmulator, example_model: Path,
                                      stub_images: dict[str, str], orchestrate_home: Path) -> None:
    secret = "wJalrXUtnFEMI-never-store-this-0123"
    sm.ok(*deploy_args(example_model, "churn", stub_images["v1"]), env={"AWS_SECRET_ACCESS_KEY": secret})
    stored = b"".join(p.read_bytes() for p in orchestrate_home.rglob("*") if p.is_file())
    assert secret.encode() not in stored
    assert b"AWS_SECRET_ACCESS_KEY" not in stored


def test_cancel_while_creating_releases_everything(
        sm: Cli, aws: AwsEmulator, example_model: Path, stub_images: dict[str, str]) -> None:
    aws.creating_s = 3.0
    runner = sm.spawn(*deploy_args(example_model, "churn", stub_images["v1"]))
    deadline = time.monotonic() + 60
    while ("us-east-1", "churn") not in aws.endpoints and time.monotonic() < deadline:
        time.sleep(0.05)
    cancelled = sm.run("cancel", "1")
    runner.communicate(timeout=120)
    assert cancelled.returncode == 0, cancelled.stderr
    assert deployment(sm, "1")["status"] == "cancelled"
    assert aws.counts() == {"models": 0, "endpoint_configs": 0, "endpoints": 0}
