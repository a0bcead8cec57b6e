"""End-to-end helpers: the real `orchestrate` CLI as a subprocess, and the servers it leaves.

- ``orch``: an :class:`Orchestrate` bound to this test's ``ORCHESTRATE_HOME`` (SQLite there
  unless a test sets ``orch.db_url``). After the test it deletes the endpoints the test
  deployed and, as a last resort, stops any scoring server still running from this home,
  so one failing test does not leave servers for the next.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from _executables import orchestrate_executable


@dataclass
class Orchestrate:
    """Runs `orchestrate` as a real subprocess against one home and one state store."""

    home: Path
    db_url: str | None = None
    endpoints: set[str] = field(default_factory=set)
    spawned: list[subprocess.Popen[str]] = field(default_factory=list)
    _reader: Any = None

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "ORCHESTRATE_HOME": str(self.home)}
        if self.db_url:
            env["ORCHESTRATE_DB_URL"] = self.db_url
        env.update(extra or {})
        return env

    def command(self, *args: str) -> list[str]:
        return [orchestrate_executable(), *args]

    def run(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        if args and args[0] in ("deploy",) and "--name" in args:
            self.endpoints.add(args[args.index("--name") + 1])
        return subprocess.run(self.command(*args), env=self.env(env), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def ok(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, env=env, timeout=timeout)
        assert result.returncode == 0, self.describe(result)
        return result

    def spawn(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        if args and args[0] == "deploy" and "--name" in args:
            self.endpoints.add(args[args.index("--name") + 1])
        process = subprocess.Popen(self.command(*args), env=self.env(env), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.spawned.append(process)
        return process

    @staticmethod
    def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[str, str]:
        """Wait for a spawned command (killing it after timeout); its stdout and stderr."""
        try:
            return process.communicate(timeout=timeout)
        finally:
            Orchestrate.stop(process)

    @staticmethod
    def stop(process: subprocess.Popen[str]) -> None:
        """Kill a spawned command if it still runs, reap it and close its pipes."""
        if process.poll() is None:
            process.kill()
        process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def deployment(self, deployment_id: int) -> dict[str, Any]:
        record: dict[str, Any] = self.json("status", str(deployment_id))
        return record

    def peek(self, deployment_id: int) -> dict[str, Any] | None:
        """The deployment's record read in-process (fast enough to catch a 1 s stage), or None."""
        from orchestrator.api import Client
        from orchestrator.errors import NotFound

        if self._reader is None:
            self._reader = Client(db_url=self.db_url, actor="test")
        try:
            record: dict[str, Any] = self._reader.deployment_record(deployment_id).to_dict()
        except NotFound:
            return None
        return record

    def wait_for(self, deployment_id: int, predicate: Any, timeout: float = 60, what: str = "") -> dict[str, Any]:
        """Poll the deployment's record until predicate(record) holds."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.peek(deployment_id)
            if record is not None and predicate(record):
                return record
            if time.monotonic() > deadline:
                pytest.fail(f"deployment {deployment_id} never reached {what or predicate}: {record}")
            time.sleep(0.05)

    @staticmethod
    def describe(result: subprocess.CompletedProcess[str]) -> str:
        """Exit code, stdout and stderr of a finished command, for assertion messages."""
        return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}"

    def servers(self, endpoint: str | None = None) -> list[psutil.Process]:
        """Running scoring-server masters started from this home (for one endpoint, or all)."""
        return server_masters(self.home, endpoint)

    def teardown(self) -> None:
        for process in self.spawned:
            self.stop(process)
        if self._reader is not None:
            self._reader.close()
        for name in sorted(self.endpoints):
            self.run("delete", name, "--yes", timeout=120)
        leftovers = self.servers()
        for proc in leftovers:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        psutil.wait_procs(leftovers, timeout=5)


def _pid_file_of(cmdline: list[str]) -> str | None:
    if "--pid-file" in cmdline:
        index = cmdline.index("--pid-file")
        if index + 1 < len(cmdline):
            return cmdline[index + 1]
    return None


def server_masters(home: Path, endpoint: str | None = None) -> list[psutil.Process]:
    """Scoring-server processes whose pid file lies under home/run, without their workers."""
    run_dir = str(home / "run") + os.sep
    prefix = run_dir + (f"{endpoint}-" if endpoint else "")
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline", "ppid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            pid_file = _pid_file_of(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if pid_file and pid_file.startswith(prefix):
            found[proc.pid] = proc
    return [proc for proc in found.values() if proc.info["ppid"] not in found]


@pytest.fixture
def orch(orchestrate_home: Path) -> Iterator[Orchestrate]:
    helper = Orchestrate(home=orchestrate_home)
    try:
        yield helper
    finally:
        helper.teardown()
