"""The local target end to end, through the real CLI: deploy, call, redeploy without downtime,
roll back, delete; and a broken model that never replaces the one serving."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

pytestmark = pytest.mark.slow

# Predictions of the example model's versions on its serving_input_example.json.
V1_PREDICTIONS = [0, 1, 2, 2]
V2_PREDICTIONS = [0, 2, 2, 1]

# The poller stops when the redeploy ends, and in any case after this long.
POLL_LIMIT_S = 90.0


def post_invocations(url: str, body: bytes, timeout: float = 30.0) -> tuple[int, Any]:
    """One POST /invocations on a new connection (so every request goes through accept)."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1", url
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    return response.status, json.loads(payload) if payload else None


class Poller:
    """Calls the public URL continuously from a thread; records every answer or failure."""

    def __init__(self, url: str, body: bytes) -> None:
        self.url = url
        self.body = body
        self.answers: list[tuple[float, int, Any]] = []
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def __enter__(self) -> Poller:  # noqa: PYI034 (Self needs Python 3.11)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        deadline = time.monotonic() + POLL_LIMIT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, answer = post_invocations(self.url, self.body)
                self.answers.append((time.monotonic(), status, answer))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.failures.append((time.monotonic(), repr(exc)))
            # Leave the CPU to the new server loading its model (two cores here).
            self._stop.wait(0.02)


def predictions(orch: Any, name: str, example: Path) -> list[int]:
    result = orch.ok("predict", name, "-i", str(example))
    answer: list[int] = json.loads(result.stdout)["predictions"]
    return answer


def attempts_by_stage(record: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for attempt in record["attempts"]:
        grouped.setdefault(attempt["stage"], []).append(attempt)
    return grouped


def test_deploy_redeploy_rollback_delete(orch: Any, example_model: Path, example_model_v2: Path) -> None:
    name = "iris"
    example = example_model / "serving_input_example.json"
    body = example.read_bytes()

    # -- deploy v1 ------------------------------------------------------------------------
    first = orch.ok("deploy", str(example_model), "--name", name)
    assert "deployment 1 succeeded" in first.stdout, orch.describe(first)
    endpoint = orch.json("status", name)
    url = endpoint["url"]
    assert url.startswith("http://127.0.0.1:")
    assert endpoint["live_deployment_id"] == 1
    assert endpoint["live"]["runtime"]["process_alive"] is True
    assert endpoint["live"]["runtime"]["answering"] is True
    v1_pid = endpoint["live"]["runtime"]["pid"]

    assert predictions(orch, name, example) == V1_PREDICTIONS
    assert post_invocations(url, body) == (200, {"predictions": V1_PREDICTIONS})

    record = orch.deployment(1)
    stages = attempts_by_stage(record)
    assert [a["status"] for a in stages["push"]] == ["skipped"]
    for stage in ("validate", "build", "create_endpoint", "health_check", "shift_traffic", "cleanup"):
        assert [a["status"] for a in stages[stage]] == ["succeeded"], stage
    assert [r["state"] for r in record["resources"] if r["kind"] == "process"] == ["created"]

    # -- redeploy v2 while a client polls the public URL ----------------------------------
    with Poller(url, body) as poller:
        time.sleep(0.5)  # some answers from v1 before the swap starts
        second = orch.run("deploy", str(example_model_v2), "--name", name, timeout=POLL_LIMIT_S)
        time.sleep(0.5)  # and some after it ended
    assert second.returncode == 0, orch.describe(second)
    assert not poller.failures, f"{len(poller.failures)} failed request(s) during the swap: {poller.failures[:5]}"
    assert poller.answers, "the poller got no answer at all"
    statuses = {status for _, status, _ in poller.answers}
    assert statuses == {200}, statuses
    seen = [answer["predictions"] for _, _, answer in poller.answers]
    assert all(p in (V1_PREDICTIONS, V2_PREDICTIONS) for p in seen), seen
    assert seen[0] == V1_PREDICTIONS and seen[-1] == V2_PREDICTIONS
    assert orch.json("status", name)["url"] == url, "the endpoint's address changed on redeploy"
    assert predictions(orch, name, example) == V2_PREDICTIONS
    assert not psutil.pid_exists(v1_pid) or psutil.Process(v1_pid).status() == psutil.STATUS_ZOMBIE
    assert [p.pid for p in orch.servers(name)] == [orch.json("status", name)["live"]["runtime"]["pid"]]
    v2 = orch.deployment(2)
    assert v2["previous_live_id"] == 1
    assert attempts_by_stage(v2)["cleanup"][0]["outputs"]["released"] == [f"{name}-1"]
    assert [r["state"] for r in orch.deployment(1)["resources"] if r["kind"] == "process"] == ["deleted"]

    # -- roll back to v1: no rebuild ------------------------------------------------------
    rolled = orch.ok("rollback", name)
    assert "deployment 3 succeeded" in rolled.stdout, orch.describe(rolled)
    assert predictions(orch, name, example) == V1_PREDICTIONS
    assert post_invocations(url, body) == (200, {"predictions": V1_PREDICTIONS})
    v3 = orch.deployment(3)
    assert v3["source_deployment_id"] == 1
    for stage in ("validate", "build"):
        (attempt,) = attempts_by_stage(v3)[stage]
        assert attempt["status"] == "skipped"
        assert "reused" in attempt["outputs"]["skipped"]
    assert not [r for r in v3["resources"] if r["kind"] == "virtualenv"], "rollback built an environment"
    assert len(orch.servers(name)) == 1

    # -- status and history show every step -----------------------------------------------
    listed = orch.json("list")
    assert [(row["id"], row["status"], row["live"]) for row in listed] == [
        (3, "succeeded", True), (2, "succeeded", False), (1, "succeeded", False)]
    text = orch.ok("status", "3").stdout
    for fragment in ("deployment 3: succeeded", "validate", "skipped", "health_check", "cleanup", "process_alive=True"):
        assert fragment in text, text
    endpoint_text = orch.ok("status", name).stdout
    assert "live:" in endpoint_text and "deployment 3" in endpoint_text

    # -- delete ---------------------------------------------------------------------------
    live_pid = orch.json("status", name)["live"]["runtime"]["pid"]
    deleted = orch.ok("delete", name, "--yes")
    assert f"released process {name}-3" in deleted.stdout
    assert orch.servers(name) == []
    assert not psutil.pid_exists(live_pid) or psutil.Process(live_pid).status() == psutil.STATUS_ZOMBIE
    for deployment_id in (1, 2, 3):
        record = orch.deployment(deployment_id)
        assert {r["state"] for r in record["resources"] if r["kind"] == "process"} == {"deleted"}
        assert record["runtime"]["process_alive"] is False
    gone = orch.run("status", name)
    assert gone.returncode == 2 and f"no endpoint named '{name}'" in gone.stderr

    events = orch.json("history", name)
    kinds = [event["kind"] for event in events]
    for deployment_id in (1, 2, 3):
        mine = [e["kind"] for e in events if e["deployment_id"] == deployment_id]
        assert mine[0] == "deployment_created", mine
        for kind in ("stage_started", "stage_succeeded", "stage_skipped", "traffic_shifted", "deployment_succeeded"):
            assert kind in mine, (deployment_id, kind, mine)
    assert "resource_deleted" in kinds
    assert kinds[-1] == "endpoint_deleted"
    history_text = orch.ok("history", name).stdout
    assert "endpoint_deleted" in history_text and "deployment 3 succeeded" in history_text
    per_deployment = orch.json("history", "2")
    assert {e["deployment_id"] for e in per_deployment} == {2}
    assert any("cleanup" in e["message"] for e in per_deployment)


def test_broken_model_over_live_one_rolls_back(orch: Any, example_model: Path, broken_model: Path) -> None:
    name = "iris"
    example = example_model / "serving_input_example.json"
    orch.ok("deploy", str(example_model), "--name", name)
    url = orch.json("status", name)["url"]
    good_pid = orch.json("status", name)["live"]["runtime"]["pid"]

    broken = orch.run("deploy", str(broken_model), "--name", name)
    assert broken.returncode == 1, orch.describe(broken)
    assert "Traceback" not in broken.stderr
    error_line = [line for line in broken.stderr.splitlines() if line.startswith("Error: ")]
    assert error_line and "rolled_back" in error_line[0], broken.stderr
    # The server's own words reach the user: its log tail is in the error.
    assert "server log tail" in broken.stderr
    assert "this loader always fails (by design)" in broken.stderr

    record = orch.deployment(2)
    assert record["status"] == "rolled_back"
    assert "server log tail" in record["error"]
    assert "this loader always fails (by design)" in record["error"]
    assert [r["state"] for r in record["resources"] if r["kind"] == "process"] == ["deleted"]
    (health,) = attempts_by_stage(record)["health_check"]
    assert health["status"] == "failed" and health["error_kind"] == "permanent"
    assert "by design" in orch.ok("status", "2").stdout

    endpoint = orch.json("status", name)
    assert endpoint["live_deployment_id"] == 1
    assert endpoint["url"] == url
    assert [p.pid for p in orch.servers(name)] == [good_pid]
    assert predictions(orch, name, example) == V1_PREDICTIONS
    assert post_invocations(url, example.read_bytes()) == (200, {"predictions": V1_PREDICTIONS})
    kinds = [e["kind"] for e in orch.json("history", "2")]
    assert "deployment_rolling_back" in kinds and kinds[-1] == "deployment_rolled_back"


def test_keep_failed_keeps_a_broken_first_deployments_server_until_cancel(orch: Any, broken_model: Path) -> None:
    """--keep-failed on the local target (issue 11 B1): what the failed deployment made stays recorded
    as created (the broken server exits by itself; its log stays), and cancel releases it. Without
    the flag, the same failure releases at once."""
    kept = orch.run("deploy", str(broken_model), "--name", "kept", "--keep-failed")
    assert kept.returncode == 1, orch.describe(kept)
    assert "what it created is kept (keep_failed): `orchestrate cancel 1` releases it" in kept.stderr
    record = orch.deployment(1)
    assert record["status"] == "failed"
    (process,) = [r for r in record["resources"] if r["kind"] == "process"]
    assert process["state"] == "created"
    assert "by design" in orch.ok("status", "1").stdout

    orch.ok("cancel", "1")
    assert [r["state"] for r in orch.deployment(1)["resources"] if r["kind"] == "process"] == ["deleted"]
    assert orch.servers("kept") == []

    plain = orch.run("deploy", str(broken_model), "--name", "plain")
    assert plain.returncode == 1 and "keep_failed" not in plain.stderr, orch.describe(plain)
    assert [r["state"] for r in orch.deployment(2)["resources"] if r["kind"] == "process"] == ["deleted"]
    assert orch.servers("plain") == []
