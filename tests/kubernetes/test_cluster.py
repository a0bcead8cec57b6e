"""targets/kubernetes/cluster.py against the fake API server, through the official client: the
objects `render` prints applied with one server-side-apply PATCH each, their uid, resourceVersion
and generation as the server holds them, rollouts judged by kubectl's rules and failed fast on
pod signals (with the container's last log lines), Foreground deletes, label lookups."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import ENGINE_KEYS
from orchestrator.emulators.kubernetes import FAULT_ANNOTATION, LOG_ANNOTATION, FakeApiServer
from targets.kubernetes import KubernetesTarget, manifests
from targets.kubernetes.cluster import FIELD_MANAGER, Cluster, RolloutFailed, pod_failure, rollout_verdict

IMAGE = "127.0.0.1:5000/churn@sha256:" + "a" * 64


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    server.rollout_s = 0.2
    server.progress_deadline_s = 30.0  # far beyond every fast failure below
    yield server
    server.stop()


@pytest.fixture
def cluster(kubeconfig: Path) -> Cluster:
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    made = Cluster.connect(namespace, kubeconfig=str(kubeconfig))
    namespace_object = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    made.call("POST", "/api/v1/namespaces", body=namespace_object)
    return made


def version(namespace: str, **config: Any) -> manifests.EndpointVersion:
    keys = {**ENGINE_KEYS, **KubernetesTarget.config_keys}
    resolved = {key: spec.default for key, spec in keys.items()}
    resolved.update(namespace=namespace, **config)
    return manifests.EndpointVersion("churn", IMAGE, "d" * 64, "models:/churn/3", resolved)


def with_fault(deployment: dict[str, Any], fault: str, log: str = "") -> dict[str, Any]:
    changed = copy.deepcopy(deployment)
    annotations = changed["spec"]["template"]["metadata"].setdefault("annotations", {})
    annotations[FAULT_ANNOTATION] = fault
    if log:
        annotations[LOG_ANNOTATION] = log
    return changed


def test_apply_creates_each_object_once_and_reports_what_the_server_holds(
    cluster: Cluster, fake: FakeApiServer
) -> None:
    objects = manifests.objects(version(cluster.namespace, replicas=2, cpu="500m", **{"autoscale.max_replicas": 4}))
    assert [o["kind"] for o in objects] == ["Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Service"]
    before = len(fake.requests)
    applied = [cluster.apply(o) for o in objects]
    patches = [r for r in fake.requests[before:] if r[0] == "PATCH"]
    assert len(patches) == 4 and len(fake.requests) - before == 4  # one PATCH each, nothing else
    for obj, result in zip(objects, applied):
        held = fake.get(obj["kind"], obj["metadata"]["name"], cluster.namespace)
        assert held is not None
        assert result.uid == held["metadata"]["uid"]
        # the Deployment controller writes status after the apply, which moves resourceVersion on
        assert int(held["metadata"]["resourceVersion"]) >= int(result.resource_version) > 0
        assert result.generation == held["metadata"]["generation"] == 1
        assert held["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "orchestrate"
        managers = [m["manager"] for m in held["metadata"].get("managedFields") or []]
        assert managers in ([], [FIELD_MANAGER])

    again = cluster.apply(objects[0])  # the same document: the same object, the same generation
    assert (again.uid, again.generation) == (applied[0].uid, 1)
    scaled = copy.deepcopy(objects[0])
    scaled["spec"]["replicas"] = 3
    changed = cluster.apply(scaled)
    assert changed.uid == applied[0].uid and changed.generation == 2
    assert int(changed.resource_version) > int(again.resource_version)


def test_a_good_rollout_is_done_by_kubectls_rules(cluster: Cluster) -> None:
    deployment = manifests.objects(version(cluster.namespace, replicas=2))[0]
    cluster.apply(deployment)
    done = cluster.wait_for_rollout(deployment["metadata"]["name"], timeout_s=20, poll_s=0.05)
    assert rollout_verdict(done) == "done"
    assert done["status"]["availableReplicas"] == 2


@pytest.mark.parametrize(
    ("fault", "restarts", "logged"),
    [
        ("ImagePullBackOff", 0, False),
        ("ErrImagePull", 0, False),
        ("CrashLoopBackOff", 3, True),
        ("OOMKilled", 3, True),
        ("CreateContainerConfigError", 0, False),
        ("Unschedulable", 0, False),
    ],
)
def test_pod_signals_fail_the_rollout_at_once_with_the_reason_and_the_last_log_lines(
    cluster: Cluster, fault: str, restarts: int, logged: bool
) -> None:
    log = "loading model\nTraceback (most recent call last):\nModuleNotFoundError: No module named 'xgboost'"
    deployment = with_fault(manifests.objects(version(cluster.namespace))[0], fault, log)
    cluster.apply(deployment)
    name = deployment["metadata"]["name"]
    started = time.monotonic()
    with pytest.raises(RolloutFailed) as failed:
        cluster.wait_for_rollout(name, timeout_s=25, poll_s=0.05)
    assert time.monotonic() - started < 25  # not the timeout, nor the 30 s progress deadline
    error = failed.value
    assert error.reason == fault and fault in str(error)
    assert error.pod.startswith(name) and error.restarts == restarts
    assert ("No module named 'xgboost'" in str(error)) == logged
    assert error.hint


def test_the_progress_deadline_fails_a_rollout_no_pod_explains(cluster: Cluster, fake: FakeApiServer) -> None:
    deployment = with_fault(manifests.objects(version(cluster.namespace))[0], "ProgressDeadlineExceeded")
    cluster.apply(deployment)
    with pytest.raises(RolloutFailed) as failed:
        cluster.wait_for_rollout(deployment["metadata"]["name"], timeout_s=25, poll_s=0.05)
    assert failed.value.reason == "ProgressDeadlineExceeded"


def test_a_rollout_that_outlasts_its_timeout_says_how_far_it_got(cluster: Cluster, fake: FakeApiServer) -> None:
    deployment = manifests.objects(version(cluster.namespace, replicas=2))[0]
    fake.rollout_s = 5.0
    try:
        cluster.apply(deployment)
        with pytest.raises(RolloutFailed, match=r"Timeout \(0 of 2 replicas available after 0.3 s\)"):
            cluster.wait_for_rollout(deployment["metadata"]["name"], timeout_s=0.3, poll_s=0.05)
    finally:
        fake.rollout_s = 0.2


def test_find_by_label_and_foreground_delete_take_the_dependents(cluster: Cluster, fake: FakeApiServer) -> None:
    objects = manifests.objects(version(cluster.namespace, replicas=2))
    for obj in objects:
        cluster.apply(obj)
    name = objects[0]["metadata"]["name"]
    cluster.wait_for_rollout(name, timeout_s=20, poll_s=0.05)
    managed = {"app.kubernetes.io/managed-by": "orchestrate", manifests.ENDPOINT_LABEL: "churn"}
    assert {(o["kind"], o["metadata"]["name"]) for o in cluster.find("Deployment", managed)} == {("Deployment", name)}
    assert len(cluster.find("Pod", objects[0]["spec"]["selector"]["matchLabels"])) == 2

    assert cluster.delete("Deployment", name) is True
    deadline = time.monotonic() + 10
    while cluster.get("Deployment", name) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cluster.get("Deployment", name) is None
    assert fake.list("ReplicaSet", cluster.namespace) == [] and fake.list("Pod", cluster.namespace) == []
    assert cluster.delete("Deployment", name) is False  # gone already: nothing to do, no error
    assert cluster.get("Service", "churn") is not None


def test_pod_failure_reads_only_signals_waiting_will_not_cure() -> None:
    creating = {"status": {"containerStatuses": [{"restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert pod_failure(creating) is None
    pending = {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": "0/3 nodes are available"}]}}
    assert pod_failure(pending) == ("Unschedulable", "0/3 nodes are available", 0)
    assert rollout_verdict({"metadata": {"generation": 2}, "status": {"observedGeneration": 1, "updatedReplicas": 1,
                                                                      "replicas": 1, "availableReplicas": 1}}) is None


def test_no_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="no usable Kubernetes cluster configuration"):
        Cluster.connect("default", kubeconfig=str(tmp_path / "missing"))
