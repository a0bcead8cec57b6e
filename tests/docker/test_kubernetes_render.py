"""`orchestrate render --target kubernetes -C registry=...`: the model's image built and pushed, the
objects pinned to the digest the registry holds, and that image serving under the pod's
restrictions (non-root numeric user, read-only root with a writable /tmp, no capabilities, no
privilege escalation), which is what the kubelet would impose."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answer(url: str, body: bytes | None = None, timeout: float = 120) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return bytes(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_render_builds_pushes_pins_the_digest_and_the_image_serves_under_the_pod_rules(
        docker_client: Any, registry: str, example_model: Path) -> None:
    name = f"k8s-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "render", str(example_model), "--name", name,
         "-C", f"registry={registry}", "-C", "memory=1Gi"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-6000:]
    deployment = next(yaml.safe_load_all(done.stdout))
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image = container["image"]
    assert image.startswith(f"{registry}/orchestrate-{name}@sha256:")
    # the digest is the registry's: pulling by it gets the image that was built
    pulled = docker_client.images.pull(image)
    assert any(tag.startswith(f"{registry}/orchestrate-{name}:") for tag in docker_client.images.get(pulled.id).tags)

    port = _free_port()
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    served = docker_client.containers.run(
        image,
        command=container["args"],
        detach=True,
        user=f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}",
        read_only=True,
        tmpfs={"/tmp": ""},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        environment={item["name"]: item["value"] for item in container["env"]},
        ports={f"{container['ports'][0]['containerPort']}/tcp": ("127.0.0.1", port)},
        labels={"io.orchestrate.endpoint": "test"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert _answer(base + container["readinessProbe"]["httpGet"]["path"]) is not None
        body = (example_model / "serving_input_example.json").read_bytes()
        predictions = json.loads(_answer(base + "/invocations", body))["predictions"]
        assert len(predictions) == 4
    finally:
        served.remove(force=True)
