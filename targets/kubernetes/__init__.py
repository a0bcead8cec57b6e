"""The `kubernetes` target: the shared scoring image as a Deployment behind a Service.

This release renders the objects (`orchestrate render MODEL --target kubernetes --name N`), for
review, `kubectl apply -f -` or a GitOps repository; `deploy` to a cluster (server-side apply,
rollout watching, blue/green through the Service's selector) is not built yet and refuses before
anything is recorded. The objects are made in `manifests.py`; every config key is checked here,
against the rules the API server would apply, before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from orchestrator import secret_values
from orchestrator.target_contract import (
    ConfigError,
    ConfigKey,
    Outputs,
    PermanentTargetError,
    RenderRequest,
    ResourceView,
    StageContext,
    Target,
)
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


class KubernetesTarget(Target):
    name = "kubernetes"
    description = "a Deployment and Service on a Kubernetes cluster (render only so far: `orchestrate render`, then kubectl apply)"
    renders = True
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "image": ConfigKey(str, "", "image the pods run (repository@sha256:... or :tag); default: built and pushed"),
        "registry": ConfigKey(str, "", "registry host[:port][/namespace] the built image is pushed to"),
        "base_image": ConfigKey(str, "", "base image of the build (default: python:X.Y-slim for the model)"),
        "namespace": ConfigKey(str, "default", "namespace of every object"),
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
        raise ConfigError(
            "the kubernetes target renders its objects but cannot deploy them yet",
            hint="print them with `orchestrate render MODEL --target kubernetes --name NAME [-C ...]` "
            "and apply them with `kubectl apply -f -`",
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

    def create_endpoint(self, ctx: StageContext) -> Outputs:
        raise PermanentTargetError("the kubernetes target cannot deploy yet (preflight refuses it first)")

    def health_check(self, ctx: StageContext) -> Outputs:
        raise PermanentTargetError("the kubernetes target cannot deploy yet (preflight refuses it first)")

    def release(self, ctx: StageContext, resource: ResourceView) -> None:
        raise PermanentTargetError("the kubernetes target records no resources yet")


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
