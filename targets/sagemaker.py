"""The `sagemaker` target: an Amazon SageMaker real-time (or serverless, or async) endpoint.

build and push: the image stages every container target shares (targets/_container.py); this
target's hooks name the ECR repository (created when missing), log in with an ECR token, and
ask ECR whether it has the tag already (then the push is skipped without a login).
create_endpoint: model → endpoint config → endpoint created or updated, each named from the
endpoint and deployment id, recorded planned before and created after, adopted when a rerun
finds it (describe before create); then waits on EndpointStatus. A failed update leaves
SageMaker on the old config; a config of ours that still serves when we release it is first
swapped back to the config it replaced, so the endpoint never ends up on nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.model import mlmodel
from orchestrator.target_contract import (
    ConfigError,
    ConfigKey,
    Invocation,
    Outputs,
    PermanentTargetError,
    ResourceState,
    ResourceView,
    RetryableTargetError,
    StageContext,
    TargetError,
    validated_model,
)
from targets._container import PUSHED_IMAGE, ContainerImageTarget

if TYPE_CHECKING:
    from orchestrator.images import Credentials

MODEL = "sagemaker_model"
ENDPOINT_CONFIG = "endpoint_config"
ENDPOINT = "endpoint"
ENDPOINT_UPDATE = "endpoint_update"
ECR_REPOSITORY = "ecr_repository"
ECR_IMAGE = "ecr_image"  # what the push stage recorded before the shared image stage (now PUSHED_IMAGE)

MAX_NAME = 63
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")
_SETTLING = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
DEPLOYMENT_TYPES = ("none", "all_at_once", "canary", "linear")


def resource_name(endpoint: str, deployment_id: int) -> str:
    """`<endpoint>-d<id>`, within 63 characters and SageMaker's pattern; a cut name keeps a hash."""
    suffix = f"-d{deployment_id}"
    if len(endpoint) + len(suffix) <= MAX_NAME:
        return endpoint + suffix
    digest = hashlib.sha256(endpoint.encode()).hexdigest()[:6]
    keep = MAX_NAME - len(suffix) - len(digest) - 1
    return f"{endpoint[:keep].rstrip('-')}-{digest}{suffix}"


def _as_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return [str(part) for part in value]
    raise ConfigError(f"expected a list or comma-separated text, got {value!r}")


def _as_dict(key: str, value: Any) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if all(sep for _k, sep, _v in pairs):
            return {k.strip(): v for k, _sep, v in pairs}
    raise ConfigError(f"config key {key!r} must be a mapping (in the config file) or k=v,k2=v2; got {value!r}")


def _key(kind: type, default: Any, help_: str, **kw: Any) -> ConfigKey:
    return ConfigKey(kind, default, help_, **kw)


# MLflow's SageMaker deployment config names and ours (see docs/mlflow.md).
_MLFLOW_RENAMED = {
    "region_name": "region",
    "execution_role_arn": "role_arn",
    "image_url": "image",
    "timeout_seconds": "wait_timeout",
}
_MLFLOW_UNSUPPORTED = {
    "bucket": "the model travels inside the image, so no S3 bucket is used; drop it",
    "assume_role_arn": "give the role through an AWS profile (-C profile=NAME) or the credential chain",
    "variant_name": "variant names are derived from the deployment id, so a resumed deployment finds its own",
    "flavor": "every model is served through its python_function flavor",
}


def _json_value(key: str, value: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise ConfigError(
            f"config key {key!r} ({where}) must be JSON, as MLflow takes it; got {value!r}",
            hint=f"""e.g. -C {key}='{{"...": ...}}'""",
        ) from None


def _mapping(key: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key {key!r} must be a JSON object; got {value!r}")
    return value


def _from_vpc_config(value: Any) -> dict[str, Any]:
    vpc = _mapping("vpc_config", value)
    return {
        "vpc.subnets": list(vpc.get("Subnets") or []),
        "vpc.security_groups": list(vpc.get("SecurityGroupIds") or []),
    }


def _from_data_capture_config(value: Any) -> dict[str, Any]:
    capture = _mapping("data_capture_config", value)
    out: dict[str, Any] = {"data_capture.enabled": bool(capture.get("EnableCapture", bool(capture)))}
    if "DestinationS3Uri" in capture:
        out["data_capture.s3_uri"] = capture["DestinationS3Uri"]
    if "InitialSamplingPercentage" in capture:
        out["data_capture.sampling_percentage"] = capture["InitialSamplingPercentage"]
    return out


def _from_async_inference_config(value: Any) -> dict[str, Any]:
    config = _mapping("async_inference_config", value)
    output = _mapping("async_inference_config.OutputConfig", config.get("OutputConfig"))
    notify = _mapping("async_inference_config.OutputConfig.NotificationConfig", output.get("NotificationConfig"))
    client = _mapping("async_inference_config.ClientConfig", config.get("ClientConfig"))
    pairs = {
        "async.output_path": output.get("S3OutputPath"),
        "async.failure_path": output.get("S3FailurePath"),
        "async.success_topic": notify.get("SuccessTopic"),
        "async.error_topic": notify.get("ErrorTopic"),
        "async.max_concurrent_invocations": client.get("MaxConcurrentInvocationsPerInstance"),
    }
    return {key: item for key, item in pairs.items() if item is not None}


def _from_serverless_config(value: Any) -> dict[str, Any]:
    config = _mapping("serverless_config", value)
    pairs = {
        "serverless.memory_mb": config.get("MemorySizeInMB"),
        "serverless.max_concurrency": config.get("MaxConcurrency"),
        "serverless.provisioned_concurrency": config.get("ProvisionedConcurrency"),
    }
    return {key: item for key, item in pairs.items() if item is not None}


_MLFLOW_JSON_KEYS = {
    "vpc_config": _from_vpc_config,
    "data_capture_config": _from_data_capture_config,
    "async_inference_config": _from_async_inference_config,
    "serverless_config": _from_serverless_config,
}


class SageMakerTarget(ContainerImageTarget):
    name = "sagemaker"
    description = "an Amazon SageMaker endpoint (real-time, serverless or async), image pushed to ECR"
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "region": _key(str, "", "AWS region (default: the AWS configuration's)"),
        "profile": _key(str, "", "AWS profile (default: the standard credential chain)"),
        "role_arn": _key(str, "", "SageMaker execution role ARN (default: derived from the caller's assumed role)"),
        "image": _key(str, "", "a local image to push instead of building one"),
        "base_image": _key(str, "", "base of the built image (default: python:X.Y-slim matching the model)"),
        "pip_requirements_override": _key(
            str, "", "comma-separated requirements that replace or add to the model's (e.g. 'scikit-learn==1.5.2')"
        ),
        "ecr_repository": _key(str, "orchestrate-models", "ECR repository name for the image"),
        "instance_type": _key(str, "ml.m5.large", "instance type of the production variant"),
        "instance_count": _key(int, 1, "initial instance count", minimum=1),
        "mode": _key(
            str,
            "replace",
            "create: fail if the endpoint exists; replace: update it; add: add a variant next to the live ones",
            choices=("create", "replace", "add"),
        ),
        "variant_weight": _key(float, 1.0, "add mode: the new variant's weight once health-checked", minimum=0),
        "vpc.subnets": _key(list, None, "VPC subnet ids (list or comma-separated)"),
        "vpc.security_groups": _key(list, None, "VPC security group ids (list or comma-separated)"),
        "data_capture.enabled": _key(bool, False, "capture requests and responses to S3"),
        "data_capture.s3_uri": _key(str, "", "s3:// destination of captured data"),
        "data_capture.sampling_percentage": _key(int, 100, "percent of requests captured", minimum=1),
        "tags": _key(dict, None, "tags on every resource (mapping, or k=v,k2=v2)"),
        "env": _key(dict, None, "environment variables of the model container (mapping, or k=v,k2=v2)"),
        "serverless.memory_mb": _key(
            int, 0, "serverless endpoint memory (1024-6144 MB, steps of 1024); 0: instance-backed", minimum=0
        ),
        "serverless.max_concurrency": _key(int, 5, "serverless max concurrent invocations", minimum=1),
        "serverless.provisioned_concurrency": _key(int, 0, "serverless provisioned concurrency", minimum=0),
        "async.output_path": _key(str, "", "s3:// output path: makes the endpoint asynchronous"),
        "async.failure_path": _key(str, "", "s3:// path for failed async invocations"),
        "async.success_topic": _key(str, "", "SNS topic ARN notified on async success"),
        "async.error_topic": _key(str, "", "SNS topic ARN notified on async errors"),
        "async.max_concurrent_invocations": _key(int, 0, "async invocations per instance (0: SageMaker's)", minimum=0),
        "container_startup_timeout": _key(
            int,
            0,
            "seconds the container has to pass /ping (ContainerStartupHealthCheckTimeoutInSeconds; 0: SageMaker's)",
            minimum=0,
        ),
        "model_data_download_timeout": _key(int, 0, "ModelDataDownloadTimeoutInSeconds (0: SageMaker's)", minimum=0),
        "deployment.type": _key(
            str,
            "none",
            "update policy: none (SageMaker's default), all_at_once, canary or linear (blue/green)",
            choices=DEPLOYMENT_TYPES,
        ),
        "deployment.canary_percent": _key(int, 10, "canary: percent of capacity shifted first", minimum=1),
        "deployment.linear_percent": _key(int, 25, "linear: percent of capacity shifted per step", minimum=1),
        "deployment.wait_s": _key(int, 300, "seconds to bake between traffic shifts", minimum=0),
        "deployment.termination_wait_s": _key(int, 0, "seconds before the old fleet is terminated", minimum=0),
        "deployment.max_execution_s": _key(int, 0, "MaximumExecutionTimeoutInSeconds (0: SageMaker's)", minimum=0),
        "deployment.alarms": _key(list, None, "CloudWatch alarm names that roll the update back"),
        "wait_timeout": _key(float, 3600.0, "seconds to wait for the endpoint to settle", minimum=1),
        "poll_interval": _key(float, 2.0, "first wait between status polls, seconds", minimum=0.01),
        "poll_max_interval": _key(float, 30.0, "longest wait between status polls, seconds", minimum=0.01),
        "archive": _key(bool, False, "keep old models and endpoint configs after a successful update"),
        "keep_failed": _key(bool, False, "keep what a failed first creation made, for inspection and resume"),
        "delete_images": _key(bool, False, "`orchestrate delete` also deletes the pushed ECR images"),
    }
    # Released on failure, cancel and delete. ECR images and repositories outlive deployments
    # (content-tagged, reused); `delete_images` removes the images with the endpoint.
    disposable_kinds = frozenset({ENDPOINT, ENDPOINT_CONFIG, MODEL})

    # -- config ---------------------------------------------------------------------------

    def normalize_config(self, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """`mlflow deployments -t sagemaker` / `mlflow sagemaker` config names (-C region_name=…,
        -C vpc_config='{"Subnets": …}') as this target's keys, so MLflow users keep their flags."""
        normalized: dict[str, Any] = {}
        for key, value in values.items():
            if key in _MLFLOW_RENAMED:
                normalized[_MLFLOW_RENAMED[key]] = value
            elif key in ("env", "tags") and isinstance(value, str) and value.lstrip().startswith("{"):
                normalized[key] = dict(_mapping(key, _json_value(key, value, where)))  # MLflow writes JSON
            elif key in _MLFLOW_JSON_KEYS:
                normalized.update(_MLFLOW_JSON_KEYS[key](_json_value(key, value, where)))
            elif key == "synchronous":
                if str(value).strip().lower() not in ("1", "true", "yes", "on"):
                    raise ConfigError(
                        f"config key 'synchronous={value}' ({where}): orchestrate always waits for "
                        "the endpoint and records each stage",
                        hint="queue it for a worker instead with `orchestrate deploy --detach`",
                    )
            elif key in _MLFLOW_UNSUPPORTED:
                raise ConfigError(
                    f"config key {key!r} ({where}) of MLflow's SageMaker target has no use here: "
                    f"{_MLFLOW_UNSUPPORTED[key]}"
                )
            else:
                normalized[key] = value
        return normalized

    def preflight(self, config: Mapping[str, Any], live_outputs: Mapping[str, Any] | None) -> None:
        role = str(config.get("role_arn") or "")
        if role and not role.startswith(("env:", "file:")) and not _ROLE_ARN.match(role):
            raise ConfigError(
                f"role_arn {role!r} is not an IAM role ARN", hint="write arn:aws:iam::123456789012:role/NAME"
            )
        if not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", str(config["ecr_repository"])):
            raise ConfigError(
                f"ecr_repository {config['ecr_repository']!r} is not a valid ECR repository name",
                hint="use lower-case letters, digits and . _ - /",
            )
        if not str(config["instance_type"]).startswith("ml."):
            raise ConfigError(
                f"instance_type {config['instance_type']!r} is not a SageMaker instance type",
                hint="e.g. -C instance_type=ml.m5.large",
            )
        subnets = _as_list(config.get("vpc.subnets"))
        groups = _as_list(config.get("vpc.security_groups"))
        if bool(subnets) != bool(groups):
            raise ConfigError("a VPC config needs both vpc.subnets and vpc.security_groups")
        _as_dict("tags", config.get("tags"))
        _as_dict("env", config.get("env"))
        _as_list(config.get("deployment.alarms"))
        if config.get("data_capture.enabled") and not str(config.get("data_capture.s3_uri", "")).startswith("s3://"):
            raise ConfigError("data_capture.enabled needs data_capture.s3_uri=s3://bucket/prefix")
        memory = int(config.get("serverless.memory_mb") or 0)
        if memory and (memory % 1024 or not 1024 <= memory <= 6144):
            raise ConfigError(f"serverless.memory_mb must be 1024, 2048, ... 6144; got {memory}")
        if memory and int(config.get("serverless.provisioned_concurrency") or 0) > int(
            config["serverless.max_concurrency"]
        ):
            raise ConfigError("serverless.provisioned_concurrency cannot exceed serverless.max_concurrency")
        for key in ("async.output_path", "async.failure_path"):
            if config.get(key) and not str(config[key]).startswith("s3://"):
                raise ConfigError(f"{key} must be an s3:// URI; got {config[key]!r}")
        if config.get("async.failure_path") and not config.get("async.output_path"):
            raise ConfigError("async.failure_path needs async.output_path")
        if memory and config.get("async.output_path"):
            raise ConfigError("an endpoint is either serverless or asynchronous, not both")
        for key in ("container_startup_timeout", "model_data_download_timeout"):
            if 0 < int(config.get(key) or 0) < 60:
                raise ConfigError(f"{key} must be 60-3600 seconds (SageMaker's range), or 0 for SageMaker's default")
        kind = config["deployment.type"]
        if kind != "none" and memory:
            raise ConfigError(
                "blue/green deployment.type does not apply to serverless endpoints", hint="leave deployment.type=none"
            )
        if kind == "canary" and not 1 <= int(config["deployment.canary_percent"]) <= 99:
            raise ConfigError("deployment.canary_percent must be 1-99")
        if kind == "linear" and not 1 <= int(config["deployment.linear_percent"]) <= 99:
            raise ConfigError("deployment.linear_percent must be 1-99")
        if config["mode"] == "add" and memory:
            raise ConfigError("mode=add needs instance-backed variants (serverless.memory_mb=0)")

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _aws(ctx: StageContext | None, config: Mapping[str, Any], region: str | None = None) -> Any:
        """AWS clients for the config's profile, in the recorded region when there is one."""
        from targets._aws import Aws

        return Aws(
            region=region or str(config.get("region") or ""),
            profile=str(config.get("profile") or ""),
            log=ctx.log if ctx is not None else None,
        )

    def _ctx_aws(self, ctx: StageContext) -> Any:
        return self._aws(ctx, ctx.config, ctx.outputs.get("region"))

    # -- stages ---------------------------------------------------------------------------

    def validate(self, ctx: StageContext) -> Outputs:
        model = validated_model(ctx)
        config = ctx.config
        aws = self._aws(ctx, config)
        identity = aws.call("sts", "get_caller_identity")
        role = str(config.get("role_arn") or "") or self._derive_role(aws, str(identity["Arn"]))
        ctx.log(f"AWS account {identity['Account']}, region {aws.region}, execution role {role}")
        return {
            **model,
            "region": aws.region,
            "account": str(identity["Account"]),
            "role_arn": role,
            "profile": str(config.get("profile") or ""),
        }

    @staticmethod
    def _derive_role(aws: Any, caller_arn: str) -> str:
        """The caller's role, as MLflow does: an assumed-role session maps to its IAM role."""
        match = re.match(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/", caller_arn)
        if match:
            partition, account, role = match.groups()
            try:
                return str(aws.call("iam", "get_role", RoleName=role)["Role"]["Arn"])
            except TargetError:
                return f"arn:{partition}:iam::{account}:role/{role}"
        if re.match(r"^arn:aws[a-z-]*:iam::\d{12}:role/", caller_arn):
            return caller_arn
        raise ConfigError(
            f"cannot derive a SageMaker execution role from the caller {caller_arn} (not an assumed role)",
            hint="give one: -C role_arn=arn:aws:iam::ACCOUNT:role/NAME (it needs the permissions in docs/sagemaker.md)",
        )

    # -- the image (the stages themselves: targets/_container.py) --------------------------

    def image_repository(self, ctx: StageContext) -> str:
        return str(ctx.config["ecr_repository"])

    def build(self, ctx: StageContext) -> Outputs:
        """The shared scoring image, or the local image given with -C image."""
        given = str(ctx.config.get("image") or "")
        if not given:
            return super().build(ctx)
        from orchestrator.images import docker_engine

        with docker_engine.translated(f"looking up image {given}", hint="build or pull it, or leave -C image out"):
            local = docker_engine.connect().images.get(given)
        tag = "img-" + str(local.id).split(":", 1)[-1][:20]
        ctx.log(f"using local image {given} ({str(local.id)[:19]}) as tag {tag}")
        return {"image": given, "image_id": str(local.id), "image_tag": tag}

    def push_repository(self, ctx: StageContext) -> str:
        """The ECR repository's URI, the repository created (and recorded) when missing."""
        aws = self._ctx_aws(ctx)
        repository = str(ctx.config["ecr_repository"])
        try:
            repo = aws.call("ecr", "describe_repositories", repositoryNames=[repository])["repositories"][0]
        except TargetError as exc:
            if not _aws_code(exc, "RepositoryNotFoundException"):
                raise
            record = ctx.plan(ECR_REPOSITORY, repository)
            tags = _tag_list(_as_dict("tags", ctx.config.get("tags")))
            repo = aws.call("ecr", "create_repository", repositoryName=repository, **({"tags": tags} if tags else {}))[
                "repository"
            ]
            ctx.mark(record, ResourceState.CREATED, external_id=repo["repositoryArn"])
            ctx.log(f"created ECR repository {repo['repositoryUri']}")
        return str(repo["repositoryUri"])

    def registry_digest(self, ctx: StageContext, repository: str, tag: str) -> str | None:
        # ECR's API answers without the token login a push through the engine needs.
        return self._ecr_digest(self._ctx_aws(ctx), str(ctx.config["ecr_repository"]), tag)

    def registry_credentials(self, ctx: StageContext, registry: str) -> Credentials:
        from orchestrator import images

        token = self._ctx_aws(ctx).call("ecr", "get_authorization_token")["authorizationData"][0]
        user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
        return images.Credentials(user, password, registry)

    @staticmethod
    def _ecr_digest(aws: Any, repository: str, tag: str) -> str | None:
        try:
            details = aws.call("ecr", "describe_images", repositoryName=repository, imageIds=[{"imageTag": tag}])[
                "imageDetails"
            ]
        except TargetError as exc:
            if _aws_code(exc, "ImageNotFoundException"):
                return None
            raise
        return str(details[0]["imageDigest"]) if details else None

    def create_endpoint(self, ctx: StageContext) -> Outputs:
        aws = self._ctx_aws(ctx)
        config = ctx.config
        endpoint = ctx.deployment.endpoint_name
        name = resource_name(endpoint, ctx.deployment.id)
        tags = _tag_list(
            {
                **_as_dict("tags", config.get("tags")),
                "orchestrate:endpoint": endpoint,
                "orchestrate:deployment": str(ctx.deployment.id),
            }
        )
        model_arn = self._ensure(
            ctx,
            aws,
            MODEL,
            name,
            "describe_model",
            "ModelName",
            "ModelArn",
            lambda: aws.call("sagemaker", "create_model", **self._model_request(ctx, name, tags)),
        )
        current = self._describe_endpoint(aws, endpoint)
        if current is not None and current["EndpointStatus"] in _SETTLING and current.get("EndpointConfigName") != name:
            ctx.log(f"endpoint {endpoint} is {current['EndpointStatus']}; waiting for it to settle first")
            current = self._settle(ctx, aws, endpoint)
        previous_config = (current or {}).get("EndpointConfigName")
        if previous_config == name:  # a rerun after our update or creation went through
            recorded = ctx.find(ENDPOINT_CONFIG, name)
            previous_config = recorded.data.get("previous_config") if recorded is not None else None
        mode = str(config["mode"])
        if current is not None and mode == "create" and ctx.find(ENDPOINT, endpoint) is None:
            raise PermanentTargetError(
                f"SageMaker endpoint {endpoint} already exists ({current['EndpointStatus']}) and mode is create",
                hint="update it with -C mode=replace, add a variant with -C mode=add, or choose another --name",
            )
        variants = self._variants(ctx, name, mode, current, aws)
        config_request: dict[str, Any] = {
            "EndpointConfigName": name,
            "ProductionVariants": variants,
            "Tags": tags,
            **self._endpoint_config_extras(config),
        }
        config_arn = self._ensure(
            ctx,
            aws,
            ENDPOINT_CONFIG,
            name,
            "describe_endpoint_config",
            "EndpointConfigName",
            "EndpointConfigArn",
            lambda: aws.call("sagemaker", "create_endpoint_config", **config_request),
            data={"previous_config": previous_config},
        )
        if current is not None and current["EndpointStatus"] == "Failed":
            if ctx.live_outputs is not None:
                raise PermanentTargetError(
                    f"endpoint {endpoint} is Failed ({current.get('FailureReason')}) and cannot be updated",
                    hint=f"`orchestrate delete {endpoint}`, then deploy again",
                )
            # A failed endpoint cannot be updated; one from a failed first creation is made anew.
            ctx.log(f"endpoint {endpoint} is Failed ({current.get('FailureReason')}); deleting it to create anew")
            self._delete_endpoint(ctx, aws, endpoint)
            for stale in ctx.endpoint_resources():
                if stale.kind == ENDPOINT and stale.name == endpoint and stale.deployment_id != ctx.deployment.id:
                    ctx.mark(stale, ResourceState.DELETED)
            current, previous_config = None, None
        if current is None:
            record = ctx.find(ENDPOINT, endpoint)
            if record is None or record.state == ResourceState.DELETED:
                record = ctx.plan(ENDPOINT, endpoint, {"config": name})
            arn = aws.call("sagemaker", "create_endpoint", EndpointName=endpoint, EndpointConfigName=name, Tags=tags)[
                "EndpointArn"
            ]
            ctx.mark(record, ResourceState.CREATED, external_id=arn, data={"config": name})
            ctx.log(f"creating endpoint {endpoint} with config {name}")
        elif current.get("EndpointConfigName") != name:
            record = ctx.find(ENDPOINT_UPDATE, endpoint)
            if (
                record is not None
                and record.state == ResourceState.CREATED
                and current["EndpointStatus"] == "InService"
            ):
                # Our update was accepted earlier and the endpoint is back on another config.
                raise self._rolled_back(endpoint, name, current)
            record = record or ctx.plan(ENDPOINT_UPDATE, endpoint, {"config": name, "previous_config": previous_config})
            request: dict[str, Any] = {"EndpointName": endpoint, "EndpointConfigName": name}
            policy = self._deployment_config(config)
            if policy:
                request["DeploymentConfig"] = policy
            aws.call("sagemaker", "update_endpoint", **request)
            ctx.mark(record, ResourceState.CREATED, external_id=current["EndpointArn"])
            ctx.log(
                f"updating endpoint {endpoint}: {previous_config} → {name}"
                + (f" ({config['deployment.type']})" if policy else "")
            )
        else:
            record = ctx.find(ENDPOINT, endpoint)
            if record is not None and record.state == ResourceState.PLANNED:
                ctx.mark(record, ResourceState.CREATED, external_id=current["EndpointArn"])
            ctx.log(f"endpoint {endpoint} already uses config {name} ({current['EndpointStatus']}); adopting")
        final = self._settle(ctx, aws, endpoint)
        if final["EndpointStatus"] != "InService":
            raise PermanentTargetError(
                f"endpoint {endpoint} is {final['EndpointStatus']}: {final.get('FailureReason') or 'no reason given'}",
                hint="fix the cause (model, image, instance type), then deploy again or "
                f"`orchestrate resume {ctx.deployment.id}`",
            )
        if final.get("EndpointConfigName") != name:
            raise self._rolled_back(endpoint, name, final)
        return {
            "endpoint_name": endpoint,
            "endpoint_arn": final["EndpointArn"],
            "endpoint_config": name,
            "endpoint_config_arn": config_arn,
            "model_name": name,
            "model_arn": model_arn,
            "previous_config": previous_config,
            "variant": variants[-1]["VariantName"],
            "variants": _variant_summary(final),
            "asynchronous": bool(config.get("async.output_path")),
        }

    @staticmethod
    def _rolled_back(endpoint: str, name: str, described: Mapping[str, Any]) -> PermanentTargetError:
        return PermanentTargetError(
            f"SageMaker rolled endpoint {endpoint} back to config {described.get('EndpointConfigName')} "
            f"instead of {name}: {described.get('FailureReason') or 'no reason given'}",
            hint="the previous deployment keeps serving; fix the model, then deploy again",
        )

    def _ensure(
        self,
        ctx: StageContext,
        aws: Any,
        kind: str,
        name: str,
        describe: str,
        key: str,
        arn_key: str,
        create: Any,
        data: dict[str, Any] | None = None,
    ) -> str:
        """Describe before create: adopt what exists, else record planned, create, record created."""
        record = ctx.find(kind, name)
        try:
            found = aws.call("sagemaker", describe, **{key: name})
        except TargetError as exc:
            if not _aws_missing(exc):
                raise
            found = None
        if found is not None:
            arn = str(found[arn_key])
            if record is not None and record.state in (ResourceState.CREATED, ResourceState.ADOPTED):
                return arn
            # Planned by us: the runner died between the call and the record. Otherwise adopted.
            if record is not None and record.state == ResourceState.PLANNED:
                ctx.mark(record, ResourceState.CREATED, external_id=arn, data=data)
            else:
                ctx.mark(ctx.plan(kind, name, data), ResourceState.ADOPTED, external_id=arn, data=data)
            ctx.log(f"{kind} {name} already exists; adopting it")
            return arn
        if record is None or record.state != ResourceState.PLANNED:
            record = ctx.plan(kind, name, data)
        arn = str(create()[arn_key])
        ctx.mark(record, ResourceState.CREATED, external_id=arn, data=data)
        ctx.log(f"created {kind} {name}")
        return arn

    def _model_request(self, ctx: StageContext, name: str, tags: list[dict[str, str]]) -> dict[str, Any]:
        config = ctx.config
        request: dict[str, Any] = {
            "ModelName": name,
            "ExecutionRoleArn": ctx.outputs["role_arn"],
            "PrimaryContainer": {
                "Image": _pushed_image(ctx.outputs),
                "Mode": "SingleModel",
                "Environment": _as_dict("env", config.get("env")),
            },
            "Tags": tags,
        }
        subnets = _as_list(config.get("vpc.subnets"))
        if subnets:
            request["VpcConfig"] = {"Subnets": subnets, "SecurityGroupIds": _as_list(config.get("vpc.security_groups"))}
        return request

    def _variants(
        self, ctx: StageContext, name: str, mode: str, current: Mapping[str, Any] | None, aws: Any
    ) -> list[dict[str, Any]]:
        config = ctx.config
        variant: dict[str, Any] = {"ModelName": name}
        memory = int(config.get("serverless.memory_mb") or 0)
        if memory:
            serverless = {"MemorySizeInMB": memory, "MaxConcurrency": int(config["serverless.max_concurrency"])}
            if int(config.get("serverless.provisioned_concurrency") or 0):
                serverless["ProvisionedConcurrency"] = int(config["serverless.provisioned_concurrency"])
            variant["ServerlessConfig"] = serverless
        else:
            variant["InstanceType"] = str(config["instance_type"])
            variant["InitialInstanceCount"] = int(config["instance_count"])
            if int(config.get("container_startup_timeout") or 0):
                variant["ContainerStartupHealthCheckTimeoutInSeconds"] = int(config["container_startup_timeout"])
            if int(config.get("model_data_download_timeout") or 0):
                variant["ModelDataDownloadTimeoutInSeconds"] = int(config["model_data_download_timeout"])
        if mode != "add" or current is None or current.get("EndpointConfigName") == name:
            if mode == "add" and current is not None and current.get("EndpointConfigName") == name:
                # Adopting our own add: the config already exists and holds every variant.
                found = aws.call("sagemaker", "describe_endpoint_config", EndpointConfigName=name)
                return list(found["ProductionVariants"])
            return [{"VariantName": "AllTraffic", "InitialVariantWeight": 1.0, **variant}]
        # add: the live variants stay as they are; ours starts with no traffic until health-checked.
        live = aws.call("sagemaker", "describe_endpoint_config", EndpointConfigName=current["EndpointConfigName"])
        weights = {
            v["VariantName"]: v.get("CurrentWeight", v.get("DesiredWeight"))
            for v in current.get("ProductionVariants", [])
        }
        kept = []
        for old in live["ProductionVariants"]:
            old = dict(old)
            if weights.get(old["VariantName"]) is not None:
                old["InitialVariantWeight"] = float(weights[old["VariantName"]])
            kept.append(old)
        return [*kept, {"VariantName": f"d{ctx.deployment.id}", "InitialVariantWeight": 0.0, **variant}]

    @staticmethod
    def _endpoint_config_extras(config: Mapping[str, Any]) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        if config.get("data_capture.enabled"):
            extras["DataCaptureConfig"] = {
                "EnableCapture": True,
                "InitialSamplingPercentage": int(config["data_capture.sampling_percentage"]),
                "DestinationS3Uri": str(config["data_capture.s3_uri"]),
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            }
        if config.get("async.output_path"):
            output: dict[str, Any] = {"S3OutputPath": str(config["async.output_path"])}
            if config.get("async.failure_path"):
                output["S3FailurePath"] = str(config["async.failure_path"])
            notify = {
                k: str(config[c])
                for k, c in (("SuccessTopic", "async.success_topic"), ("ErrorTopic", "async.error_topic"))
                if config.get(c)
            }
            if notify:
                output["NotificationConfig"] = notify
            async_config: dict[str, Any] = {"OutputConfig": output}
            if int(config.get("async.max_concurrent_invocations") or 0):
                async_config["ClientConfig"] = {
                    "MaxConcurrentInvocationsPerInstance": int(config["async.max_concurrent_invocations"])
                }
            extras["AsyncInferenceConfig"] = async_config
        return extras

    @staticmethod
    def _deployment_config(config: Mapping[str, Any]) -> dict[str, Any] | None:
        kind = str(config["deployment.type"])
        alarms = _as_list(config.get("deployment.alarms"))
        if kind == "none":
            return {"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms]}} if alarms else None
        wait = int(config["deployment.wait_s"])
        routing: dict[str, Any] = {"Type": kind.upper(), "WaitIntervalInSeconds": wait}
        if kind == "canary":
            routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": int(config["deployment.canary_percent"])}
        elif kind == "linear":
            routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT", "Value": int(config["deployment.linear_percent"])}
        blue_green: dict[str, Any] = {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": int(config["deployment.termination_wait_s"]),
        }
        if int(config.get("deployment.max_execution_s") or 0):
            blue_green["MaximumExecutionTimeoutInSeconds"] = int(config["deployment.max_execution_s"])
        policy: dict[str, Any] = {"BlueGreenUpdatePolicy": blue_green}
        if alarms:
            policy["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
        return policy

    @staticmethod
    def _describe_endpoint(aws: Any, endpoint: str) -> dict[str, Any] | None:
        try:
            return dict(aws.call("sagemaker", "describe_endpoint", EndpointName=endpoint))
        except TargetError as exc:
            if _aws_missing(exc):
                return None
            raise

    def _settle(self, ctx: StageContext, aws: Any, endpoint: str) -> dict[str, Any]:
        """Poll with backoff until the endpoint leaves its transitional statuses; shows changes live."""
        config = ctx.config
        deadline = time.monotonic() + float(config["wait_timeout"])
        delay = float(config["poll_interval"])
        last = None
        while True:
            described = self._describe_endpoint(aws, endpoint)
            if described is None:
                raise PermanentTargetError(
                    f"endpoint {endpoint} disappeared while we waited for it",
                    hint=f"`orchestrate resume {ctx.deployment.id}` creates it again",
                )
            status = described["EndpointStatus"]
            if status != last:
                reason = described.get("FailureReason")
                ctx.log(f"endpoint {endpoint}: {status}" + (f" ({reason})" if reason and status != "InService" else ""))
                last = status
            if status not in _SETTLING:
                return described
            if time.monotonic() > deadline:
                raise RetryableTargetError(
                    f"endpoint {endpoint} still {status} after {config['wait_timeout']:.0f}s",
                    hint=f"raise -C wait_timeout, or `orchestrate resume {ctx.deployment.id}` to keep waiting",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, float(config["poll_max_interval"]))

    def health_check(self, ctx: StageContext) -> Outputs:
        if ctx.outputs.get("asynchronous"):
            return {"smoke_test": "skipped: asynchronous endpoints answer through S3 (InService was the check)"}
        example = ctx.outputs.get("input_example")
        if example is None:
            return {"smoke_test": "skipped: the model has no input example"}
        body, rows = mlmodel.load_input_example(Path(ctx.outputs["model_dir"]), example)
        aws = self._ctx_aws(ctx)
        request: dict[str, Any] = {
            "EndpointName": ctx.outputs["endpoint_name"],
            "Body": body,
            "ContentType": "application/json",
            "Accept": "application/json",
        }
        if str(ctx.config["mode"]) == "add":
            request["TargetVariant"] = ctx.outputs["variant"]  # ours has no traffic yet
        started = time.monotonic()
        try:
            answer = aws.call("sagemaker-runtime", "invoke_endpoint", **request)
            payload = answer["Body"].read()
        except TargetError as exc:
            raise PermanentTargetError(
                f"smoke prediction with {example} failed: {exc}", hint="see the endpoint's CloudWatch logs"
            ) from exc
        latency_ms = round((time.monotonic() - started) * 1000, 2)
        try:
            predictions = json.loads(payload)["predictions"]
        except (ValueError, KeyError, TypeError):
            raise PermanentTargetError(
                f"smoke prediction answer is not {{'predictions': ...}}: {payload[:300]!r}"
            ) from None
        count = len(predictions) if isinstance(predictions, list) else None
        if rows is not None and count is not None and count != rows:
            raise PermanentTargetError(f"smoke prediction returned {count} predictions for {rows} input rows")
        ctx.log(
            f"smoke prediction answered in {latency_ms} ms by variant {answer.get('InvokedProductionVariant', '?')}"
        )
        return {"smoke_test": example, "smoke_latency_ms": latency_ms, "smoke_predictions": count}

    def shift_traffic(self, ctx: StageContext) -> Outputs:
        aws = self._ctx_aws(ctx)
        endpoint = ctx.outputs["endpoint_name"]
        if str(ctx.config["mode"]) == "add":
            weight = float(ctx.config["variant_weight"])
            described = self._describe_endpoint(aws, endpoint) or {}
            current = {v["VariantName"]: v.get("CurrentWeight") for v in described.get("ProductionVariants", [])}
            if current.get(ctx.outputs["variant"]) != weight:
                aws.call(
                    "sagemaker",
                    "update_endpoint_weights_and_capacities",
                    EndpointName=endpoint,
                    DesiredWeightsAndCapacities=[{"VariantName": ctx.outputs["variant"], "DesiredWeight": weight}],
                )
                ctx.log(f"variant {ctx.outputs['variant']} weight → {weight}")
        final = self._settle(ctx, aws, endpoint)
        return {"variants": _variant_summary(final), "endpoint_status": final["EndpointStatus"]}

    def cleanup(self, ctx: StageContext) -> Outputs:
        """Delete older deployments' models and configs that no longer serve (unless archive)."""
        if ctx.config.get("archive"):
            return {"released": [], "archived": True}
        aws = self._ctx_aws(ctx)
        serving_config = ctx.outputs["endpoint_config"]
        serving = {
            v["ModelName"]
            for v in aws.call("sagemaker", "describe_endpoint_config", EndpointConfigName=serving_config)[
                "ProductionVariants"
            ]
        }
        released = []
        for resource in ctx.endpoint_resources():
            if resource.deployment_id == ctx.deployment.id or resource.kind not in (MODEL, ENDPOINT_CONFIG):
                continue
            if resource.name == serving_config or (resource.kind == MODEL and resource.name in serving):
                continue  # an older variant still serves (add mode)
            self.release_recorded(ctx, resource)
            released.append(f"{resource.kind} {resource.name}")
        return {"released": released}

    # -- releasing ------------------------------------------------------------------------

    def release_recorded(self, ctx: StageContext, resource: ResourceView) -> None:
        if self._keep_failed(ctx, resource):
            ctx.log(
                f"keeping {resource.kind} {resource.name} (keep_failed); "
                f"`orchestrate resume {ctx.deployment.id}` reuses it, `orchestrate cancel` deletes it"
            )
            return
        super().release_recorded(ctx, resource)

    @staticmethod
    def _keep_failed(ctx: StageContext, resource: ResourceView) -> bool:
        """keep_failed keeps a failing run's own resources; cancel, cleanup and delete still release.

        Only while the deployment is `running`: a failed update is `rolling_back` by then, and
        what it made is always released so the previous config serves again."""
        if not ctx.deployment.config.get("keep_failed") or resource.deployment_id != ctx.deployment.id:
            return False
        return ctx.is_running()

    def release(self, ctx: StageContext, resource: ResourceView) -> None:
        aws = self._aws(ctx, ctx.config, self._recorded(ctx, "region"))
        if resource.kind == ENDPOINT:
            self._delete_endpoint(ctx, aws, resource.name)
            if ctx.config.get("delete_images"):
                self._delete_images(ctx, aws)
        elif resource.kind == ENDPOINT_CONFIG:
            self._restore_previous(ctx, aws, resource)
            self._delete_quietly(ctx, aws, "delete_endpoint_config", EndpointConfigName=resource.name)
        elif resource.kind == MODEL:
            self._delete_quietly(ctx, aws, "delete_model", ModelName=resource.name)

    def _delete_images(self, ctx: StageContext, aws: Any) -> None:
        """With delete_images, the endpoint's pushed images go with it (other endpoints that reuse
        one of them by content tag would have to push it again)."""
        for image in ctx.endpoint_resources():
            # Only what this endpoint pushed: an image ECR already had belongs to whoever pushed it.
            if image.kind not in (PUSHED_IMAGE, ECR_IMAGE) or image.state != ResourceState.CREATED:
                continue
            try:
                aws.call(
                    "ecr",
                    "batch_delete_image",
                    repositoryName=_ecr_repository_name(image.data["repository"]),
                    imageIds=[{"imageTag": image.data["tag"]}],
                )
            except TargetError as exc:
                if not _aws_missing(exc):
                    raise
            ctx.mark(image, ResourceState.DELETED)
            ctx.log(f"deleted ECR image {image.name}")

    @staticmethod
    def _recorded(ctx: StageContext, key: str) -> Any:
        return ctx.recorded_outputs().get(key)

    def _restore_previous(self, ctx: StageContext, aws: Any, resource: ResourceView) -> None:
        """A config of ours that the endpoint still serves is swapped back to the one it replaced."""
        endpoint = ctx.deployment.endpoint_name
        described = self._describe_endpoint(aws, endpoint)
        if described is None:
            return
        if described["EndpointStatus"] in _SETTLING:
            described = self._settle(ctx, aws, endpoint)
        previous = resource.data.get("previous_config")
        if described.get("EndpointConfigName") != resource.name or not previous:
            return
        try:
            aws.call("sagemaker", "describe_endpoint_config", EndpointConfigName=previous)
        except TargetError as exc:
            if _aws_missing(exc):
                return  # nothing to go back to (e.g. `delete`, which removes the endpoint too)
            raise
        ctx.log(f"restoring endpoint {endpoint} to config {previous}")
        aws.call("sagemaker", "update_endpoint", EndpointName=endpoint, EndpointConfigName=previous)
        final = self._settle(ctx, aws, endpoint)
        if final["EndpointStatus"] != "InService" or final.get("EndpointConfigName") != previous:
            raise PermanentTargetError(
                f"could not restore endpoint {endpoint} to config {previous}: "
                f"{final['EndpointStatus']} {final.get('FailureReason') or ''}"
            )

    def _delete_endpoint(self, ctx: StageContext, aws: Any, endpoint: str) -> None:
        self._delete_quietly(ctx, aws, "delete_endpoint", EndpointName=endpoint)
        deadline = time.monotonic() + 300
        while self._describe_endpoint(aws, endpoint) is not None and time.monotonic() < deadline:
            time.sleep(0.2)

    @staticmethod
    def _delete_quietly(ctx: StageContext, aws: Any, operation: str, **params: Any) -> None:
        try:
            aws.call("sagemaker", operation, **params)
            ctx.log(f"{operation} {next(iter(params.values()))}")
        except TargetError as exc:
            if not _aws_missing(exc):
                raise

    # -- reads ----------------------------------------------------------------------------

    def describe(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        endpoint = outputs.get("endpoint_name")
        if not endpoint:
            return {}
        try:
            aws = self._aws(None, outputs, outputs.get("region"))
            described = self._describe_endpoint(aws, str(endpoint))
        except (TargetError, ConfigError) as exc:
            return {"endpoint": endpoint, "describe_error": str(exc).splitlines()[0]}
        if described is None:
            return {"endpoint": endpoint, "endpoint_status": "missing"}
        facts = {
            "endpoint": endpoint,
            "endpoint_status": described["EndpointStatus"],
            "endpoint_config": described.get("EndpointConfigName"),
            "arn": described.get("EndpointArn"),
            "variants": _variant_summary(described),
        }
        if described.get("FailureReason"):
            facts["failure_reason"] = described["FailureReason"]
        return facts

    def invoke(self, outputs: Mapping[str, Any], body: bytes, content_type: str) -> Invocation:
        aws = self._aws(None, outputs, outputs.get("region"))
        try:
            answer = aws.call(
                "sagemaker-runtime",
                "invoke_endpoint",
                EndpointName=outputs["endpoint_name"],
                Body=body,
                ContentType=content_type,
                Accept="application/json",
            )
        except TargetError as exc:
            cause = getattr(exc.__cause__, "response", None) or {}
            status = int(
                cause.get("OriginalStatusCode") or cause.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            )
            if 400 <= status < 500 and _aws_code(exc, "ModelError"):
                message = cause.get("OriginalMessage") or cause.get("Error", {}).get("Message", "")
                return Invocation(status, "application/json", str(message).encode())
            raise
        return Invocation(200, str(answer.get("ContentType", "application/json")), answer["Body"].read())

    def logs(self, outputs: Mapping[str, Any], tail: int) -> str:
        raise ConfigError(
            "SageMaker keeps endpoint logs in CloudWatch",
            hint=f"see log group /aws/sagemaker/Endpoints/{outputs.get('endpoint_name', 'NAME')} "
            "(`aws logs tail` works)",
        )


def _aws_code(exc: BaseException, *codes: str) -> bool:
    from targets._aws import error_code

    return error_code(exc) in codes


def _aws_missing(exc: BaseException) -> bool:
    from targets._aws import is_not_found

    return is_not_found(exc)  # type: ignore[arg-type]


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _variant_summary(described: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": v["VariantName"],
            "weight": v.get("CurrentWeight"),
            "instances": v.get("CurrentInstanceCount"),
            **({"serverless": v["CurrentServerlessConfig"]} if v.get("CurrentServerlessConfig") else {}),
        }
        for v in described.get("ProductionVariants", [])
    ]


def _pushed_image(outputs: Mapping[str, Any]) -> str:
    # Deployments recorded before the shared image stage named it image_uri (a rollback reuses them).
    return str(outputs.get("pushed_image") or outputs["image_uri"])


def _ecr_repository_name(repository: str) -> str:
    """`ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME` → NAME (records before the shared image stage
    kept NAME alone)."""
    from orchestrator import images

    return repository.partition("/")[2] if images.registry_of(repository) != "docker.io" else repository
