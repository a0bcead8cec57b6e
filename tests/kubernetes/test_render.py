"""`orchestrate render --target kubernetes`: the objects, checked against the Kubernetes OpenAPI
schemas offline (kubernetes-validate, strict: an unknown field fails) for every minor version
from the oldest the target accepts to the newest the validator knows, and the refusals.

No cluster: render asks none, and none can run here (docs/targets.md says what is emulated).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as validate_utils

from orchestrator.model import mlmodel

IMAGE = "registry.example/churn@sha256:" + "ab" * 32


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "render", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def render(model: Path, *config: str, name: str = "churn") -> list[dict[str, Any]]:
    done = run(str(model), "--name", name, "-C", f"image={IMAGE}", *(f"-C{item}" for item in config))
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout))


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return [item["kind"] for item in objects]


def minor_versions() -> list[str]:
    from targets.kubernetes import OLDEST_MINOR

    versions = {tuple(int(part) for part in v.split(".")) for v in validate_utils.all_versions()}
    return [".".join(map(str, v)) for v in sorted(versions) if v[1] >= OLDEST_MINOR]


FULL = ("replicas=3", "cpu=500m", "memory=1Gi", "autoscale.max_replicas=6", "image_pull_secret_names=regcred,backup",
        "env=LOG_LEVEL=debug", "service_type=LoadBalancer", "namespace=models", "service_account=scorer")


def test_the_objects_validate_strictly_against_every_supported_minor_version(noop_model: Path) -> None:
    objects = render(noop_model, *FULL)
    assert kinds(objects) == ["Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Service"]
    versions = minor_versions()
    assert versions[0] == "1.25.0" and len(versions) >= 9
    for version in versions:
        for item in objects:
            kubernetes_validate.validate(item, version, strict=True)


def test_the_validator_used_above_does_refuse_a_wrong_object(noop_model: Path) -> None:
    deployment = render(noop_model)[0]
    deployment["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, minor_versions()[-1], strict=True)


def test_the_service_selects_exactly_the_versioned_pods_and_the_autoscaler_scales_them(noop_model: Path) -> None:
    deployment, budget, autoscaler, service = render(noop_model, *FULL)
    version = deployment["metadata"]["labels"]["orchestrate.io/version"]
    assert deployment["metadata"]["name"] == f"churn-{version}" and service["metadata"]["name"] == "churn"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"] == budget["spec"]["selector"][
        "matchLabels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {item["metadata"]["namespace"] for item in (deployment, budget, autoscaler, service)} == {"models"}
    assert all(item["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "orchestrate"
               for item in (deployment, budget, autoscaler, service))
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": deployment["metadata"]["name"]}
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (3, 6)
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_the_pod_meets_the_restricted_profile_and_probes_the_scoring_server(noop_model: Path) -> None:
    pod = render(noop_model, *FULL)[0]["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert pod["metadata"]["annotations"]["orchestrate.io/model-digest"] == mlmodel.read_model(str(noop_model)).digest
    assert container["image"] == IMAGE and container["ports"][0]["containerPort"] == 8080
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "scorer"
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "backup"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": "http"}
    # startup_timeout (120 s by default) is what the startup probe allows, at its period
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 120
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    environment = {item["name"]: item["value"] for item in container["env"]}
    assert environment["LOG_LEVEL"] == "debug" and environment["ORCHESTRATE_WORKERS"] == "1"


def test_one_replica_without_autoscaling_is_a_deployment_and_a_service(noop_model: Path) -> None:
    objects = render(noop_model, "read_only_root=false", "startup_timeout=300")
    assert kinds(objects) == ["Deployment", "Service"]
    deployment = objects[0]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 1
    assert container["securityContext"]["readOnlyRootFilesystem"] is False and "volumeMounts" not in container
    assert container["startupProbe"]["failureThreshold"] == 150


def test_the_same_inputs_render_the_same_bytes_and_a_change_renames_the_version(
        noop_model: Path, tmp_path: Path) -> None:
    first = run(str(noop_model), "--name", "churn", "-C", f"image={IMAGE}")
    again = run(str(noop_model), "--name", "churn", "-C", f"image={IMAGE}")
    assert first.returncode == 0 and first.stdout == again.stdout
    name = yaml.safe_load_all(first.stdout).__next__()["metadata"]["name"]
    assert render(noop_model, "replicas=2")[0]["metadata"]["name"] != name
    changed = tmp_path / "model"
    shutil.copytree(noop_model, changed)
    (changed / "notes.txt").write_text("a new file is a new model\n")
    assert render(changed)[0]["metadata"]["name"] != name


def test_render_records_nothing(noop_model: Path, orchestrate_home: Path) -> None:
    render(noop_model)
    assert not (orchestrate_home / "state.db").exists()


@pytest.mark.parametrize(("args", "message", "hint"), [
    (["--name", "Churn"], "is not a Kubernetes Service name", "--name churn"),
    (["--name", "9lives"], "is not a Kubernetes Service name", "--name model-9lives"),
    (["-C", "namespace=Models"], "is not a Kubernetes namespace name", "-C namespace=models"),
    (["-C", "memory=512m"], "must be a Kubernetes quantity", "512Mi is mebibytes"),
    (["-C", "cpu=half"], "must be a Kubernetes quantity", "-C cpu=500m"),
    (["-C", "autoscale.max_replicas=4"], "needs a CPU request", "-C cpu=500m"),
    (["-C", "autoscale.max_replicas=2", "-C", "replicas=3", "-C", "cpu=1"], "below replicas", "max_replicas=6"),
    (["-C", "env=API_TOKEN=env:TOKEN"], "is a secret reference", "kubectl set env"),
    (["-C", "env=1BAD=x"], "is not allowed by Kubernetes", "not starting with a digit"),
    (["-C", "kubernetes_version=1.20"], "is not 1.25 or later", "kubernetes_version=1.31"),
    (["-C", "replica=2"], "unknown config key 'replica'", "replicas"),
    (["-t", "local"], "target 'local' has no objects to render", "targets that render: kubernetes"),
])
def test_bad_input_is_refused_with_the_rule_and_a_fix(
        noop_model: Path, args: list[str], message: str, hint: str) -> None:
    if "--name" not in args:
        args = ["--name", "churn", *args]
    done = run(str(noop_model), "-C", f"image={IMAGE}", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and hint in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_without_an_image_or_a_registry_render_says_how_to_give_one(noop_model: Path) -> None:
    done = run(str(noop_model), "--name", "churn")
    assert done.returncode == 2
    assert "render needs an image the cluster can pull" in done.stderr and "-C registry=" in done.stderr


def test_deploy_without_a_cluster_refuses_before_recording_anything(noop_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"), "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    done = subprocess.run([sys.executable, "-m", "orchestrator", "deploy", str(noop_model), "--name", "churn",
                           "--target", "kubernetes", "-C", f"image={IMAGE}"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False, env=env)
    assert done.returncode == 2 and "no usable Kubernetes cluster configuration" in done.stderr, done.stderr
    assert "KUBECONFIG" in done.stderr and "Traceback" not in done.stderr
    for args in ((), ("-C", "registry=")):
        unset = subprocess.run([sys.executable, "-m", "orchestrator", "deploy", str(noop_model), "--name", "churn",
                                "--target", "kubernetes", *args], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=120, check=False, env=env)
        assert unset.returncode == 2 and "needs an image the cluster can pull" in unset.stderr, unset.stderr
    listed = subprocess.run([sys.executable, "-m", "orchestrator", "list", "--json"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert "churn" not in listed.stdout


def test_the_python_api_returns_the_same_objects(noop_model: Path) -> None:
    import orchestrator

    objects = orchestrator.render_objects(str(noop_model), name="churn", config={"image": IMAGE})
    assert objects == render(noop_model)
