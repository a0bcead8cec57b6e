"""The Kubernetes objects of one endpoint version, as plain dicts: what `orchestrate render` prints.

One version of an endpoint is a Deployment named `<endpoint>-<version>` (with a
PodDisruptionBudget when it runs more than one replica, and a HorizontalPodAutoscaler when
autoscaling is asked for) behind one Service named `<endpoint>`, whose selector picks the
version that serves. `version` is a digest of the image, the model and the config, so the same
inputs always give the same names and the same objects, byte for byte.

The pod follows the Pod Security Standards' "restricted" profile: a non-root numeric user (the
image's), no privilege escalation, every capability dropped, seccomp `RuntimeDefault`, no
service-account token, and a read-only root file system with an emptyDir at /tmp (the scoring
server writes nothing else; `-C read_only_root=false` for model code that does).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MANAGED_BY = "orchestrate"
LABEL_PREFIX = "orchestrate.io/"
ENDPOINT_LABEL = LABEL_PREFIX + "endpoint"
VERSION_LABEL = LABEL_PREFIX + "version"
MODEL_DIGEST_ANNOTATION = LABEL_PREFIX + "model-digest"
MODEL_URI_ANNOTATION = LABEL_PREFIX + "model-uri"
CONTAINER_PORT = 8080
CONTAINER_NAME = "scoring"
# The image's user (orchestrator/dockerfile.py): numeric, so the kubelet can check runAsNonRoot.
IMAGE_USER_ID = 10001
READY_PATH = "/ping"
STARTUP_PERIOD_S = 2


@dataclass(frozen=True)
class EndpointVersion:
    """Everything the objects are made from; `config` is the target's resolved config."""

    endpoint: str
    image: str
    model_digest: str
    model_uri: str
    config: Mapping[str, Any]

    @property
    def version(self) -> str:
        document = {"image": self.image, "model": self.model_digest, "config": dict(self.config)}
        return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:10]

    @property
    def versioned_name(self) -> str:
        return f"{self.endpoint}-{self.version}"


def objects(version: EndpointVersion) -> list[dict[str, Any]]:
    """The objects to apply, in apply order: Service last, so it never selects pods that do not
    exist yet."""
    config = version.config
    found: list[dict[str, Any]] = [deployment(version)]
    if int(config["replicas"]) > 1:
        found.append(disruption_budget(version))
    if int(config["autoscale.max_replicas"]) > 0:
        found.append(autoscaler(version))
    found.append(service(version))
    return found


def _metadata(version: EndpointVersion, name: str, *, versioned: bool) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": version.config["namespace"],
        "labels": _labels(version, versioned=versioned),
        "annotations": {MODEL_DIGEST_ANNOTATION: version.model_digest},
    }


def _labels(version: EndpointVersion, *, versioned: bool) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": version.endpoint,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        ENDPOINT_LABEL: version.endpoint,
    }
    if versioned:
        labels[VERSION_LABEL] = version.version
    return labels


def _selector(version: EndpointVersion) -> dict[str, str]:
    return {ENDPOINT_LABEL: version.endpoint, VERSION_LABEL: version.version}


def deployment(version: EndpointVersion) -> dict[str, Any]:
    config = version.config
    pull_secrets = [{"name": name} for name in pull_secret_names(config)]
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_USER_ID,
            "runAsGroup": IMAGE_USER_ID,
            "fsGroup": IMAGE_USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The server drains for drain_timeout after SIGTERM; the kubelet waits a little longer.
        "terminationGracePeriodSeconds": math.ceil(float(config["drain_timeout"])) + 5,
        "containers": [container(version)],
    }
    if config["read_only_root"]:
        pod_spec["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    if pull_secrets:
        pod_spec["imagePullSecrets"] = pull_secrets
    if config["service_account"]:
        pod_spec["serviceAccountName"] = config["service_account"]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": _selector(version)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": _labels(version, versioned=True),
                "annotations": {
                    MODEL_DIGEST_ANNOTATION: version.model_digest,
                    MODEL_URI_ANNOTATION: version.model_uri,
                },
            },
            "spec": pod_spec,
        },
    }
    if int(config["autoscale.max_replicas"]) == 0:  # with an autoscaler, it owns the count
        spec["replicas"] = int(config["replicas"])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(version, version.versioned_name, versioned=True),
        "spec": spec,
    }


def container(version: EndpointVersion) -> dict[str, Any]:
    config = version.config
    environment = {
        "ORCHESTRATE_WORKERS": str(config["workers"]),
        "ORCHESTRATE_THREADS": str(config["threads"]),
        "ORCHESTRATE_GRACEFUL_TIMEOUT": str(config["drain_timeout"]),
        **{str(key): str(value) for key, value in (config.get("env") or {}).items()},
    }
    probe = {"httpGet": {"path": READY_PATH, "port": "http"}}
    requests = {name: config[name] for name in ("cpu", "memory") if config[name]}
    limits = {"cpu": config["cpu_limit"], "memory": config["memory_limit"] or config["memory"]}
    resources = {"requests": requests, "limits": {name: value for name, value in limits.items() if value}}
    spec: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": version.image,
        "args": ["serve"],
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": [{"name": name, "value": value} for name, value in sorted(environment.items())],
        "startupProbe": {
            **probe,
            "periodSeconds": STARTUP_PERIOD_S,
            "timeoutSeconds": 2,
            "failureThreshold": math.ceil(float(config["startup_timeout"]) / STARTUP_PERIOD_S),
        },
        "readinessProbe": {**probe, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "resources": {part: values for part, values in resources.items() if values},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": bool(config["read_only_root"]),
        },
    }
    if config["read_only_root"]:
        spec["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    return spec


def service(version: EndpointVersion) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(version, version.endpoint, versioned=False),
        "spec": {
            "type": version.config["service_type"],
            "selector": _selector(version),
            "ports": [{"name": "http", "port": int(version.config["port"]), "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(version: EndpointVersion) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(version, version.versioned_name, versioned=True),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(version)}},
    }


def autoscaler(version: EndpointVersion) -> dict[str, Any]:
    config = version.config
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(version, version.versioned_name, versioned=True),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": version.versioned_name},
            "minReplicas": int(config["replicas"]),
            "maxReplicas": int(config["autoscale.max_replicas"]),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": int(config["autoscale.target_cpu"])},
                    },
                }
            ],
        },
    }


def pull_secret_names(config: Mapping[str, Any]) -> list[str]:
    return [name.strip() for name in str(config["image_pull_secret_names"]).split(",") if name.strip()]
