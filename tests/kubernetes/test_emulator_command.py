"""`orchestrate emulator kubernetes`: the fake API server as a command users run, announcing on
its first stdout line what points a client at it, serving the official client and kubectl, and
stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from targets.kubernetes import manifests
from targets.kubernetes.cluster import Cluster
from tests.kubernetes.test_cluster import version


def test_the_emulator_announces_its_kubeconfig_serves_clients_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kube" / "config"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "emulator", "kubernetes", "--kubeconfig", str(kubeconfig),
         "--rollout-seconds", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        assert emulator.stdout is not None
        announced = json.loads(emulator.stdout.readline())
        assert announced["env"] == {"KUBECONFIG": str(kubeconfig)} and announced["config"] == {"namespace": "default"}
        assert kubeconfig.stat().st_mode & 0o777 == 0o600
        cluster = Cluster.connect("default", kubeconfig=announced["env"]["KUBECONFIG"])
        deployment = manifests.objects(version("default"))[0]
        cluster.apply(deployment)
        assert cluster.wait_for_rollout(deployment["metadata"]["name"], timeout_s=20, poll_s=0.05)
        if shutil.which("kubectl"):
            listed = subprocess.run(
                ["kubectl", "get", "deployments", "-o", "name"], capture_output=True, text=True, timeout=60,
                env={**os.environ, "KUBECONFIG": str(kubeconfig)}, check=False,
            )
            assert listed.returncode == 0 and f"deployment.apps/{deployment['metadata']['name']}" in listed.stdout
        emulator.send_signal(signal.SIGTERM)
        assert emulator.wait(20) == 0
    finally:
        if emulator.poll() is None:
            emulator.kill()
            emulator.wait()
        assert emulator.stdout is not None
        emulator.stdout.close()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "emulator", "kubernetes", "--port", str(port),
             "--kubeconfig", str(tmp_path / "config")],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "config").exists()


@pytest.mark.parametrize("flag", ["--help"])
def test_the_command_is_listed(flag: str) -> None:
    listed = subprocess.run([sys.executable, "-m", "orchestrator", "emulator", flag], capture_output=True, text=True,
                            timeout=60, check=False)
    assert listed.returncode == 0 and "kubernetes" in listed.stdout
