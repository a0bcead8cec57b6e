"""One cluster, as the kubernetes target talks to it: server-side apply, reads, deletes and
rollout watching, through the official client's `ApiClient`.

The typed APIs (`AppsV1Api`...) are not used: an apply patch is one document whatever its kind,
and the typed client encodes the `/` of a proxy path and cannot send a body through it. Every
call here is a REST path built from the object's `apiVersion` and kind, so what is sent is
what `orchestrate render` prints.

A rollout is judged by kubectl's rules (`kubectl rollout status`): the controller has seen the
current generation, every replica is updated and available, and no old one is left; the
`Progressing` condition's `ProgressDeadlineExceeded` fails it. It also fails as soon as a pod
of the version shows a signal that waiting will not cure (an image that cannot be pulled, a
container that keeps crashing or is killed for memory, a pod no node can take, a config the
kubelet cannot build), naming the reason, the restarts and the container's last log lines,
instead of waiting out the progress deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from orchestrator.target_contract import ConfigError, PermanentTargetError, RetryableTargetError

FIELD_MANAGER = "orchestrate"
# kind -> (apiVersion, plural): the kinds the target applies and the ones it reads.
RESOURCES: Mapping[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "ReplicaSet": ("apps/v1", "replicasets"),
    "Pod": ("v1", "pods"),
}
# Container states a rollout does not recover from by waiting.
WAITING_FAILURES = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff", "CreateContainerConfigError"}
)
LOG_LINES = 20
# HTTP statuses worth another attempt: throttling, the API server or its etcd momentarily away.
_TRANSIENT = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Applied:
    """An object as the API server holds it after an apply: what the target records."""

    kind: str
    name: str
    namespace: str
    uid: str
    resource_version: str
    generation: int

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Applied:
        meta = obj["metadata"]
        return cls(
            kind=str(obj["kind"]),
            name=str(meta["name"]),
            namespace=str(meta.get("namespace", "")),
            uid=str(meta["uid"]),
            resource_version=str(meta.get("resourceVersion", "")),
            generation=int(meta.get("generation", 0)),
        )


class RolloutFailed(PermanentTargetError):
    """A Deployment that will not become available: why, from its pods or its conditions."""

    def __init__(
        self, deployment: str, reason: str, message: str, *, pod: str = "", restarts: int = 0, log: str = ""
    ) -> None:
        detail = f"deployment {deployment} did not roll out: {reason}"
        if message:
            detail += f" ({message})"
        if pod:
            detail += f"; pod {pod}, {restarts} restart{'s' if restarts != 1 else ''}"
        if log:
            detail += "; its last log lines:\n" + log.rstrip("\n")
        super().__init__(detail, hint=_HINTS.get(reason, "see `kubectl describe deployment " + deployment + "`"))
        self.reason = reason
        self.pod = pod
        self.restarts = restarts
        self.log = log


_HINTS = {
    "ImagePullBackOff": "check the image reference and that the cluster can pull it (-C image_pull_secret_names=...)",
    "ErrImagePull": "check the image reference and that the cluster can pull it (-C image_pull_secret_names=...)",
    "InvalidImageName": "give a valid image reference (-C image=registry/repository@sha256:...)",
    "CrashLoopBackOff": "the scoring server exits at start: its log lines above say why",
    "OOMKilled": "the pod needs more memory: raise -C memory=... (and memory_limit)",
    "Unschedulable": "no node can take the pod: lower -C cpu / memory, or add nodes",
    "CreateContainerConfigError": "a Secret or ConfigMap the pod refers to is missing",
    "ProgressDeadlineExceeded": "see `kubectl describe deployment` and its pods' events",
}


class Cluster:
    """REST calls on one cluster, through a configured `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.api = api_client
        self.namespace = namespace

    @classmethod
    def connect(cls, namespace: str, *, context: str = "", kubeconfig: str | None = None) -> Cluster:
        """The cluster of kubeconfig's `context` (default: its current one), from `kubeconfig`,
        `KUBECONFIG` or ~/.kube/config; inside a pod, the pod's service account."""
        import os

        from kubernetes import client, config

        try:
            if kubeconfig is None and not context and _in_cluster() and not _has_kubeconfig():
                config.load_incluster_config()
                return cls(client.ApiClient(), namespace)
            # KUBECONFIG read now: the client reads it once, when it is first imported.
            config_file = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            return cls(config.new_client_from_config(config_file=config_file, context=context or None), namespace)
        except config.ConfigException as exc:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise ConfigError(
                f"no usable Kubernetes cluster configuration in {where}: {exc}",
                hint="point KUBECONFIG at the cluster's kubeconfig (or -C context=NAME for one of its contexts)",
            ) from None

    # -- objects --------------------------------------------------------------------------

    def path(self, kind: str, name: str = "", sub: str = "") -> str:
        api_version, plural = RESOURCES[kind]
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        path = f"{prefix}/namespaces/{quote(self.namespace, safe='')}/{plural}"
        if name:
            path += "/" + quote(name, safe="")
        if sub:
            path += "/" + sub
        return path

    def apply(self, obj: Mapping[str, Any]) -> Applied:
        """Create or update `obj` with one server-side-apply PATCH as `FIELD_MANAGER`."""
        name = str(obj["metadata"]["name"])
        document = dict(obj, metadata=dict(obj["metadata"], namespace=self.namespace))
        answer = self.call(
            "PATCH",
            self.path(str(obj["kind"]), name),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=document,  # the client sends it as JSON, which is YAML
            content_type="application/apply-patch+yaml",
        )
        return Applied.of(answer)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none by that name."""
        try:
            answer: dict[str, Any] = self.call("GET", self.path(kind, name))
        except NotFound:
            return None
        return answer

    def find(self, kind: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The objects of `kind` carrying every one of `labels`."""
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        answer = self.call("GET", self.path(kind), query=[("labelSelector", selector)])
        items: list[dict[str, Any]] = answer.get("items") or []
        for item in items:  # a list's items carry no kind
            item.setdefault("kind", kind)
        return items

    def delete(self, kind: str, name: str, *, propagation: str = "Foreground") -> bool:
        """Delete the object (its dependents first, with Foreground); False when it was gone."""
        try:
            self.call(
                "DELETE",
                self.path(kind, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
            )
        except NotFound:
            return False
        return True

    def pod_log(self, pod: str, *, previous: bool = False, lines: int = LOG_LINES) -> str:
        """The last `lines` of the pod's container log (of its previous run with `previous`);
        empty when there is none to read."""
        query = [("tailLines", str(lines))] + ([("previous", "true")] if previous else [])
        try:
            text: str = self.call("GET", self.path("Pod", pod, "log"), query=query, text=True)
        except (NotFound, PermanentTargetError):  # a container that never started has no log
            return ""
        return text

    def call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        text: bool = False,
    ) -> Any:
        """One REST call (`body` is sent as JSON): the decoded JSON answer (or its text);
        errors as target errors."""
        from kubernetes.client.rest import ApiException

        headers = {"Accept": "text/plain" if text else "application/json", "Content-Type": content_type}
        try:
            response = self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException as exc:
            raise _api_error(method, path, exc) from None
        except OSError as exc:  # refused, reset, timed out: urllib3 errors are OSErrors too
            raise RetryableTargetError(f"the Kubernetes API server did not answer {method} {path}: {exc}") from None
        data = response.data
        return data.decode(errors="replace") if text else json.loads(data)

    # -- rollouts -------------------------------------------------------------------------

    def wait_for_rollout(
        self,
        name: str,
        *,
        timeout_s: float,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """Wait until Deployment `name` is rolled out by kubectl's rules; returns it then.
        Raises RolloutFailed on a pod signal, the progress deadline or `timeout_s`."""
        deadline = clock() + timeout_s
        while True:
            deployment = self.get("Deployment", name)
            if deployment is None:
                raise RolloutFailed(name, "NotFound", "the Deployment is gone (deleted by someone else?)")
            verdict = rollout_verdict(deployment)
            if verdict == "done":
                return deployment
            if verdict is not None:
                raise RolloutFailed(name, verdict[0], verdict[1])
            self._check_pods(name, deployment)
            if clock() >= deadline:
                status = deployment.get("status") or {}
                raise RolloutFailed(
                    name,
                    "Timeout",
                    f"{status.get('availableReplicas', 0) or 0} of {_replicas(deployment)} replicas available "
                    f"after {timeout_s:g} s",
                )
            sleep(poll_s)

    def _check_pods(self, name: str, deployment: Mapping[str, Any]) -> None:
        selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not selector:
            return
        for pod in self.find("Pod", selector):
            signal = pod_failure(pod)
            if signal is None:
                continue
            reason, message, restarts = signal
            pod_name = pod["metadata"]["name"]
            # Only a container that ran has a log: the last run's, when it has restarted.
            log = self.pod_log(pod_name, previous=True) if restarts > 0 else ""
            raise RolloutFailed(name, reason, message, pod=pod_name, restarts=restarts, log=log)


class NotFound(PermanentTargetError):
    """The API server has no such object (404)."""


def rollout_verdict(deployment: Mapping[str, Any]) -> str | tuple[str, str] | None:
    """kubectl's reading of a Deployment: "done", (reason, message) when it failed, or None
    while it is still rolling out."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    if int(status.get("observedGeneration", 0) or 0) < int(meta.get("generation", 0) or 0):
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "ProgressDeadlineExceeded", str(condition.get("message", ""))
    wanted = _replicas(deployment)
    updated = int(status.get("updatedReplicas", 0) or 0)
    if updated < wanted:
        return None
    if int(status.get("replicas", 0) or 0) > updated:
        return None  # old replicas still terminating
    if int(status.get("availableReplicas", 0) or 0) < updated:
        return None
    return "done"


def pod_failure(pod: Mapping[str, Any]) -> tuple[str, str, int] | None:
    """(reason, message, restarts) when the pod shows a signal waiting will not cure."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            return "Unschedulable", str(condition.get("message", "")), 0
    for container in status.get("containerStatuses") or []:
        restarts = int(container.get("restartCount", 0) or 0)
        waiting = (container.get("state") or {}).get("waiting") or {}
        terminated = (container.get("lastState") or {}).get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return "OOMKilled", f"exit code {terminated.get('exitCode', 137)}", restarts
        if waiting.get("reason") in WAITING_FAILURES:
            return str(waiting["reason"]), str(waiting.get("message", "")), restarts
    return None


def _replicas(deployment: Mapping[str, Any]) -> int:
    spec = deployment.get("spec") or {}
    return int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)


def _api_error(method: str, path: str, exc: Any) -> Exception:
    status = int(getattr(exc, "status", 0) or 0)
    message = str(getattr(exc, "reason", "") or "")
    try:
        message = json.loads(exc.body).get("message") or message
    except (TypeError, ValueError, AttributeError):
        pass
    text = f"the Kubernetes API server answered {method} {path} with HTTP {status}: {message}"
    if status == 404:
        return NotFound(text)
    if status in _TRANSIENT:
        return RetryableTargetError(text)
    return PermanentTargetError(text)


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _has_kubeconfig() -> bool:
    import os
    from pathlib import Path

    return bool(os.environ.get("KUBECONFIG")) or (Path.home() / ".kube" / "config").is_file()


def proxy_call(
    cluster: Cluster, kind: str, name: str, port: int, path: str, body: bytes | None, content_type: str
) -> tuple[int, str, bytes]:
    """A request to a pod's or Service's `port` through the API server's proxy (the path is
    built here: the typed client would encode its `/`); returns (status, type, body) whatever
    the status, as a scoring client sees it."""
    from kubernetes.client.rest import ApiException

    target = cluster.path(kind, name) + f":{port}/proxy/{path.lstrip('/')}"
    payload: Any = body
    if body is not None and "json" in content_type:
        payload = json.loads(body)  # the client serialises JSON bodies itself
    try:
        response = cluster.api.call_api(
            target,
            "POST" if body is not None else "GET",
            header_params={"Content-Type": content_type, "Accept": "*/*"},
            body=payload,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
    except ApiException as exc:
        answer = exc.body if isinstance(exc.body, bytes) else str(exc.body or "").encode()
        return int(exc.status or 0), str((exc.headers or {}).get("Content-Type", "")), answer
    except OSError as exc:
        raise RetryableTargetError(f"the Kubernetes API server did not answer the proxy to {name}: {exc}") from None
    return int(response.status), str(response.headers.get("Content-Type", "")), bytes(response.data)
