"""`orchestrate worker`: run queued deployments, take over those whose runner died.

Workers share nothing but the database. Each thread claims one deployment at a time (queued
ones in order per endpoint, or a running one whose lease is free, expired or held by a dead
process), runs it through the same runner as `orchestrate deploy`, and logs JSON lines."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..errors import LeaseLost, OrchestrateError
from ..states import LIFECYCLE_EVENTS, STAGE_EVENTS, DeploymentStatus, EventKind
from ..store import Fence, Store, claims, leases, orchestrate_home
from ..store.tables import Deployment, Endpoint, utcnow
from . import DeploymentRunner
from .faults import Faults

DATABASE_RETRY_MAX_S = 10.0


class Worker:
    def __init__(
        self,
        db_url: str | None = None,
        *,
        concurrency: int = 1,
        targets: Iterable[str] | None = None,
        poll_interval_s: float = 1.0,
        once: bool = False,
        lease_ttl_s: float = leases.DEFAULT_TTL_S,
        name: str | None = None,
        log_stream: TextIO | None = None,
    ) -> None:
        self.name = name or f"worker@{socket.gethostname()}"
        self.concurrency = concurrency
        self.targets = frozenset(targets) if targets else None
        self.poll_interval_s = poll_interval_s
        self.once = once
        self.lease_ttl_s = lease_ttl_s
        self.stop_event = threading.Event()
        self.store = Store(db_url, actor=self.name, pool_size=2 * concurrency + 2)
        self.home: Path = orchestrate_home()
        self._log_stream = log_stream or sys.stderr
        self._log_lock = threading.Lock()
        self.store.listeners.append(self._on_event)

    def log(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": utcnow().isoformat(), "worker": self.name, "event": event, **fields}, default=str)
        with self._log_lock:
            self._log_stream.write(line + "\n")
            self._log_stream.flush()

    def install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: object) -> None:
            self.log(
                "stopping", signal=signal.Signals(signum).name, note="finishing current stages, then releasing leases"
            )
            self.stop_event.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def run(self) -> int:
        """Run until stopped (or, with `once`, until nothing is left to claim); returns an exit code."""
        self.log(
            "started", concurrency=self.concurrency, targets=sorted(self.targets or []), store=self.store.display_url
        )
        threads = [
            threading.Thread(target=self._thread_main, args=(index,), name=f"worker-{index}", daemon=True)
            for index in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.2)
        self.store.dispose()
        self.log("stopped")
        return 0

    def _thread_main(self, index: int) -> None:
        base = leases.LeaseOwner.current(self.name)
        runner = leases.LeaseOwner(owner=f"{base.owner}/t{index}", host=base.host, pid=base.pid)
        deployment_runner = DeploymentRunner(
            self.store,
            runner,
            self.home,
            lease_ttl_s=self.lease_ttl_s,
            stop=self.stop_event,
            echo=lambda line: self.log("stage_log", runner=runner.owner, message=line),
            faults=Faults.from_env(),
        )
        idle_rounds = 0
        while not self.stop_event.is_set():
            try:
                claim = claims.claim(self.store, runner, self.lease_ttl_s, targets=self.targets)
            except SQLAlchemyError as exc:
                self._wait_for_database(exc)
                continue
            if claim is None:
                idle_rounds += 1
                if self.once and idle_rounds >= 2:
                    return
                self.stop_event.wait(self.poll_interval_s)
                continue
            idle_rounds = 0
            self.log("claimed", runner=runner.owner, deployment_id=claim.deployment_id, taken_over=claim.taken_over)
            self._run_claim(deployment_runner, runner, claim)

    def _run_claim(self, deployment_runner: DeploymentRunner, runner: leases.LeaseOwner, claim: claims.Claim) -> None:
        fence = claim.fence
        while True:
            try:
                status = deployment_runner.run(claim.deployment_id, fence)
            except LeaseLost as exc:
                self.log("lease_lost", deployment_id=claim.deployment_id, error=str(exc))
                return
            except DBAPIError as exc:
                self._wait_for_database(exc)
                resumed = self._retake(runner, claim.deployment_id, fence)
                if resumed is None:
                    self.log(
                        "lease_lost",
                        deployment_id=claim.deployment_id,
                        error="another runner took over while the database was away",
                    )
                    return
                fence = resumed
                continue
            except OrchestrateError as exc:
                self.log("deployment_error", deployment_id=claim.deployment_id, error=str(exc))
                return
            except Exception as exc:  # noqa: BLE001 -- a bug: keep the worker alive, record it, show the traceback
                self.log(
                    "internal_error",
                    deployment_id=claim.deployment_id,
                    error=repr(exc),
                    traceback=traceback.format_exc(),
                )
                self._mark_failed(claim.deployment_id, f"internal error in {runner.owner}: {exc!r}")
                return
            self.log(
                "finished" if status != DeploymentStatus.RUNNING else "released",
                deployment_id=claim.deployment_id,
                status=status.value,
            )
            return

    def _retake(self, runner: leases.LeaseOwner, deployment_id: int, fence: Fence) -> Fence | None:
        """After a database outage: take our own lease back if nobody took over meanwhile."""
        with self.store.write() as tx:
            endpoint = leases.lock_endpoint(tx.session, fence.endpoint_id)
            if endpoint.fencing_token != fence.token:
                return None
            new_fence = leases.take(tx.session, endpoint, deployment_id, runner, self.lease_ttl_s)
            claims.abandon_running_attempts(tx.session, deployment_id)
            tx.event(
                EventKind.DEPLOYMENT_RESUMED,
                f"deployment {deployment_id} resumed by {runner.owner} after a database outage",
                endpoint_id=endpoint.id,
                deployment_id=deployment_id,
            )
            return new_fence

    def _wait_for_database(self, error: Exception) -> None:
        self.log("database_unavailable", error=str(error).splitlines()[0])
        delay = 0.2
        while not self.stop_event.is_set():
            try:
                with self.store.engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                self.log("database_back")
                return
            except SQLAlchemyError:
                self.stop_event.wait(delay)
                delay = min(delay * 2, DATABASE_RETRY_MAX_S)

    def _mark_failed(self, deployment_id: int, message: str) -> None:
        with self.store.write() as tx:
            deployment = tx.session.get_one(Deployment, deployment_id)
            if deployment.status == DeploymentStatus.RUNNING.value:
                deployment.status = DeploymentStatus.FAILED.value
                deployment.error = message
                deployment.finished_at = utcnow()
                endpoint = tx.session.get_one(Endpoint, deployment.endpoint_id)
                tx.event(EventKind.DEPLOYMENT_FAILED, message, endpoint_id=endpoint.id, deployment_id=deployment_id)

    def _on_event(self, event: Any) -> None:
        if event.kind in STAGE_EVENTS or event.kind in LIFECYCLE_EVENTS:
            self.log(event.kind, deployment_id=event.deployment_id, message=event.message)
