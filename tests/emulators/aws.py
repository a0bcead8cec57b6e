"""The AWS emulator: moto's server, with a WSGI layer in front where moto falls short.

Real boto3 clients talk to it over HTTP (endpoint_url = `AwsEmulator.url`). moto answers STS,
IAM, S3, ECR repositories, SageMaker models and endpoint configs. This layer answers, itself:

- SageMaker endpoints: CreateEndpoint (rejects an existing name as AWS does), UpdateEndpoint
  (with DeploymentConfig honoured: blue/green all-at-once, canary, linear bake phases,
  CloudWatch alarms that roll back), DescribeEndpoint with `Creating`/`Updating` phases
  ending `InService` or `Failed` (with `FailureReason`), ListEndpoints, DeleteEndpoint,
  UpdateEndpointWeightsAndCapacities.
- Container mode (`container_mode=True`): creating or updating an endpoint runs each
  variant's image with the Docker engine as SageMaker does (`docker run IMAGE serve`,
  port 8080 published on 127.0.0.1); `/ping` must answer within the variant's
  ContainerStartupHealthCheckTimeoutInSeconds (or `startup_timeout`) or the endpoint goes
  `Failed`. A failed update keeps the old containers serving and returns to `InService` on
  the old config, with the reason in FailureReason. InvokeEndpoint forwards to a container
  (TargetVariant honoured, else by weight); a container's 4xx/5xx becomes ModelError (424).
  Without container mode, InvokeEndpoint answers one prediction per input row.
- ECR: repository URIs (and the authorization token's proxy endpoint) point at a real local
  registry, so `docker push` is real; DescribeImages and BatchDeleteImage read and change
  that registry through its v2 API.
- Faults: `fail(operation, code, status, times)` makes any call answer an AWS error;
  `kill_after(operation, pid)` SIGKILLs a process once the call has been handled (the AWS
  side made the resource, the runner never heard back). `calls` counts every operation.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

ACCOUNT = "123456789012"
CONTAINER_LABEL = "orchestrate-test-emulator"
_INVOKE = re.compile(r"^/endpoints/([^/]+)/invocations$")
_REGION = re.compile(r"Credential=[^/]+/\d+/([^/]+)/")
_MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, "
                   "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json")
_SETTLING = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


class AwsError(Exception):
    def __init__(self, code: str, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.extra = code, message, status, extra


@dataclass
class Fault:
    code: str
    status: int
    message: str
    times: float


@dataclass
class Container:
    id: str
    port: int
    variant: str


@dataclass
class Endpoint:
    name: str
    arn: str
    region: str
    config_name: str
    variants: list[dict[str, Any]]
    status: str
    tags: list[dict[str, str]]
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)
    failure_reason: str | None = None
    pending_config: str | None = None
    deployment_config: dict[str, Any] | None = None
    containers: list[Container] = field(default_factory=list)
    deleted: bool = False
    history: list[str] = field(default_factory=list)


class _Failed(Exception):
    pass


class AwsEmulator:
    """moto's server plus the layer above; start() once, reset() between tests."""

    def __init__(self, *, registry: str | None = None, docker_client: Any = None) -> None:
        self.registry = registry  # host:port of a local registry ECR URIs map to
        self.docker = docker_client
        self.container_mode = False
        self.creating_s = 0.0  # minimum length of the Creating / Updating phases
        self.updating_s = 0.0
        self.startup_timeout = 30.0  # when the variant gives no ContainerStartupHealthCheckTimeoutInSeconds
        self.bake_cap_s = 1.0  # blue/green WaitIntervalInSeconds are honoured up to this many seconds
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.alarms_firing: set[str] = set()
        self.container_ready_s: list[float] = []  # docker run → first /ping 200, per container
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._kills: list[tuple[str, int, int]] = []
        self._fail_provision: list[str] = []
        self._lock = threading.RLock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> AwsEmulator:
        import logging

        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, self, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="aws-emulator")
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self.reset()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset(self) -> None:
        """Forget every resource, fault and count; stop every container started."""
        with self._lock:
            for endpoint in self.endpoints.values():
                endpoint.deleted = True
            containers = [c for e in self.endpoints.values() for c in e.containers]
            self.endpoints.clear()
            self._faults.clear()
            self._kills.clear()
            self._fail_provision.clear()
            self.calls.clear()
            self.container_ready_s.clear()
            self.requests.clear()
            self.alarms_firing.clear()
        for worker in self._workers:
            worker.join(timeout=60)
        self._workers.clear()
        self._remove_containers(containers)
        if self.docker is not None:  # anything a worker started after we looked
            for leftover in self.docker.containers.list(all=True, filters={"label": CONTAINER_LABEL}):
                leftover.remove(force=True)
        from moto.moto_api._internal.models import moto_api_backend

        moto_api_backend.reset()
        self.container_mode = False
        self.creating_s = self.updating_s = 0.0

    # -- knobs for tests ------------------------------------------------------------------

    def fail(self, operation: str, code: str = "ThrottlingException", *, status: int = 400, times: float = 1,
             message: str | None = None) -> None:
        """The next `times` calls of `operation` (e.g. "CreateEndpointConfig") answer this AWS error."""
        self._faults.setdefault(operation, []).append(
            Fault(code, status, message or f"Injected {code} for {operation}", times))

    def kill_after(self, operation: str, pid: int, nth: int = 1) -> None:
        """SIGKILL `pid` once the nth call of `operation` has been carried out."""
        self._kills.append((operation, pid, nth))

    def fail_next_provision(self, reason: str) -> None:
        """Without container mode: the next endpoint creation or update ends with this reason."""
        self._fail_provision.append(reason)

    def backend(self, region: str = "us-east-1") -> Any:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][region]

    def counts(self, region: str = "us-east-1") -> dict[str, int]:
        """How many SageMaker models, endpoint configs and endpoints exist now."""
        backend = self.backend(region)
        return {"models": len(backend._models), "endpoint_configs": len(backend.endpoint_configs),
                "endpoints": len([e for (r, _n), e in self.endpoints.items() if r == region])}

    def running_containers(self) -> list[Container]:
        return [c for e in self.endpoints.values() for c in e.containers]

    # -- WSGI -----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        service, operation = self._operation(environ, body)
        match = _REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = match.group(1) if match else "us-east-1"
        with self._lock:
            self.calls[operation] += 1
            count = self.calls[operation]
        try:
            self._inject(operation)
            handler = getattr(self, f"_op_{service}_{operation}".replace("-", "_"), None)
            if handler is not None:
                params = json.loads(body or b"{}") if service != "runtime" else {}
                self.requests.append((operation, params))
                status, headers, payload = handler(region, params, environ, body)
            else:
                if service == "sagemaker":
                    self.requests.append((operation, json.loads(body or b"{}")))
                status, headers, payload = self._moto_call(environ)
                payload = self._rewrite(service, operation, payload)
        except AwsError as error:
            status, headers, payload = self._error(error, service)
        finally:
            self._maybe_kill(operation, count)
        start_response(f"{status} {_reason(status)}", [(k, v) for k, v in headers.items()
                                                        if k.lower() != "content-length"]
                       + [("Content-Length", str(len(payload)))])
        return [payload]

    @staticmethod
    def _operation(environ: dict[str, Any], body: bytes) -> tuple[str, str]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("SageMaker."):
            return "sagemaker", target.split(".", 1)[1]
        if target.startswith("AmazonEC2ContainerRegistry"):
            return "ecr", target.split(".", 1)[1]
        if _INVOKE.match(environ.get("PATH_INFO", "")):
            return "runtime", "InvokeEndpoint"
        if environ.get("REQUEST_METHOD") == "POST" and body:
            action = parse_qs(body.decode(errors="replace")).get("Action")
            if action:
                return "query", action[0]
        return "other", f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"

    def _inject(self, operation: str) -> None:
        with self._lock:
            for fault in self._faults.get(operation, []):
                if fault.times > 0:
                    fault.times -= 1
                    raise AwsError(fault.code, fault.message, fault.status)

    def _maybe_kill(self, operation: str, count: int) -> None:
        for op, pid, nth in list(self._kills):
            if op == operation and count == nth:
                self._kills.remove((op, pid, nth))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _moto_call(self, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = int(status.split()[0]), dict(headers)

        chunks = self._moto(environ, capture)
        payload = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        return captured["status"], captured["headers"], payload

    @staticmethod
    def _error(error: AwsError, service: str) -> tuple[int, dict[str, str], bytes]:
        document = {"__type": error.code, "message": error.message, **error.extra}
        if service == "runtime":
            document = {"ErrorCode": error.code, "Message": error.message, **error.extra}
        return error.status, {"Content-Type": "application/x-amz-json-1.1",
                              "x-amzn-ErrorType": error.code, "x-amzn-RequestId": str(uuid.uuid4())}, \
            json.dumps(document).encode()

    @staticmethod
    def _ok(document: dict[str, Any], status: int = 200) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())}, \
            json.dumps(document, default=str).encode()

    # -- ECR mapped to the local registry --------------------------------------------------

    def _rewrite(self, service: str, operation: str, payload: bytes) -> bytes:
        if service != "ecr" or not self.registry or operation not in ("CreateRepository", "DescribeRepositories"):
            return payload
        document = json.loads(payload)
        for repo in [document.get("repository")] + document.get("repositories", []):
            if repo:
                repo["repositoryUri"] = f"{self.registry}/{repo['repositoryName']}"
        return json.dumps(document).encode()

    def _op_ecr_GetAuthorizationToken(self, region: str, params: dict[str, Any], *_: Any) -> Any:
        if not self.registry:
            raise AwsError("InvalidParameterException", "the emulator has no registry configured")
        token = base64.b64encode(b"AWS:emulator-ecr-password").decode()
        return self._ok({"authorizationData": [{
            "authorizationToken": token, "expiresAt": time.time() + 43200,
            "proxyEndpoint": f"http://{self.registry}"}]})

    def _registry(self, method: str, path: str) -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(f"http://{self.registry}{path}", method=method)
        request.add_header("Accept", _MANIFEST_TYPES)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers)

    def _check_repository(self, region: str, name: str) -> None:
        from moto.ecr.models import ecr_backends

        if name not in ecr_backends[ACCOUNT][region].repositories:
            raise AwsError("RepositoryNotFoundException",
                           f"The repository with name '{name}' does not exist in the registry with id '{ACCOUNT}'")

    def _op_ecr_DescribeImages(self, region: str, params: dict[str, Any], *_: Any) -> Any:
        name = params["repositoryName"]
        self._check_repository(region, name)
        details = []
        for image in params.get("imageIds", []):
            reference = image.get("imageTag") or image.get("imageDigest")
            status, headers = self._registry("HEAD", f"/v2/{name}/manifests/{reference}")
            if status != 200:
                raise AwsError("ImageNotFoundException",
                               f"The image with imageId {{imageTag:'{reference}'}} does not exist within the "
                               f"repository with name '{name}' in the registry with id '{ACCOUNT}'")
            details.append({"registryId": ACCOUNT, "repositoryName": name,
                            "imageDigest": headers.get("Docker-Content-Digest"),
                            "imageTags": [image["imageTag"]] if image.get("imageTag") else [],
                            "imagePushedAt": time.time()})
        return self._ok({"imageDetails": details})

    def _op_ecr_BatchDeleteImage(self, region: str, params: dict[str, Any], *_: Any) -> Any:
        name = params["repositoryName"]
        self._check_repository(region, name)
        deleted, failures = [], []
        for image in params.get("imageIds", []):
            reference = image.get("imageTag") or image.get("imageDigest")
            status, headers = self._registry("HEAD", f"/v2/{name}/manifests/{reference}")
            digest = headers.get("Docker-Content-Digest")
            if status != 200 or not digest:
                failures.append({"imageId": image, "failureCode": "ImageNotFound",
                                 "failureReason": "Requested image not found"})
                continue
            self._registry("DELETE", f"/v2/{name}/manifests/{digest}")
            deleted.append({"imageDigest": digest, **({"imageTag": image["imageTag"]} if "imageTag" in image else {})})
        return self._ok({"imageIds": deleted, "failures": failures})

    # -- SageMaker endpoints --------------------------------------------------------------

    def _arn(self, region: str, name: str) -> str:
        return f"arn:aws:sagemaker:{region}:{ACCOUNT}:endpoint/{name.lower()}"

    def _config(self, region: str, name: str) -> Any:
        config = self.backend(region).endpoint_configs.get(name)
        if config is None:
            arn = f"arn:aws:sagemaker:{region}:{ACCOUNT}:endpoint-config/{name.lower()}"
            raise AwsError("ValidationException", f'Could not find endpoint configuration "{arn}".')
        return config

    def _endpoint(self, region: str, name: str) -> Endpoint:
        endpoint = self.endpoints.get((region, name))
        if endpoint is None:
            raise AwsError("ValidationException", f'Could not find endpoint "{self._arn(region, name)}".')
        return endpoint

    def _op_sagemaker_CreateEndpoint(self, region: str, params: dict[str, Any], *_: Any) -> Any:
        name, config_name = params["EndpointName"], params["EndpointConfigName"]
        with self._lock:
            if (region, name) in self.endpoints:
                raise AwsError("ValidationException",
                               f'Cannot create already existing endpoint "{self._arn(region, name)}".')
            config = self._config(region, config_name)
            endpoint = Endpoint(name=name, arn=self._arn(region, name), region=region, config_name=config_name,
                                variants=_variants(config.production_variants), status="Creating",
                                tags=params.get("Tags") or [])
            endpoint.history.append("Creating")
            self.endpoints[(region, name)] = endpoint
        self._spawn(endpoint, config_name, None)
        return self._ok({"EndpointArn": endpoint.arn})

    def _op_sagemaker_UpdateEndpoint(self, region: str, params: dict[str, Any], *_: Any) -> Any:
        name, config_name = params["EndpointName"], params["EndpointConfigName"]
        with self._lock:
            endpoint = self._endpoint(region, name)
            if endpoint.status != "InService":
                raise AwsError("ValidationException",
                               f'Cannot update in-progress endpoint "{endpoint.arn}".' if endpoint.status in
                               _SETTLING else f'Cannot update endpoint "{endpoint.arn}" in status {endpoint.status}.')
            self._config(region, config_name)
            endpoint.status = "Updating"
            endpoint.history.append("Updating")
            endpoint.pending_config = config_name
            endpoint.failure_reason = None
            endpoint.deployment_config = params.get("DeploymentConfig")
            endpoint.modified = time.time()
        self._spawn(endpoint, config_name, params.get("DeploymentConfig"))
        return self._ok({"EndpointArn": endpoint.arn})

    def _op_sagemaker_DescribeEndpoint(self, region: str, params: dict[str, Any], *_: Any) -> Any:
        with self._lock:
            endpoint = self._endpoint(region, params["EndpointName"])
            document: dict[str, Any] = {
                "EndpointName": endpoint.name, "EndpointArn": endpoint.arn,
                "EndpointConfigName": endpoint.config_name, "EndpointStatus": endpoint.status,
                "ProductionVariants": [dict(v) for v in endpoint.variants],
                "CreationTime": endpoint.created, "LastModifiedTime": endpoint.modified,
            }
            if endpoint.failure_reason:
                document["FailureReason"] = endpoint.failure_reason
            if endpoint.pending_config:
                document["PendingDeploymentSummary"] = {"EndpointConfigName": endpoint.pending_config,
                                                        "StartTime": endpoint.modified}
            if endpoint.deployment_config:
                document["LastDeploymentConfig"] = endpoint.deployment_config
            data_capture = self.backend(region).endpoint_configs.get(endpoint.config_name)
            if data_capture is not None and data_capture.data_capture_config:
                document["DataCaptureConfig"] = {**data_capture.data_capture_config, "CaptureStatus": "Started"}
        return self._ok(document)

    def _op_sagemaker_ListEndpoints(self, region: str, params: dict[str, Any], *_: Any) -> Any:
        with self._lock:
            found = [e for (r, _n), e in sorted(self.endpoints.items()) if r == region
                     and params.get("NameContains", "") in e.name
                     and params.get("StatusEquals", e.status) == e.status]
            return self._ok({"Endpoints": [{"EndpointName": e.name, "EndpointArn": e.arn, "CreationTime": e.created,
                                            "LastModifiedTime": e.modified, "EndpointStatus": e.status}
                                           for e in found]})

    def _op_sagemaker_DeleteEndpoint(self, region: str, params: dict[str, Any], *_: Any) -> Any:
        with self._lock:
            endpoint = self._endpoint(region, params["EndpointName"])
            endpoint.deleted = True
            del self.endpoints[(region, endpoint.name)]
            containers, endpoint.containers = endpoint.containers, []
        self._remove_containers(containers)
        return self._ok({})

    def _op_sagemaker_UpdateEndpointWeightsAndCapacities(self, region: str, params: dict[str, Any], *_: Any) -> Any:
        with self._lock:
            endpoint = self._endpoint(region, params["EndpointName"])
            if endpoint.status != "InService":
                raise AwsError("ValidationException", f'Cannot update in-progress endpoint "{endpoint.arn}".')
            by_name = {v["VariantName"]: v for v in endpoint.variants}
            for wanted in params["DesiredWeightsAndCapacities"]:
                variant = by_name.get(wanted["VariantName"])
                if variant is None:
                    raise AwsError("ValidationException",
                                   f'The variant name(s) "{wanted["VariantName"]}" is/are not present within '
                                   f'endpoint configuration "{endpoint.config_name}".')
                if "DesiredWeight" in wanted:
                    variant["CurrentWeight"] = variant["DesiredWeight"] = float(wanted["DesiredWeight"])
                if "DesiredInstanceCount" in wanted:
                    variant["CurrentInstanceCount"] = variant["DesiredInstanceCount"] = wanted["DesiredInstanceCount"]
            endpoint.status = "Updating"
            endpoint.history.append("Updating")

        def settle() -> None:
            time.sleep(self.updating_s)
            with self._lock:
                if not endpoint.deleted:
                    endpoint.status = "InService"
                    endpoint.history.append("InService")

        self._start_worker(settle)
        return self._ok({"EndpointArn": endpoint.arn})

    # -- provisioning ---------------------------------------------------------------------

    def _start_worker(self, work: Callable[[], None]) -> None:
        worker = threading.Thread(target=work, daemon=True, name="aws-emulator-provision")
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def _spawn(self, endpoint: Endpoint, config_name: str, deployment_config: dict[str, Any] | None) -> None:
        self._start_worker(lambda: self._provision(endpoint, config_name, deployment_config))

    def _provision(self, endpoint: Endpoint, config_name: str, deployment_config: dict[str, Any] | None) -> None:
        update = endpoint.status == "Updating"
        time.sleep(self.updating_s if update else self.creating_s)
        config = self.backend(endpoint.region).endpoint_configs.get(config_name)
        started: list[Container] = []
        try:
            if config is None:
                raise _Failed(f"Could not find endpoint configuration {config_name}.")
            if self._fail_provision:
                raise _Failed(self._fail_provision.pop(0))
            if self.container_mode:
                started = self._start_containers(endpoint, config)
            if update and deployment_config:
                self._bake(endpoint, deployment_config)
        except _Failed as failure:
            self._remove_containers(started)
            with self._lock:
                if endpoint.deleted:
                    return
                endpoint.failure_reason = str(failure)
                endpoint.pending_config = None
                endpoint.modified = time.time()
                if update:  # SageMaker keeps the old fleet: back to InService on the old config
                    endpoint.history.append("RollingBack")
                    endpoint.status = "RollingBack"
            if update:
                time.sleep(min(0.2, self.updating_s))
            with self._lock:
                endpoint.status = "InService" if update else "Failed"
                endpoint.history.append(endpoint.status)
            return
        with self._lock:
            if endpoint.deleted:
                old: list[Container] = started
            else:
                old, endpoint.containers = endpoint.containers, started
                endpoint.config_name = config_name
                endpoint.variants = _variants(config.production_variants)
                endpoint.pending_config = None
                endpoint.failure_reason = None
                endpoint.status = "InService"
                endpoint.modified = time.time()
                endpoint.history.append("InService")
        self._remove_containers(old)

    def _bake(self, endpoint: Endpoint, deployment_config: dict[str, Any]) -> None:
        """Blue/green: shift in the configured steps, baking between them; a firing alarm rolls back."""
        blue_green = deployment_config.get("BlueGreenUpdatePolicy") or {}
        routing = blue_green.get("TrafficRoutingConfiguration") or {}
        kind = routing.get("Type", "ALL_AT_ONCE")
        wait = min(float(routing.get("WaitIntervalInSeconds", 0)), self.bake_cap_s)
        alarms = [a["AlarmName"] for a in (deployment_config.get("AutoRollbackConfiguration") or {}).get("Alarms", [])]
        if kind == "CANARY":
            steps = [int(routing["CanarySize"]["Value"]), 100]
        elif kind == "LINEAR":
            step = int(routing["LinearStepSize"]["Value"])
            steps = list(range(step, 100, step)) + [100]
        else:
            steps = [100]
        for percent in steps:
            with self._lock:
                endpoint.history.append(f"{kind} {percent}%")
            time.sleep(wait)
            firing = sorted(set(alarms) & self.alarms_firing)
            if firing:
                raise _Failed(f"Deployment was rolled back because alarm(s) {', '.join(firing)} went into ALARM "
                              f"state during the {kind} traffic shift.")
        time.sleep(min(float(blue_green.get("TerminationWaitInSeconds", 0)), self.bake_cap_s))

    def _start_containers(self, endpoint: Endpoint, config: Any) -> list[Container]:
        import docker

        started: list[Container] = []
        for variant in config.production_variants:
            model = self.backend(endpoint.region)._models.get(variant["ModelName"])
            if model is None:
                raise _Failed(f"Could not find model \"{variant['ModelName']}\".")
            container = model.primary_container or (model.containers or [{}])[0]
            image = container.get("Image", "")
            launched = time.monotonic()
            try:
                handle = self.docker.containers.run(
                    image, ["serve"], detach=True, ports={"8080/tcp": ("127.0.0.1", None)},
                    environment=dict(container.get("Environment") or {}),
                    labels={CONTAINER_LABEL: endpoint.name},
                    name=f"sm-{endpoint.name}-{variant['VariantName']}-{uuid.uuid4().hex[:6]}".lower()[:60],
                )
            except docker.errors.DockerException as exc:  # ImageNotFound, APIError
                self._remove_containers(started)
                raise _Failed(f"Failed to pull or start image {image} for production variant "
                              f"{variant['VariantName']}: {exc}") from None
            handle.reload()
            port = int(handle.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
            started.append(Container(handle.id, port, variant["VariantName"]))
            timeout = float(variant.get("ContainerStartupHealthCheckTimeoutInSeconds") or self.startup_timeout)
            if not self._ping(handle, port, timeout):
                self._remove_containers(started)
                raise _Failed(f"The primary container for production variant {variant['VariantName']} did not "
                              "pass the ping health check. Please check CloudWatch logs for this endpoint.")
            self.container_ready_s.append(time.monotonic() - launched)
        return started

    @staticmethod
    def _ping(handle: Any, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (OSError, urllib.error.HTTPError):
                pass
            handle.reload()
            if handle.status in ("exited", "dead"):
                return False
            time.sleep(0.1)
        return False

    def _remove_containers(self, containers: list[Container]) -> None:
        import docker

        for container in containers:
            try:
                self.docker.containers.get(container.id).remove(force=True)
            except docker.errors.NotFound:
                continue  # already gone

    # -- sagemaker-runtime ------------------------------------------------------------------

    def _op_runtime_InvokeEndpoint(self, region: str, _params: dict[str, Any], environ: dict[str, Any],
                                   body: bytes) -> Any:
        name = _INVOKE.match(environ["PATH_INFO"]).group(1)  # type: ignore[union-attr]
        with self._lock:
            endpoint = self.endpoints.get((region, name))
            if endpoint is None or endpoint.status not in ("InService", "Updating", "RollingBack"):
                raise AwsError("ValidationException", f"Endpoint {name} of account {ACCOUNT} not found.")
            wanted = environ.get("HTTP_X_AMZN_SAGEMAKER_TARGET_VARIANT")
            variants = endpoint.variants
            if wanted:
                choice = next((v for v in variants if v["VariantName"] == wanted), None)
                if choice is None:
                    raise AwsError("ValidationException", f"Target variant {wanted} not found for endpoint {name}.")
            else:
                weighted = [v for v in variants if float(v.get("CurrentWeight", 1.0)) > 0] or variants
                choice = random.choices(weighted, [float(v.get("CurrentWeight", 1.0)) or 1.0 for v in weighted])[0]
            container = next((c for c in endpoint.containers if c.variant == choice["VariantName"]), None)
        content_type = environ.get("CONTENT_TYPE") or "application/json"
        headers = {"x-Amzn-Invoked-Production-Variant": choice["VariantName"]}
        if not self.container_mode:
            return 200, {**headers, "Content-Type": "application/json"}, json.dumps(
                {"predictions": [0] * _rows(body)}).encode()
        if container is None:
            raise AwsError("ValidationException", f"Endpoint {name} has no running container for "
                                                  f"{choice['VariantName']}.")
        request = urllib.request.Request(f"http://127.0.0.1:{container.port}/invocations", data=body, method="POST")
        request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return 200, {**headers, "Content-Type": response.headers.get("Content-Type", "")}, response.read()
        except urllib.error.HTTPError as error:
            message = error.read().decode(errors="replace")
            raise AwsError("ModelError", f"Received client error ({error.code}) from primary with message "
                                         f'"{message}". See CloudWatch logs for more information.', 424,
                           OriginalStatusCode=error.code, OriginalMessage=message) from None
        except OSError as exc:
            raise AwsError("ModelError", f"Received server error (0) from primary: {exc}", 424) from None


def _variants(production_variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    described = []
    for variant in production_variants:
        entry: dict[str, Any] = {"VariantName": variant["VariantName"],
                                 "CurrentWeight": float(variant.get("InitialVariantWeight", 1.0)),
                                 "DesiredWeight": float(variant.get("InitialVariantWeight", 1.0))}
        if variant.get("ServerlessConfig"):
            entry["CurrentServerlessConfig"] = entry["DesiredServerlessConfig"] = variant["ServerlessConfig"]
        else:
            entry["CurrentInstanceCount"] = entry["DesiredInstanceCount"] = variant.get("InitialInstanceCount", 1)
        described.append(entry)
    return described


def _rows(body: bytes) -> int:
    try:
        document = json.loads(body)
    except ValueError:
        return max(1, body.count(b"\n"))
    for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
        payload = document.get(key) if isinstance(document, dict) else None
        if isinstance(payload, dict):
            return len(payload.get("data") or [])
        if isinstance(payload, list):
            return len(payload)
    return 1


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


__all__ = ["ACCOUNT", "CONTAINER_LABEL", "AwsEmulator", "AwsError"]
