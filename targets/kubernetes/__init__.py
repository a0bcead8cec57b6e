"""The `kubernetes` target: the shared scoring image as a Deployment per version behind one
Service, blue/green through the Service's selector.

`deploy` builds and pushes the model's image to `-C registry=...` (or runs `-C image=REF`),
applies the version's Deployment (with its PodDisruptionBudget and HorizontalPodAutoscaler)
by server-side apply, recording each object's uid, resourceVersion and generation, waits for
its rollout by kubectl's rules (failing at once on pod signals), sends `/ping` and the model's
input example to one of its pods through the API server's proxy, then points the Service at
it (`shift_traffic`) and deletes older versions (Foreground) in `cleanup`. `orchestrate render`
prints the same objects without a cluster. The objects are made in `manifests.py`, the API
calls in `cluster.py`; every config key is checked here, against the rules the API server
would apply, before anything is built.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from orchestrator import secret_values
from orchestrator.target_contract import (
    ConfigError,
    ConfigKey,
    Invocation,
    Outputs,
    PermanentTargetError,
    RenderRequest,
    ResourceState,
    ResourceView,
    StageContext,
)
from targets._container import ContainerImageTarget
from targets.kubernetes import cluster as kube
from targets.kubernetes import manifests

# DNS-1035 (Service names: a letter first) and DNS-1123 (namespaces, secret names) labels.
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_CPU = re.compile(r"(\d+(\.\d{1,3})?|\d+m)")
_MEMORY = re.compile(r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_KUBERNETES_VERSION = re.compile(r"1\.(\d+)")
# autoscaling/v2 (HPA) is served from 1.23 and policy/v1 (PDB) from 1.21; 1.25 is the oldest
# minor the objects are validated against (tests/kubernetes).
OLDEST_MINOR = 25


# Resource kinds recorded in the store, by the Kubernetes kind they stand for.
RESOURCE_KINDS = {
    "Deployment": "k8s_deployment",
    "PodDisruptionBudget": "k8s_pod_disruption_budget",
    "HorizontalPodAutoscaler": "k8s_autoscaler",
    "Service": "k8s_service",
}
KUBERNETES_KINDS = {recorded: kind for kind, recorded in RESOURCE_KINDS.items()}
ROLLOUT_POLL_S = 0.5


class KubernetesTarget(ContainerImageTarget):
    name = "kubernetes"
    description = "a Deployment per version behind a Service on a Kubernetes cluster, blue/green"
    renders = True
    # Every object is released by cleanup (older deployments'), an abort and delete; one that
    # another deployment's record also holds (the Service; a version deployed again) is kept
    # until the last record of it goes (see `release`).
    disposable_kinds = frozenset(RESOURCE_KINDS.values())
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "image": ConfigKey(str, "", "image the pods run (repository@sha256:... or :tag); default: built and pushed"),
        "registry": ConfigKey(str, "", "registry host[:port][/namespace] the built image is pushed to"),
        "base_image": ConfigKey(str, "", "base image of the build (default: python:X.Y-slim for the model)"),
        "namespace": ConfigKey(str, "default", "namespace of every object"),
        "context": ConfigKey(str, "", "kubeconfig context of the cluster (default: the current one)"),
        "replicas": ConfigKey(int, 1, "pods (the autoscaler's minimum when autoscaling)", minimum=1, maximum=1000),
        "cpu": ConfigKey(str, "", "CPU request per pod, e.g. 500m or 2 (required for autoscaling)"),
        "memory": ConfigKey(str, "", "memory request per pod, e.g. 1Gi (also the limit unless memory_limit)"),
        "cpu_limit": ConfigKey(str, "", "CPU limit per pod (default: none, so the pod is never throttled)"),
        "memory_limit": ConfigKey(str, "", "memory limit per pod (default: the memory request)"),
        "autoscale.max_replicas": ConfigKey(
            int, 0, "most pods the HorizontalPodAutoscaler may run (0: no autoscaler)", minimum=0, maximum=1000
        ),
        "autoscale.target_cpu": ConfigKey(
            int, 80, "average CPU utilisation the autoscaler aims at, percent of the request", minimum=1, maximum=100
        ),
        "service_type": ConfigKey(
            str, "ClusterIP", "type of the endpoint's Service", choices=("ClusterIP", "NodePort", "LoadBalancer")
        ),
        "port": ConfigKey(int, 80, "port the Service listens on", minimum=1, maximum=65535),
        "workers": ConfigKey(int, 1, "scoring server worker processes per pod", minimum=1, maximum=64),
        "threads": ConfigKey(int, 4, "threads per worker", minimum=1, maximum=256),
        "drain_timeout": ConfigKey(
            float, 30.0, "seconds a stopping pod has to finish requests", minimum=0, maximum=3600
        ),
        "read_only_root": ConfigKey(
            bool, True, "read-only root file system (an emptyDir at /tmp); false if the model writes"
        ),
        "image_pull_secret_names": ConfigKey(str, "", "comma-separated Secret names for pulling the image"),
        "service_account": ConfigKey(str, "", "service account of the pods (default: the namespace's default)"),
        "env": ConfigKey(dict, None, "environment variables of the scoring container (mapping, or k=v,k2=v2)"),
        "kubernetes_version": ConfigKey(
            str, "1.33", f"Kubernetes minor version the objects are written for (1.{OLDEST_MINOR} or later)"
        ),
    }

    def preflight(self, config: Mapping[str, Any], live_outputs: Mapping[str, Any] | None) -> None:
        if not config["image"] and not config["registry"]:
            raise ConfigError(
                "the kubernetes target needs an image the cluster can pull",
                hint="-C registry=HOST[:PORT][/NAMESPACE] builds the model's image and pushes it there; "
                "-C image=REPOSITORY@sha256:... runs one built already",
            )
        kube.Cluster.connect(str(config["namespace"]), context=str(config["context"]))  # a kubeconfig, now

    def validate(self, ctx: StageContext) -> Outputs:
        check_config(ctx.deployment.endpoint_name, ctx.config)
        return super().validate(ctx)

    # -- image ------------------------------------------------------------------------------

    def image_repository(self, ctx: StageContext) -> str:
        return f"orchestrate/{ctx.deployment.endpoint_name}"

    def push_repository(self, ctx: StageContext) -> str | None:
        return f"{str(ctx.config['registry']).rstrip('/')}/{ctx.deployment.endpoint_name}"

    def build(self, ctx: StageContext) -> Outputs:
        if ctx.config["image"]:
            return {"image": ctx.config["image"], "build_skipped": True, "note": "-C image given: nothing built"}
        return super().build(ctx)

    def push(self, ctx: StageContext) -> Outputs:
        if ctx.config["image"]:
            return {"pushed": False, "pushed_image": ctx.config["image"], "note": "-C image given: nothing pushed"}
        return super().push(ctx)

    # -- the version --------------------------------------------------------------------------

    def create_endpoint(self, ctx: StageContext) -> Outputs:
        """Apply the version's objects except the Service, each recorded before and after."""
        version = self._version(ctx)
        cluster = _cluster(ctx.config)
        applied = []
        for obj in manifests.objects(version):
            if obj["kind"] == "Service":
                continue  # shift_traffic points it at this version once it is healthy
            applied.append(_apply(ctx, cluster, obj))
        ctx.log(f"applied {', '.join(applied)} in namespace {cluster.namespace}")
        return {
            "namespace": cluster.namespace,
            "context": ctx.config["context"],
            "version": version.version,
            "deployment": version.versioned_name,
            "service": version.endpoint,
            "port": int(ctx.config["port"]),
            "selector": {manifests.ENDPOINT_LABEL: version.endpoint, manifests.VERSION_LABEL: version.version},
            "objects": applied,
        }

    def health_check(self, ctx: StageContext) -> Outputs:
        """The rollout by kubectl's rules, then /ping and the input example through a pod's proxy."""
        cluster = _cluster(ctx.config)
        name = str(ctx.outputs["deployment"])
        started = time.monotonic()
        cluster.wait_for_rollout(name, timeout_s=float(ctx.config["startup_timeout"]), poll_s=ROLLOUT_POLL_S)
        rolled_out_s = time.monotonic() - started
        ctx.log(f"deployment {name} rolled out after {rolled_out_s:.2f}s")
        pods = cluster.find("Pod", ctx.outputs["selector"])
        if not pods:
            raise PermanentTargetError(f"deployment {name} is rolled out but has no pods")
        pod = str(pods[0]["metadata"]["name"])
        status, _type, answer = kube.proxy_call(
            cluster, "Pod", pod, manifests.CONTAINER_PORT, manifests.READY_PATH, None, "application/json"
        )
        if status != 200:
            raise PermanentTargetError(
                f"pod {pod} answered {manifests.READY_PATH} with HTTP {status}: {answer[:300]!r}"
            )
        return {"rolled_out_s": round(rolled_out_s, 3), "pod": pod, **_smoke(cluster, pod, ctx)}

    def shift_traffic(self, ctx: StageContext) -> Outputs:
        """Point the endpoint's Service at this version: one apply, every pod of it at once."""
        cluster = _cluster(ctx.config)
        service = manifests.service(self._version(ctx))
        _apply(ctx, cluster, service)
        ctx.log(f"service {service['metadata']['name']} now selects version {ctx.outputs['version']}")
        namespace = cluster.namespace
        return {"url": f"http://{service['metadata']['name']}.{namespace}.svc.cluster.local:{ctx.config['port']}"}

    def release(self, ctx: StageContext, resource: ResourceView) -> None:
        kind = KUBERNETES_KINDS.get(resource.kind)
        if kind is None:
            return  # an image: the registry keeps it
        holders = [
            r
            for r in ctx.endpoint_resources()
            if r.id != resource.id and (r.kind, r.name) == (resource.kind, resource.name)
        ]
        cluster = kube.Cluster.connect(
            str(resource.data.get("namespace") or ctx.config["namespace"]), context=str(ctx.config.get("context") or "")
        )
        if holders:  # the Service, or the same version deployed again: another record holds it
            newest = max(holders, key=lambda r: r.deployment_id)
            if kind == "Service" and newest.data.get("document"):
                # A failed update that had flipped the Service: traffic goes back to the version
                # the newest other record applied (the live one), not to nothing.
                cluster.apply(newest.data["document"])
                ctx.log(f"service {resource.name} selects deployment {newest.deployment_id}'s version again")
            else:
                ctx.log(f"{kind} {resource.name} is held by deployment {newest.deployment_id}; kept")
            return
        if cluster.delete(kind, resource.name, propagation="Foreground"):
            ctx.log(f"deleted {kind} {resource.name} (foreground: its pods first)")

    # -- reads ---------------------------------------------------------------------------------

    def describe(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        if "deployment" not in outputs:
            return {}
        cluster = kube.Cluster.connect(str(outputs["namespace"]), context=str(outputs.get("context") or ""))
        deployment = cluster.get("Deployment", str(outputs["deployment"]))
        status = (deployment or {}).get("status") or {}
        return {
            "namespace": outputs["namespace"],
            "deployment": outputs["deployment"],
            "exists": deployment is not None,
            "ready_replicas": int(status.get("readyReplicas", 0) or 0),
            "available_replicas": int(status.get("availableReplicas", 0) or 0),
        }

    def invoke(self, outputs: Mapping[str, Any], body: bytes, content_type: str) -> Invocation:
        cluster = kube.Cluster.connect(str(outputs["namespace"]), context=str(outputs.get("context") or ""))
        status, answer_type, answer = kube.proxy_call(
            cluster, "Service", str(outputs["service"]), int(outputs["port"]), "invocations", body, content_type
        )
        return Invocation(status, answer_type, answer)

    def logs(self, outputs: Mapping[str, Any], tail: int) -> str:
        cluster = kube.Cluster.connect(str(outputs["namespace"]), context=str(outputs.get("context") or ""))
        pods = cluster.find("Pod", outputs["selector"])
        return "".join(
            f"==> pod {pod['metadata']['name']} <==\n" + cluster.pod_log(pod["metadata"]["name"], lines=tail)
            for pod in pods
        )

    def _version(self, ctx: StageContext) -> manifests.EndpointVersion:
        return manifests.EndpointVersion(
            endpoint=ctx.deployment.endpoint_name,
            image=str(ctx.outputs.get("pushed_image") or ctx.outputs["image"]),
            model_digest=ctx.deployment.model_digest,
            model_uri=secret_values.mask_credentials(ctx.deployment.model_uri),
            config=ctx.deployment.config,
        )

    def check_render(self, endpoint: str, config: Mapping[str, Any]) -> None:
        check_config(endpoint, config)

    def render(self, request: RenderRequest) -> list[dict[str, Any]]:
        check_config(request.endpoint, request.config)
        version = manifests.EndpointVersion(
            endpoint=request.endpoint,
            image=request.image,
            model_digest=request.model.digest,
            model_uri=secret_values.mask_credentials(request.source.summary()),
            config=request.config,
        )
        return manifests.objects(version)


def _cluster(config: Mapping[str, Any]) -> kube.Cluster:
    return kube.Cluster.connect(str(config["namespace"]), context=str(config["context"]))


def _apply(ctx: StageContext, cluster: kube.Cluster, obj: dict[str, Any]) -> str:
    """Apply one object, recorded as planned before and created (uid, resourceVersion,
    generation) after; a rerun adopts the record and applies again, which changes nothing."""
    kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
    resource = ctx.plan(RESOURCE_KINDS[kind], name, {"namespace": cluster.namespace})
    applied = cluster.apply(obj)
    data: dict[str, Any] = {
        "namespace": cluster.namespace,
        "resource_version": applied.resource_version,
        "generation": applied.generation,
    }
    if kind == "Service":  # what `release` applies again to give traffic back to this version
        data["document"] = obj
    ctx.mark(resource, ResourceState.CREATED, external_id=applied.uid, data=data)
    return f"{kind}/{name}"


def _smoke(cluster: kube.Cluster, pod: str, ctx: StageContext) -> dict[str, Any]:
    """The model's input example through the pod's proxy; one prediction per input row."""
    from pathlib import Path

    from orchestrator import health

    def send(body: bytes) -> tuple[int, bytes]:
        status, _type, answer = kube.proxy_call(
            cluster, "Pod", pod, manifests.CONTAINER_PORT, "invocations", body, "application/json"
        )
        return status, answer

    def details() -> str:
        return f"(through the API server's proxy to pod {pod}: `kubectl logs {pod} -n {cluster.namespace}`)"

    example = ctx.outputs.get("input_example")
    return health.smoke_predict_with(send, Path(ctx.outputs["model_dir"]), example, details)


def check_config(endpoint: str, config: Mapping[str, Any]) -> None:
    """Refuse, with the rule and a fix, every value the API server would reject."""
    if not _DNS_1035.fullmatch(endpoint):
        raise ConfigError(
            f"endpoint name {endpoint!r} is not a Kubernetes Service name",
            hint="on kubernetes use lowercase letters, digits and hyphens, starting with a letter, "
            f"e.g. --name {_suggested(endpoint)}",
        )
    if not _DNS_1123.fullmatch(str(config["namespace"])):
        raise ConfigError(
            f"namespace {config['namespace']!r} is not a Kubernetes namespace name",
            hint="use at most 63 lowercase letters, digits and hyphens, e.g. -C namespace=models",
        )
    for key, pattern, example in (
        ("cpu", _CPU, "500m or 2"),
        ("cpu_limit", _CPU, "1 or 1500m"),
        ("memory", _MEMORY, "512Mi or 2Gi"),
        ("memory_limit", _MEMORY, "1Gi"),
    ):
        value = str(config[key])
        if value and not pattern.fullmatch(value):
            hint = f"write a Kubernetes quantity, e.g. -C {key}={example}"
            if key.startswith("memory") and value.endswith("m"):
                hint += f" ('m' is a thousandth of a byte; {value[:-1]}Mi is mebibytes)"
            raise ConfigError(f"config key {key!r} must be a Kubernetes quantity, got {value!r}", hint=hint)
    maximum, replicas = int(config["autoscale.max_replicas"]), int(config["replicas"])
    if maximum:
        if maximum < replicas:
            raise ConfigError(
                f"autoscale.max_replicas ({maximum}) is below replicas ({replicas}), the autoscaler's minimum",
                hint=f"raise it, e.g. -C autoscale.max_replicas={replicas * 2}",
            )
        if not config["cpu"]:
            raise ConfigError(
                "autoscaling on CPU needs a CPU request: utilisation is measured against it",
                hint="add -C cpu=500m (or what one pod needs)",
            )
    for name in manifests.pull_secret_names(config):
        if not _SUBDOMAIN.fullmatch(name) or len(name) > 253:
            raise ConfigError(f"image pull secret {name!r} is not a Kubernetes Secret name")
    account = str(config["service_account"])
    if account and (not _SUBDOMAIN.fullmatch(account) or len(account) > 253):
        raise ConfigError(f"service account {account!r} is not a Kubernetes name")
    for key, value in (config.get("env") or {}).items():
        if not _ENV_NAME.fullmatch(str(key)):
            raise ConfigError(
                f"environment variable name {key!r} is not allowed by Kubernetes",
                hint="use letters, digits, '_', '-' and '.', not starting with a digit",
            )
        if secret_values.is_reference(value):
            raise ConfigError(
                f"env.{key} is a secret reference; rendered objects are printed, so it would be printed too",
                hint=f"keep it in a Kubernetes Secret and add it after applying: "
                f"`kubectl set env deployment/<name> --from=secret/<secret> --keys={key}`",
            )
    minor = _KUBERNETES_VERSION.fullmatch(str(config["kubernetes_version"]))
    if minor is None or int(minor.group(1)) < OLDEST_MINOR:
        raise ConfigError(
            f"kubernetes_version {config['kubernetes_version']!r} is not 1.{OLDEST_MINOR} or later",
            hint="give the cluster's minor version, e.g. -C kubernetes_version=1.31",
        )


def _suggested(endpoint: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]", "-", endpoint.lower()).strip("-")
    return cleaned if cleaned[:1].isalpha() else f"model-{cleaned}"
