"""``python -m scoring serve`` as a real gunicorn process on a free 127.0.0.1 port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.scoring.conftest import IRIS_COLUMNS, REPO_ROOT, free_port

pytestmark = pytest.mark.slow

IRIS_PAYLOAD = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scoring", *args],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
    )


def test_serve_end_to_end(serve: Any, iris_model: Path, tmp_path: Path) -> None:
    private = free_port()
    pid_file = tmp_path / "server.pid"
    server = serve(
        iris_model, "--private-port", str(private), "--workers", "2", "--pid-file", str(pid_file)
    )
    response = requests.post(server.url + "/invocations", json=IRIS_PAYLOAD, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"predictions": [0]}
    assert response.headers["X-Request-ID"]
    echoed = requests.get(server.url + "/ping", headers={"X-Request-ID": "abc-123"}, timeout=5)
    assert echoed.headers["X-Request-ID"] == "abc-123"
    assert requests.get(f"http://127.0.0.1:{private}/ping", timeout=5).status_code == 200
    assert int(pid_file.read_text().strip()) == server.proc.pid
    assert server.stop() == 0
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert {"request_id": "abc-123", "path": "/ping", "status": 200}.items() <= lines[
        -1
    ].items() or any(line["request_id"] == "abc-123" and line["status"] == 200 for line in lines)
    assert any(line["path"] == "/invocations" and line["method"] == "POST" for line in lines)


def test_metrics_count_across_workers(serve: Any, iris_model: Path) -> None:
    server = serve(iris_model, "--workers", "2")
    session = requests.Session()
    for _ in range(10):
        assert session.post(server.url + "/invocations", json=IRIS_PAYLOAD, timeout=10).ok
    # New connections spread over both workers; every worker's count must show.
    for _ in range(10):
        assert requests.post(server.url + "/invocations", json=IRIS_PAYLOAD, timeout=10).ok
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert 'scoring_requests_total{route="/invocations",status="200"} 20' in text


def test_env_settings_and_no_access_log(serve: Any, iris_model: Path) -> None:
    port = free_port()
    server = serve(
        iris_model, env={"ORCHESTRATE_ACCESS_LOG": "false", "PORT": str(port)}, port=port
    )
    assert requests.post(server.url + "/invocations", json=IRIS_PAYLOAD, timeout=10).ok
    server.stop()
    assert not [line for line in server.output().splitlines() if line.startswith("{")]


def test_model_dir_from_environment(serve: Any, iris_model: Path) -> None:
    server = serve(None, env={"ORCHESTRATE_MODEL_DIR": str(iris_model)})
    assert requests.post(server.url + "/invocations", json=IRIS_PAYLOAD, timeout=10).ok


def test_sigterm_lets_in_flight_requests_finish(serve: Any, custom_model: Path) -> None:
    server = serve(custom_model, "--workers", "1", "--threads", "2")
    payload = {
        "dataframe_records": [{"x": 1.0, "n": 1, "label": "a", "flag": True}],
        "params": {"sleep": 2.0},
    }
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["response"] = requests.post(
                server.url + "/invocations", json=payload, timeout=30
            )
        except requests.RequestException as exc:  # pragma: no cover - reported below
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.8)  # the request is inside the model now
    server.proc.send_signal(signal.SIGTERM)
    thread.join(30)
    assert "error" not in result, result.get("error")
    assert result["response"].status_code == 200
    assert result["response"].json()["predictions"][0]["y"] == 2.0
    assert server.proc.wait(30) == 0


def test_unloadable_model_exits_with_the_reason(missing_requirements_model: Path) -> None:
    done = run_cli("serve", str(missing_requirements_model), "--port", str(free_port()))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "scoring_test_missing_pkg" in last
    assert "--pip-requirements-override scoring-test-missing-pkg" in last
    assert "Listening" not in done.stderr


def test_missing_model_dir_exits_1(tmp_path: Path) -> None:
    done = run_cli("serve", str(tmp_path / "nope"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"scoring: error: model directory {tmp_path / 'nope'} does not exist"
    )


def test_bad_setting_exits_2(iris_model: Path) -> None:
    done = run_cli("serve", str(iris_model), env={"ORCHESTRATE_WORKERS": "many"})
    assert done.returncode == 2
    assert "invalid value for workers: 'many'" in done.stderr


def test_reuse_port_lets_two_servers_share_a_port(serve: Any, iris_model: Path) -> None:
    port = free_port()
    old = serve(iris_model, "--reuse-port", "--workers", "1", port=port)
    private = free_port()
    new = serve(
        iris_model,
        "--reuse-port",
        "--workers",
        "1",
        "--private-port",
        str(private),
        port=port,
        wait=False,
    )
    new.wait_ready(port=private)  # the shared port may answer from the old server
    assert old.stop() == 0
    for _ in range(5):
        assert requests.post(new.url + "/invocations", json=IRIS_PAYLOAD, timeout=10).ok
