"""The sagemaker target's pure parts: the AWS error table, resource names, config checks."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from orchestrator import config as config_module
from orchestrator.errors import ConfigError, PermanentTargetError, RetryableTargetError
from targets._aws import PERMANENT_HINTS, RETRYABLE_CODES, translate
from targets.sagemaker import MAX_NAME, SageMakerTarget, resource_name


def client_error(code: str, status: int = 400, message: str = "boom") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "CreateModel")


def test_the_error_table_is_complete_and_disjoint() -> None:
    assert not RETRYABLE_CODES & set(PERMANENT_HINTS)
    for code in RETRYABLE_CODES:
        assert isinstance(translate(client_error(code), "sagemaker CreateModel"), RetryableTargetError)
    for code, hint in PERMANENT_HINTS.items():
        error = translate(client_error(code, message="AWS says no"), "sagemaker CreateModel")
        assert type(error) is PermanentTargetError
        assert "AWS says no" in str(error) and error.hint == hint


@pytest.mark.parametrize("status,kind", [(500, RetryableTargetError), (503, RetryableTargetError),
                                         (400, PermanentTargetError), (404, PermanentTargetError)])
def test_unknown_codes_are_classified_by_status(status: int, kind: type) -> None:
    assert type(translate(client_error("SomethingNew", status), "x")) is kind


def test_connection_and_credential_errors() -> None:
    assert isinstance(translate(EndpointConnectionError(endpoint_url="https://x"), "x"), RetryableTargetError)
    error = translate(NoCredentialsError(), "sts GetCallerIdentity")
    assert isinstance(error, ConfigError) and "credentials" in str(error)


@pytest.mark.parametrize("endpoint", ["churn", "a" * 63, "x-" * 31 + "y", "A1"])
@pytest.mark.parametrize("deployment_id", [1, 987654321])
def test_resource_names_fit_sagemaker(endpoint: str, deployment_id: int) -> None:
    import re

    name = resource_name(endpoint, deployment_id)
    assert len(name) <= MAX_NAME
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", name)
    assert name.endswith(f"-d{deployment_id}")
    assert name == resource_name(endpoint, deployment_id)
    assert resource_name(endpoint, deployment_id) != resource_name(endpoint + "x"[: 63 - len(endpoint)] or endpoint,
                                                                   deployment_id + 1)


def test_cut_names_stay_distinct() -> None:
    assert resource_name("a" * 62 + "b", 7) != resource_name("a" * 62 + "c", 7)


def resolve(**values: Any) -> dict[str, Any]:
    target = SageMakerTarget()
    resolved = config_module.resolve("sagemaker", target.config_keys, {}, values)
    target.preflight(resolved, None)
    return resolved


@pytest.mark.parametrize("values,message", [
    ({"vpc.subnets": "subnet-1"}, "both vpc.subnets and vpc.security_groups"),
    ({"serverless.memory_mb": "3000"}, "serverless.memory_mb"),
    ({"serverless.memory_mb": "2048", "async.output_path": "s3://b/o"}, "serverless or asynchronous"),
    ({"async.output_path": "/tmp/out"}, "s3://"),
    ({"deployment.type": "canary", "deployment.canary_percent": "100"}, "canary_percent"),
    ({"container_startup_timeout": "5"}, "60-3600"),
    ({"data_capture.enabled": "true"}, "data_capture.s3_uri"),
    ({"instance_type": "m5.large"}, "not a SageMaker instance type"),
    ({"tags": "nokey"}, "k=v"),
    ({"mode": "upsert"}, "create, replace, add"),
])
def test_bad_config_is_a_config_error(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        resolve(**values)


def test_deployment_config_translation() -> None:
    resolved = resolve(**{"deployment.type": "canary", "deployment.canary_percent": "10", "deployment.wait_s": "600",
                          "deployment.alarms": "a,b", "deployment.termination_wait_s": "120"})
    assert SageMakerTarget._deployment_config(resolved) == {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 600,
                                            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}},
            "TerminationWaitInSeconds": 120},
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "a"}, {"AlarmName": "b"}]}}
    assert SageMakerTarget._deployment_config(resolve()) is None
