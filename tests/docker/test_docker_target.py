"""The `docker` target end to end through the real CLI: deploy, zero-downtime redeploy, rollback,
logs, delete, resume after a crash, a broken model, a registry push."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker

ENDPOINT_LABEL = "io.orchestrate.endpoint"


def _predict(url: str, model: Path) -> list[Any]:
    body = (model / "serving_input_example.json").read_bytes()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return list(json.loads(answer.read())["predictions"])


def _status(cli: Any, ref: str) -> dict[str, Any]:
    return dict(json.loads(cli("status", ref, "--json").stdout))


def _servers(docker_client: Any, endpoint: str) -> list[Any]:
    return [c for c in docker_client.containers.list(all=True, filters={"label": f"{ENDPOINT_LABEL}={endpoint}"})
            if c.labels.get("io.orchestrate.role") != "pod"]


class Poller(threading.Thread):
    """A client calling the endpoint's stable URL without pause; records every failure."""

    def __init__(self, url: str, model: Path) -> None:
        super().__init__(daemon=True)
        self.url, self.model = url, model
        self.stop = threading.Event()
        self.answers: list[tuple[Any, ...]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.answers.append(tuple(_predict(self.url, self.model)))
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(exc))


def test_deploy_redeploy_rollback_logs_delete(cli: Any, docker_client: Any, registry: str, example_model: Path,
                                              example_model_v2: Path) -> None:
    push = ["-C", f"registry={registry}", "-C", "image=orchestrate-test/iris-target"]
    cli("deploy", str(example_model), "-n", "iris", "-t", "docker", *push, "-C", "memory=1g", "-C", "cpus=1.5")
    live = _status(cli, "iris")["live"]
    url = live["url"]
    v1 = _predict(url, example_model)
    container = docker_client.containers.get(live["runtime"]["container"])
    host_config = container.attrs["HostConfig"]
    assert host_config["Memory"] == 1024 ** 3 and host_config["NanoCpus"] == 1_500_000_000
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped"
    first = _status(cli, "1")
    recorded = {r["kind"] for r in first["resources"] if r["state"] in ("created", "adopted")}
    assert recorded == {"image", "pushed_image", "pod", "container"}
    pushed = next(r for r in first["resources"] if r["kind"] == "pushed_image")
    assert "@sha256:" in pushed["external_id"]

    poller = Poller(url, example_model)
    poller.start()
    try:
        cli("deploy", str(example_model_v2), "-n", "iris", "-t", "docker", *push, "-C", "memory=1g", "-C", "cpus=1.5")
        v2 = _predict(url, example_model)
        assert v2 != v1
        cli("rollback", "iris")
        assert _predict(url, example_model) == v1
    finally:
        poller.stop.set()
        poller.join(timeout=60)
    assert poller.failures == []
    assert len(poller.answers) > 20
    assert set(poller.answers) == {tuple(v1), tuple(v2)}

    assert len([c for c in _servers(docker_client, "iris") if c.status == "running"]) == 1
    access_log = [json.loads(line) for line in cli("logs", "iris", "--tail", "5").stdout.splitlines()
                  if line.startswith("{")]
    assert "/invocations" in {entry.get("path") for entry in access_log}
    rollback = _status(cli, "3")
    assert [a["status"] for a in rollback["attempts"][:3]] == ["skipped"] * 3  # no rebuild, no push
    cli("delete", "iris", "--yes")
    assert docker_client.containers.list(all=True, filters={"label": f"{ENDPOINT_LABEL}=iris"}) == []
    docker_client.images.get(live["runtime"]["image"])  # kept unless remove_image


def test_crash_between_container_start_and_health_check_resumes_without_a_second_container(
        cli: Any, docker_client: Any, example_model: Path) -> None:
    crashed = cli("deploy", str(example_model), "-n", "crashy", "-t", "docker", check=False,
                  env={"ORCHESTRATE_FAULTS": "health_check:crash-before"})
    assert crashed.returncode != 0
    servers = _servers(docker_client, "crashy")
    assert len(servers) == 1, [(c.name, c.status, c.labels) for c in servers]  # what else was counted, if it fails
    started = servers[0].id
    cli("resume", "1")
    record = _status(cli, "1")
    assert record["status"] == "succeeded"
    servers = _servers(docker_client, "crashy")
    assert [c.id for c in servers] == [started]
    assert len(_predict(record["url"], example_model)) == 4
    cli("delete", "crashy", "--yes")
    assert _servers(docker_client, "crashy") == []


def test_broken_model_fails_health_with_the_log_tail_and_the_previous_keeps_serving(
        cli: Any, docker_client: Any, example_model: Path, broken_model: Path) -> None:
    cli("deploy", str(example_model), "-n", "fragile", "-t", "docker", "-C", "startup_timeout=90")
    url = _status(cli, "fragile")["live"]["url"]
    before = _predict(url, example_model)
    failed = cli("deploy", str(broken_model), "-n", "fragile", "-t", "docker", "-C", "startup_timeout=90",
                 check=False)
    assert failed.returncode == 1
    assert "container log tail" in failed.stderr
    assert "--broken" in failed.stderr  # the model's own error, from inside the container
    assert _status(cli, "2")["status"] == "rolled_back"
    assert _predict(url, example_model) == before
    assert len(_servers(docker_client, "fragile")) == 1
    cli("delete", "fragile", "--yes")


def test_delete_with_remove_image_removes_the_image(cli: Any, docker_client: Any, example_model: Path) -> None:
    import docker

    cli("deploy", str(example_model), "-n", "tidy", "-t", "docker", "-C", "image=orchestrate-test/tidy",
        "-C", "remove_image=true")
    image = _status(cli, "tidy")["live"]["runtime"]["image"]
    cli("delete", "tidy", "--yes")
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image)
