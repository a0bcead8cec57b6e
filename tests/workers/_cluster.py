"""Helpers for worker drills: workers and CLI commands as subprocesses, queries on the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _executables import orchestrate_executable
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def lines(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines so far (a half-written last line is left out)."""
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if predicate(line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"worker {self.name} never logged what was expected (exit {self.proc.poll()}):\n"
                    + self.log_path.read_text()[-4000:])

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"worker {self.name} did not stop within {timeout}s of SIGTERM")


@dataclass
class Cluster:
    """Workers and CLI commands as real subprocesses sharing one home and one state store."""

    home: Path
    db_url: str = ""
    workers: list[WorkerProcess] = field(default_factory=list)
    _engine: Engine | None = None

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "ORCHESTRATE_HOME": str(self.home), "ORCHESTRATE_DB_URL": self.db_url}
        env.update(extra or {})
        return env

    def run(self, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([orchestrate_executable(), *args], env=self.env(env), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def ok(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, env=env, timeout=timeout)
        assert result.returncode == 0, describe(result)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def spawn(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([orchestrate_executable(), *args], env=self.env(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def worker(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> WorkerProcess:
        log_path = self.home / f"worker-{name}.jsonl"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [orchestrate_executable(), "worker", "--name", name, "--poll-interval", "0.05", *args],
                env=self.env(env), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        started = WorkerProcess(name, proc, log_path)
        self.workers.append(started)
        return started

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.db_url, pool_pre_ping=True)
        return self._engine

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.begin() as connection:
            result = connection.execute(text(sql), params)
            return list(result.all()) if result.returns_rows else []

    def wait_for(self, sql: str, predicate: Callable[[list[Any]], bool], timeout: float = 60,
                 **params: Any) -> list[Any]:
        """Poll a query until predicate(rows) holds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                rows = self.query(sql, **params)
            except DBAPIError:  # the schema is not there yet, or the server is restarting
                rows = []
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {w.name}\n{w.log_path.read_text()[-3000:]}" for w in self.workers)
                pytest.fail(f"timed out waiting on {sql!r}: last rows {rows}\n{logs}")
            time.sleep(0.05)

    def close(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        if self._engine is not None:
            self._engine.dispose()


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}"


def attempt_rows(cluster: Cluster, deployment_id: int) -> list[Any]:
    return cluster.query(
        "SELECT stage, attempt, status, runner, started_at, finished_at, error_kind FROM stage_attempts "
        "WHERE deployment_id = :id ORDER BY id", id=deployment_id)
