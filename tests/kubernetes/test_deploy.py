"""`deploy --target kubernetes` end to end against the fake API server, through the official
client: the version's objects applied and recorded, its rollout watched, `/ping` and the input
example sent through a pod's proxy, the Service flipped, the old version deleted; rollback,
predict, logs and delete; and `render` printing exactly what `deploy` applied.

The fake's pods run nothing: its pod and Service proxy forwards to a real scoring server of
the same model that this module starts (orchestrator/emulators/kubernetes.py says what is emulated).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import render_objects
from orchestrator.api import Client
from orchestrator.emulators.kubernetes import FakeApiServer
from targets.kubernetes import manifests
from tests.scoring.conftest import free_port, start_server

IMAGE = "127.0.0.1:5000/churn@sha256:" + "b" * 64


@pytest.fixture(scope="module")
def fake(example_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeApiServer]:
    port = free_port()
    log = tmp_path_factory.mktemp("scoring") / "server.log"
    command = [sys.executable, "-m", "scoring", "serve", str(example_model), "--port", str(port), "--workers", "1"]
    server = start_server(command, port, log)
    api = FakeApiServer().start()
    try:
        server.wait_ready(120)
        api.rollout_s = 0.2
        api.progress_deadline_s = 20.0
        api.proxy_to = server.url
        yield api
    finally:
        api.stop()
        server.stop()


@pytest.fixture
def cluster_env(fake: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """KUBECONFIG for the fake, and a new namespace; returns the namespace."""
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(fake.kubeconfig()))
    monkeypatch.setenv("KUBECONFIG", str(path))
    from kubernetes import config

    config.new_client_from_config(str(path)).call_api(
        "/api/v1/namespaces", "POST", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        header_params={"Content-Type": "application/json"}, auth_settings=["BearerToken"], _preload_content=False,
    )
    return namespace


def selected_version(fake: FakeApiServer, namespace: str) -> str:
    service = fake.get("Service", "churn", namespace)
    assert service is not None
    return str(service["spec"]["selector"][manifests.VERSION_LABEL])


def deployments(fake: FakeApiServer, namespace: str) -> set[str]:
    return {d["metadata"]["name"] for d in fake.list("Deployment", namespace) if not d["metadata"].get("deletionTimestamp")}


def wait_gone(fake: FakeApiServer, namespace: str, name: str) -> None:
    deadline = time.monotonic() + 10
    while name in {d["metadata"]["name"] for d in fake.list("Deployment", namespace)} and time.monotonic() < deadline:
        time.sleep(0.05)


def test_deploy_update_rollback_predict_delete(
    fake: FakeApiServer, cluster_env: str, example_model: Path, orchestrate_home: Path
) -> None:
    namespace = cluster_env
    config: dict[str, Any] = {"image": IMAGE, "namespace": namespace}
    client = Client()
    try:
        first = client.deploy(str(example_model), name="churn", target="kubernetes", config=config)
        record = client.deployment_record(first)
        assert record.status == "succeeded", record
        outputs = {k: v for a in record.attempts or () for k, v in a.outputs.items()}
        v1 = str(outputs["version"])
        assert deployments(fake, namespace) == {f"churn-{v1}"} and selected_version(fake, namespace) == v1
        assert outputs["smoke_predictions"] >= 1 and outputs["pod"].startswith(f"churn-{v1}")
        assert outputs["url"] == f"http://churn.{namespace}.svc.cluster.local:80"
        recorded = {(r.kind, r.name): r for r in record.resources or ()}
        held = fake.get("Deployment", f"churn-{v1}", namespace)
        assert held is not None
        assert recorded[("k8s_deployment", f"churn-{v1}")].external_id == held["metadata"]["uid"]
        assert recorded[("k8s_service", "churn")].state == "created"

        # render prints exactly what deploy applied
        rendered = render_objects(str(example_model), name="churn", config=config)
        for obj in rendered:
            live = fake.get(obj["kind"], obj["metadata"]["name"], namespace)
            assert live is not None, obj["metadata"]["name"]
            for key in obj["spec"]:
                assert live["spec"][key] == obj["spec"][key], (obj["kind"], key)
            assert obj["metadata"]["labels"].items() <= live["metadata"]["labels"].items()

        answer = client.predict("churn", json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]}).encode())
        assert answer.status == 200 and len(json.loads(answer.body)["predictions"]) == 1
        assert client.predict("churn", b'{"nope": 1}').status == 400

        # an update: a new version, the Service flipped, the old version deleted after
        second = client.deploy(str(example_model), name="churn", target="kubernetes", config={"replicas": 2})
        assert client.deployment_record(second).status == "succeeded"
        v2 = selected_version(fake, namespace)
        assert v2 != v1
        wait_gone(fake, namespace, f"churn-{v1}")
        assert deployments(fake, namespace) == {f"churn-{v2}"}
        assert fake.get("PodDisruptionBudget", f"churn-{v2}", namespace) is not None  # replicas > 1

        # rollback: the first version again, without a rebuild, and the second one deleted
        back = client.rollback("churn")
        assert client.deployment_record(back).status == "succeeded"
        assert selected_version(fake, namespace) == v1
        wait_gone(fake, namespace, f"churn-{v2}")
        assert deployments(fake, namespace) == {f"churn-{v1}"}
        assert "==> pod churn-" in client.logs("churn")
        runtime = json.dumps(client.endpoint_status("churn").to_dict(), default=str)
        assert '"available_replicas": 1' in runtime and f'"deployment": "churn-{v1}"' in runtime

        client.delete("churn")
        wait_gone(fake, namespace, f"churn-{v1}")
        assert fake.list("Deployment", namespace) == [] and fake.get("Service", "churn", namespace) is None
    finally:
        client.close()


def test_a_version_that_does_not_roll_out_fails_and_leaves_the_live_one_serving(
    fake: FakeApiServer, cluster_env: str, example_model: Path, orchestrate_home: Path
) -> None:
    namespace = cluster_env
    client = Client()
    try:
        first = client.deploy(str(example_model), name="churn", target="kubernetes",
                              config={"image": IMAGE, "namespace": namespace})
        v1 = selected_version(fake, namespace)
        assert client.deployment_record(first).status == "succeeded"
        # the node (4 cores) cannot take what the new version asks for
        failed = client.deployment_record(
            client.deploy(str(example_model), name="churn", target="kubernetes", config={"cpu": "64"})
        )
        assert failed.status == "rolled_back", failed  # the live version kept serving
        assert "Unschedulable" in str(failed.error) and "lower -C cpu" in str(failed.error)
        assert selected_version(fake, namespace) == v1  # traffic never moved
        assert deployments(fake, namespace) == {f"churn-{v1}"}  # the failed version was released
    finally:
        client.delete("churn")
        client.close()


def test_an_update_that_fails_after_the_flip_gives_traffic_back_to_the_live_version(
    fake: FakeApiServer, cluster_env: str, example_model: Path, orchestrate_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = cluster_env
    client = Client()
    try:
        client.deploy(str(example_model), name="churn", target="kubernetes", config={"image": IMAGE, "namespace": namespace})
        v1 = selected_version(fake, namespace)
    finally:
        client.close()
    monkeypatch.setenv("ORCHESTRATE_FAULTS", "cleanup:permanent")  # after shift_traffic flipped the Service
    failing = Client()
    try:
        record = failing.deployment_record(
            failing.deploy(str(example_model), name="churn", target="kubernetes", config={"replicas": 2})
        )
        assert record.status in ("rolled_back", "failed"), record
        assert selected_version(fake, namespace) == v1  # the Service selects the live version again
        assert f"churn-{v1}" in deployments(fake, namespace)
        answer = failing.predict("churn", json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]}).encode())
        assert answer.status == 200
    finally:
        monkeypatch.delenv("ORCHESTRATE_FAULTS")
        failing.close()
    cleaner = Client()
    try:
        cleaner.delete("churn")
    finally:
        cleaner.close()


def _cli(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=180, check=False, env={**os.environ, **(extra_env or {})},
    )


@pytest.mark.parametrize("fault", ["create_endpoint:crash-after", "health_check:crash-during:0.3"])
def test_a_runner_killed_after_the_apply_or_during_the_rollout_resumes_with_one_deployment(
    fake: FakeApiServer, cluster_env: str, example_model: Path, orchestrate_home: Path, fault: str
) -> None:
    namespace = cluster_env
    fake.rollout_s = 1.5  # still rolling out when the runner is killed
    try:
        crashed = _cli("deploy", str(example_model), "--name", "churn", "--target", "kubernetes",
                       "-C", f"image={IMAGE}", "-C", f"namespace={namespace}", extra_env={"ORCHESTRATE_FAULTS": fault})
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        assert len(deployments(fake, namespace)) == 1
        resumed = _cli("resume", "1")
        assert resumed.returncode == 0 and "deployment 1 succeeded" in resumed.stdout, resumed.stderr
    finally:
        fake.rollout_s = 0.2
    (name,) = deployments(fake, namespace)
    assert selected_version(fake, namespace) == name.removeprefix("churn-")
    client = Client()
    try:
        record = client.deployment_record(1)
        held = fake.get("Deployment", name, namespace)
        assert held is not None
        recorded = [r for r in record.resources or () if r.kind == "k8s_deployment"]
        assert [(r.name, r.state, r.external_id) for r in recorded] == [(name, "created", held["metadata"]["uid"])]
        client.delete("churn")
    finally:
        client.close()
