"""The skinny regression (issue 10) on the SageMaker emulator: the plain pyfunc MLflow saves,
in the image orchestrate builds, pushed to the emulator's ECR and run as SageMaker runs it,
answers through InvokeEndpoint."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from _plain_pyfunc import ANSWER, REQUEST, save_plain_pyfunc

from tests.emulators.aws import AwsEmulator
from tests.sagemaker.conftest import Cli, deploy_args

pytestmark = [pytest.mark.emulator, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def plain_pyfunc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_plain_pyfunc(tmp_path_factory.mktemp("plain") / "model")


def test_plain_pyfunc_serves_on_sagemaker(sm: Cli, aws: AwsEmulator, plain_pyfunc: Path) -> None:
    aws.container_mode = True
    args = deploy_args(plain_pyfunc, "plain-sm", "unused")
    args[args.index("image=unused") - 1: args.index("image=unused") + 1] = []  # build the real image
    result = sm.run(*args, "-C", "container_startup_timeout=300", timeout=900)
    assert result.returncode == 0, result.stderr
    try:
        runtime = boto3.client("sagemaker-runtime", endpoint_url=aws.url, region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        answer = runtime.invoke_endpoint(EndpointName="plain-sm", Body=json.dumps(REQUEST),
                                         ContentType="application/json")
        assert json.loads(answer["Body"].read()) == ANSWER
    finally:
        sm.ok("delete", "plain-sm", "--yes")
    assert aws.running_containers() == []
