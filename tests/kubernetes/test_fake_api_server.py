"""The fake Kubernetes API server (orchestrator/emulators/kubernetes.py) against the tools that will
drive it: the official Python client and kubectl, unchanged. What a test here passes, the
kubernetes target's tests can rely on.

`orchestrate render`'s output goes to `kubectl apply --server-side` as a user would hand it
over, and kubectl's own rollout rules (`kubectl rollout status`) read the fake's controller.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from orchestrator.emulators.kubernetes import FAULT_ANNOTATION, FakeApiServer
from tests.kubernetes.test_render import IMAGE, run

MANAGED = "app.kubernetes.io/managed-by=orchestrate"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    server.rollout_s = 0.2
    server.progress_deadline_s = 1.5
    yield server
    server.stop()


@pytest.fixture
def namespace(kubeconfig: Path) -> str:
    name = f"test-{uuid.uuid4().hex[:8]}"
    core(kubeconfig).create_namespace({"metadata": {"name": name}})
    return name


def api_client(kubeconfig: Path) -> Any:
    return config.new_client_from_config(str(kubeconfig))


def apps(kubeconfig: Path) -> client.AppsV1Api:
    return client.AppsV1Api(api_client(kubeconfig))


def core(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(kubeconfig))


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("kubectl")
    if executable is None:
        pytest.fail("kubectl is not installed (CI's machine image has it: google-cloud-cli)")
    done = subprocess.run([executable, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)
    if check:
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def deployment(name: str, *, replicas: int = 2, image: str = IMAGE, labels: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {"app.kubernetes.io/managed-by": "orchestrate"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "scoring", "image": image}]},
            },
        },
    }


def apply(kubeconfig: Path, namespace: str, body: dict[str, Any]) -> Any:
    return apps(kubeconfig).patch_namespaced_deployment(
        body["metadata"]["name"], namespace, body, field_manager="orchestrate", force=True,
        _content_type="application/apply-patch+yaml",
    )


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# -- discovery ---------------------------------------------------------------------------------


def test_discovery_serves_the_client_and_kubectl(kubeconfig: Path) -> None:
    version = client.VersionApi(api_client(kubeconfig)).get_code()
    assert version.git_version.startswith("v1.")
    served = json.loads(kubectl(kubeconfig, "version", "-o", "json").stdout)["serverVersion"]
    assert served["gitVersion"] == version.git_version
    resources = kubectl(kubeconfig, "api-resources", "-o", "name").stdout.split()
    for name in ("deployments.apps", "services", "pods", "horizontalpodautoscalers.autoscaling",
                 "poddisruptionbudgets.policy", "replicasets.apps", "events"):
        assert name in resources


# -- server-side apply and object semantics ---------------------------------------------------


def test_server_side_apply_creates_then_updates_with_kubernetes_generation_rules(kubeconfig: Path,
                                                                                 namespace: str) -> None:
    created = apply(kubeconfig, namespace, deployment("churn"))
    uid, first_version = created.metadata.uid, int(created.metadata.resource_version)
    assert created.metadata.generation == 1
    assert [entry.manager for entry in created.metadata.managed_fields] == ["orchestrate"]

    relabelled = apply(kubeconfig, namespace, deployment("churn", labels={
        "app.kubernetes.io/managed-by": "orchestrate", "orchestrate.io/endpoint": "churn"}))
    assert relabelled.metadata.uid == uid  # the same object
    assert int(relabelled.metadata.resource_version) > first_version
    assert relabelled.metadata.generation == 1  # metadata is not spec

    scaled = apply(kubeconfig, namespace, deployment("churn", replicas=3))
    assert scaled.metadata.generation == 2 and scaled.spec.replicas == 3
    # The manager no longer applies the label it gave up: server-side apply removes it.
    assert "orchestrate.io/endpoint" not in scaled.metadata.labels

    again = apply(kubeconfig, namespace, deployment("churn", replicas=3))
    assert again.metadata.generation == 2  # an identical apply changes no spec


def test_errors_are_status_bodies_the_client_raises(kubeconfig: Path, namespace: str) -> None:
    api = apps(kubeconfig)
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_deployment("nothing", namespace)
    assert missing.value.status == 404 and json.loads(missing.value.body)["reason"] == "NotFound"

    api.create_namespaced_deployment(namespace, deployment("once"))
    with pytest.raises(ApiException) as twice:
        api.create_namespaced_deployment(namespace, deployment("once"))
    assert twice.value.status == 409 and json.loads(twice.value.body)["reason"] == "AlreadyExists"

    stale = api.read_namespaced_deployment("once", namespace)
    api.patch_namespaced_deployment("once", namespace, {"spec": {"replicas": 5}})
    with pytest.raises(ApiException) as conflict:
        api.replace_namespaced_deployment("once", namespace, stale)
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "Conflict"

    with pytest.raises(ApiException) as unmanaged:
        api.patch_namespaced_deployment("once", namespace, deployment("once"),
                                        _content_type="application/apply-patch+yaml")
    assert unmanaged.value.status == 400 and "fieldManager" in json.loads(unmanaged.value.body)["message"]

    with pytest.raises(ApiException) as no_namespace:
        api.create_namespaced_deployment("no-such-namespace", deployment("x"))
    assert no_namespace.value.status == 404


def test_merge_strategic_and_json_patches(kubeconfig: Path, namespace: str) -> None:
    api = apps(kubeconfig)
    api.create_namespaced_deployment(namespace, deployment("patched"))
    # The client sends a dict as a strategic merge patch: containers merge by name.
    strategic = api.patch_namespaced_deployment("patched", namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "sidecar", "image": "busybox"}]}}}})
    assert [c.name for c in strategic.spec.template.spec.containers] == ["scoring", "sidecar"]
    merged = api.patch_namespaced_deployment("patched", namespace, {"metadata": {"labels": {"tier": "gold"}}},
                                             _content_type="application/merge-patch+json")
    assert merged.metadata.labels["tier"] == "gold"
    patched = api.patch_namespaced_deployment("patched", namespace, [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "remove", "path": "/metadata/labels/tier"},
    ])
    assert patched.spec.replicas == 4 and "tier" not in patched.metadata.labels
    assert patched.metadata.generation == 3  # two spec changes, one metadata change
    scale = api.read_namespaced_deployment_scale("patched", namespace)
    assert scale.spec.replicas == 4


# -- kubectl: what render prints, applied, rolled out, listed, deleted ------------------------


def test_kubectl_applies_what_render_prints_and_reads_the_rollout(kubeconfig: Path, namespace: str,
                                                                   noop_model: Path, tmp_path: Path) -> None:
    done = run(str(noop_model), "--name", "churn", "-C", f"image={IMAGE}", "-C", "replicas=2",
               "-C", f"namespace={namespace}")
    assert done.returncode == 0, done.stderr
    manifests = tmp_path / "churn.yaml"
    manifests.write_text(done.stdout)
    applied = kubectl(kubeconfig, "apply", "--server-side", "--field-manager=orchestrate", "-f", str(manifests))
    kinds = [item["kind"] for item in yaml.safe_load_all(done.stdout)]
    assert sorted(kinds) == ["Deployment", "PodDisruptionBudget", "Service"]
    assert applied.stdout.count("serverside-applied") == len(kinds)

    versioned = next(item for item in yaml.safe_load_all(done.stdout) if item["kind"] == "Deployment")
    name = versioned["metadata"]["name"]
    rolled = kubectl(kubeconfig, "-n", namespace, "rollout", "status", f"deployment/{name}", "--timeout=20s")
    assert "successfully rolled out" in rolled.stdout

    listed = json.loads(kubectl(kubeconfig, "-n", namespace, "get", "deploy,svc,hpa,pdb", "-l", MANAGED,
                                "-o", "json").stdout)
    assert sorted(item["kind"] for item in listed["items"]) == sorted(kinds)
    live = apps(kubeconfig).read_namespaced_deployment(name, namespace)
    assert live.status.observed_generation == live.metadata.generation
    assert live.status.available_replicas == live.status.updated_replicas == 2
    service = core(kubeconfig).read_namespaced_service("churn", namespace)
    pods = core(kubeconfig).list_namespaced_pod(
        namespace, label_selector=",".join(f"{k}={v}" for k, v in service.spec.selector.items()))
    assert len(pods.items) == 2 and all(pod.status.phase == "Running" for pod in pods.items)

    kubectl(kubeconfig, "-n", namespace, "delete", "deploy,svc,hpa,pdb", "-l", MANAGED, "--cascade=foreground",
            "--wait=true", "--timeout=20s")
    assert apps(kubeconfig).list_namespaced_deployment(namespace).items == []
    assert core(kubeconfig).list_namespaced_pod(namespace).items == []  # owned pods went with them


def test_foreground_delete_keeps_the_owner_until_its_dependents_are_gone(fake: FakeApiServer, kubeconfig: Path,
                                                                        namespace: str) -> None:
    apply(kubeconfig, namespace, deployment("going"))
    wait_for(lambda: core(kubeconfig).list_namespaced_pod(namespace).items)
    apps(kubeconfig).delete_namespaced_deployment("going", namespace, propagation_policy="Foreground")
    marked = apps(kubeconfig).read_namespaced_deployment("going", namespace)
    assert marked.metadata.deletion_timestamp is not None
    assert marked.metadata.finalizers == ["foregroundDeletion"]
    wait_for(lambda: fake.get("Deployment", "going", namespace) is None)
    assert core(kubeconfig).list_namespaced_pod(namespace).items == []
    assert apps(kubeconfig).list_namespaced_replica_set(namespace).items == []


# -- watch -------------------------------------------------------------------------------------


def test_watch_streams_changes_and_expires_old_versions(fake: FakeApiServer, kubeconfig: Path,
                                                        namespace: str) -> None:
    api = apps(kubeconfig)
    start = api.list_namespaced_deployment(namespace).metadata.resource_version
    apply(kubeconfig, namespace, deployment("watched", replicas=1))
    seen = []
    for event in watch.Watch().stream(api.list_namespaced_deployment, namespace, resource_version=start,
                                      timeout_seconds=10):
        status = event["object"].status
        seen.append((event["type"], status.available_replicas if status else None))
        if seen[-1][1] == 1:
            break
    assert seen[0] == ("ADDED", None) and seen[-1] == ("MODIFIED", 1)

    fake.compact()
    with pytest.raises(ApiException) as expired:
        for _event in watch.Watch().stream(api.list_namespaced_deployment, namespace, resource_version=start,
                                           timeout_seconds=5):
            pass
    assert expired.value.status == 410


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff",
                                   "CreateContainerConfigError", "OOMKilled", "Unschedulable"])
def test_pod_faults_show_as_kubernetes_shows_them_then_the_deadline_passes(fake: FakeApiServer, kubeconfig: Path,
                                                                          namespace: str, fault: str) -> None:
    apply(kubeconfig, namespace, deployment("faulty", replicas=1, annotations={FAULT_ANNOTATION: fault}))

    def pod_signal() -> str | None:
        pods = core(kubeconfig).list_namespaced_pod(namespace).items
        if not pods:
            return None
        pod = pods[0]
        if fault == "Unschedulable":
            scheduled = next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)
            return scheduled.reason if scheduled is not None and scheduled.status == "False" else None
        status = (pod.status.container_statuses or [None])[0]
        if status is None:
            return None
        if fault == "OOMKilled":
            return status.last_state.terminated.reason if status.last_state.terminated else None
        return status.state.waiting.reason if status.state.waiting else None

    assert wait_for(pod_signal) == fault
    rolled = kubectl(kubeconfig, "-n", namespace, "rollout", "status", "deployment/faulty", "--timeout=20s",
                     check=False)
    assert rolled.returncode != 0 and "exceeded its progress deadline" in rolled.stderr
    conditions = {c.type: c for c in apps(kubeconfig).read_namespaced_deployment("faulty", namespace).status.conditions}
    assert conditions["Progressing"].status == "False"
    assert conditions["Progressing"].reason == "ProgressDeadlineExceeded"


def test_kubectl_is_1_27_or_newer() -> None:
    # The image's kubectl is a dispatcher to 1.27-1.33; the version the tests ran with is printed.
    done = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True,
                          check=False, env=dict(os.environ, KUBECONFIG=os.devnull), timeout=30)
    assert done.returncode == 0, done.stderr
    minor = int(json.loads(done.stdout)["clientVersion"]["minor"].rstrip("+"))
    assert minor >= 27
