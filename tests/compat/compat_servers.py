"""Servers and requests for the flavor compatibility suite: start a server on a free port and
wait for ``/ping``, send a model's ``compat_requests.json``, compare answers."""


from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

# Building a model's environment the first time (uv, from the registry) is in here.
READY_TIMEOUT = 900.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # parsed JSON, or the text when it is not JSON


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_requests(model: Path) -> list[dict[str, str]]:
    requests_: list[dict[str, str]] = json.loads((model / "compat_requests.json").read_text())
    return requests_


def send(url: str, request: dict[str, str]) -> Answer:
    response = requests.post(
        url + "/invocations",
        data=request["body"].encode(),
        headers={"Content-Type": request["content_type"]},
        timeout=60,
    )
    try:
        return Answer(response.status_code, response.json())
    except ValueError:
        return Answer(response.status_code, response.text)


def send_all(url: str, model: Path) -> dict[str, Answer]:
    return {request["name"]: send(url, request) for request in load_requests(model)}


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float
    ready_after: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited {self.process.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/ping", timeout=2).status_code == 200:
                    self.ready_after = time.monotonic() - self.started
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        pytest.fail(f"{self.name} did not answer /ping in {timeout:.0f} s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_server(name: str, command: Sequence[str], port: int, log: Path,
                 env: dict[str, str] | None = None) -> Server:
    """Start ``command`` in its own process group (stopped with the group), output to ``log``."""
    with open(log, "wb") as out:
        process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env=env or dict(os.environ))
    server = Server(name, process, port, log, time.monotonic())
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def mlflow_serve_command(model: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model),
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]


def predictions(answer: Answer) -> Any:
    assert isinstance(answer.body, dict) and "predictions" in answer.body, answer
    return answer.body["predictions"]


def same(ours: Any, theirs: Any, where: str = "predictions") -> None:
    """Assert two decoded JSON values are equal; floats to float32 precision (MLflow prints a
    float32 widened to a double, 0.10000000149011612, where orjson prints 0.1)."""
    if isinstance(theirs, float) or isinstance(ours, float):
        assert isinstance(ours, (int, float)) and isinstance(theirs, (int, float)), (where, ours, theirs)
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-6), (where, ours, theirs)
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(theirs), (where, ours, theirs)
        for key in theirs:
            same(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (where, ours, theirs)
        for index, (a, b) in enumerate(zip(ours, theirs)):
            same(a, b, f"{where}[{index}]")
    else:
        assert ours == theirs, (where, ours, theirs)
