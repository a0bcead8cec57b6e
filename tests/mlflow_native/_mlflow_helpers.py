"""Helpers of the MLflow-native tests: the CLI as a subprocess, the registry made for them,
moto's S3, and a tracking server of a test's own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _executables import orchestrate_executable


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    name: str  # the registered model
    run_id: str
    v1_model_id: str
    v2_model_id: str
    artifact_uri: str  # the run's artifact root (mlflow-artifacts:/…)


def log_model_dir(client: Any, experiment_id: str, run_id: str, name: str, directory: Path) -> str:
    """An MLflow 3 logged model holding `directory`, made through the client; its id."""
    from mlflow.entities import LoggedModelStatus

    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id)
    client.log_model_artifacts(logged.model_id, str(directory))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return str(logged.model_id)


@dataclass(frozen=True)
class S3:
    url: str  # the endpoint
    uri: str  # where the v1 model lies

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Cli:
    """`orchestrate` as a real subprocess against one home."""

    home: Path
    endpoints: set[str] = field(default_factory=set)

    def run(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 300,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        if args and args[0] == "deploy":
            for flag in ("--name", "-n"):
                if flag in args:
                    self.endpoints.add(args[args.index(flag) + 1])
        return subprocess.run([orchestrate_executable(), *args], env={**os.environ, "ORCHESTRATE_HOME": str(self.home),
                                                                      **(env or {})},
                              input=input_text, stdin=None if input_text is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, **kwargs)
        assert result.returncode == 0, describe(result)
        return result

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kwargs).stdout)

    def store_counts(self) -> dict[str, int]:
        """Rows in the state store (deployments, endpoints, events): what "nothing recorded" means."""
        from sqlalchemy import create_engine, func, inspect, select

        from orchestrator.store.tables import Deployment, Endpoint, Event

        path = self.home / "state.db"
        if not path.exists():
            return {"deployments": 0, "endpoints": 0, "events": 0}
        engine = create_engine(f"sqlite:///{path}")
        try:
            with engine.connect() as connection:
                if not inspect(connection).has_table("deployments"):
                    return {"deployments": 0, "endpoints": 0, "events": 0}
                return {table.__tablename__: connection.execute(select(func.count()).select_from(table)).scalar_one()
                        for table in (Deployment, Endpoint, Event)}
        finally:
            engine.dispose()

    def snapshots(self) -> list[str]:
        """Everything in the snapshot store, staging directories included (not the index of
        versions already downloaded)."""
        models = self.home / "models"
        return sorted(p.name for p in models.iterdir() if p.name != ".index") if models.is_dir() else []

    def teardown(self) -> None:
        for name in sorted(self.endpoints):
            self.run("delete", name, "--yes", timeout=120)


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateServer:
    """`mlflow server` on a free port with its own store; start() and stop() at will.
    `args` and `env` are added to its command line and environment (e.g. `--app-name basic-auth`)."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> PrivateServer:
        (self.directory / "artifacts").mkdir(parents=True, exist_ok=True)
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
             "--artifacts-destination", str(self.directory / "artifacts"), "--serve-artifacts", *self.args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **self.env})
        log.close()
        deadline = time.monotonic() + timeout
        while not answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"private mlflow server did not start:\n{(self.directory / 'server.log').read_text()[-3000:]}")
            time.sleep(0.25)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # all of it: uvicorn and its workers
        if self.process is not None:
            self.process.wait()
        self.process = None


def artifact_route(tracking_uri: str, artifact_uri: str) -> str:
    """The http(s) form of a `mlflow-artifacts:/PATH` URI: the server's artifact route."""
    assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri
    return f"{tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{artifact_uri[len('mlflow-artifacts:/'):].lstrip('/')}"


@dataclass(frozen=True)
class AuthServer:
    """A tracking server with MLflow's basic authentication (`--app-name basic-auth`), holding one
    registered model version the admin made. Users: `reader` (READ on the model and its
    experiment), `editor` (EDIT on both), `outsider` (no permission); the default is none."""

    url: str
    passwords: Mapping[str, str]  # user -> password; "admin" included
    model: str  # the registered model, version 1
    run_id: str
    artifact_uri: str  # the run's plain copy of the model (mlflow-artifacts:/…/plain)

    def as_user(self, user: str, password: str | None = None) -> dict[str, str]:
        """The environment of a client of this server signed in as `user`."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": self.passwords[user] if password is None else password}


def secret_in(directory: Path, secret: str) -> list[str]:
    """The files under `directory` whose bytes hold `secret` (the state store, logs, snapshots)."""
    needle = secret.encode()
    return sorted(str(path) for path in directory.rglob("*") if path.is_file() and needle in path.read_bytes())


class CuttingProxy:
    """A TCP proxy in front of a server that cuts the first `cuts` connections whose answer
    passes `cut_after` bytes, in the middle of the transfer (a dropped link, a restarted proxy)."""

    def __init__(self, upstream_port: int, *, cut_after: int = 1 << 20, cuts: int = 1) -> None:
        import threading

        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cut = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="cutting-proxy").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answer: bool) -> None:
        passed = 0
        try:
            while chunk := source.recv(65536):
                passed += len(chunk)
                if answer and passed > self.cut_after:
                    with self._lock:
                        cutting = self.cuts_left > 0
                        self.cuts_left -= cutting
                        self.cut += cutting
                    if cutting:
                        sink.sendall(chunk[: len(chunk) // 2])
                        break
                sink.sendall(chunk)
        except OSError:
            pass
        for side in (source, sink):
            try:
                side.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            side.close()
