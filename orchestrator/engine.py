"""The runner: a reconcile loop that drives one deployment through its stages under a lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from . import leases, secrets
from .context import DeploymentView, StageContext
from .errors import LeaseLost, OrchestrateError, RetryableTargetError
from .faults import Faults
from .states import (
    REUSABLE_STAGES,
    STAGES,
    AttemptStatus,
    DeploymentStatus,
    ErrorKind,
    ResourceState,
    Stage,
    check_transition,
)
from .store import Fence, Store
from .tables import Deployment, Endpoint, Resource, StageAttempt, utcnow

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    initial_s: float
    max_s: float

    @classmethod
    def for_stage(cls, config: dict[str, Any], stage: Stage) -> RetryPolicy:
        return cls(
            max_attempts=int(config.get(f"max_attempts.{stage.value}") or config.get("max_attempts", 3)),
            initial_s=float(config.get("retry_initial_s", 1.0)),
            max_s=float(config.get("retry_max_s", 30.0)),
        )


def stage_outputs(session: Any, deployment_id: int) -> dict[str, dict[str, Any]]:
    """Outputs of the latest succeeded or skipped attempt of each stage."""
    rows = session.execute(
        select(StageAttempt.stage, StageAttempt.outputs)
        .where(
            StageAttempt.deployment_id == deployment_id,
            StageAttempt.status.in_([AttemptStatus.SUCCEEDED.value, AttemptStatus.SKIPPED.value]),
        )
        .order_by(StageAttempt.id)
    ).all()
    return {stage: dict(outputs) for stage, outputs in rows}


def merged_outputs(session: Any, deployment_id: int) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    by_stage = stage_outputs(session, deployment_id)
    for stage in STAGES:
        merged.update(by_stage.get(stage.value, {}))
    return merged


@dataclass
class _Run:
    """What a runner knows of its deployment while it holds the lease: nobody else writes it,
    so it is read once and kept current in memory instead of re-read at every stage."""

    view: DeploymentView
    attempts: dict[str, int]
    outputs: dict[str, dict[str, Any]]
    live_outputs: dict[str, Any] | None
    restart_stage: Stage | None

    def next_stage(self) -> Stage | None:
        pending = [s for s in STAGES if s.value not in self.outputs]
        if self.restart_stage is not None:
            pending = sorted(set(pending) | {self.restart_stage}, key=STAGES.index)
        return pending[0] if pending else None

    def merged_outputs(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for stage in STAGES:
            merged.update(self.outputs.get(stage.value, {}))
        return merged


class _CancelRequested(Exception):
    """Found at a stage boundary: the user asked to cancel."""


class Engine:
    """Runs deployments; one Engine per process, one lease per running deployment."""

    def __init__(self, store: Store, runner: leases.Runner, home: Path, *, echo: Echo | None = None,
                 lease_ttl_s: float = leases.DEFAULT_TTL_S, stop: threading.Event | None = None) -> None:
        self.store = store
        self.runner = runner
        self.home = home
        self.echo: Echo = echo or (lambda _line: None)
        self.lease_ttl_s = lease_ttl_s
        self.faults = Faults.from_env()
        # Set by a worker told to stop: finish the current stage, release, leave it resumable.
        self.stop = stop or threading.Event()

    # -- the loop -------------------------------------------------------------------------

    def run(self, deployment_id: int, fence: Fence) -> DeploymentStatus:
        """Drive the deployment to an end and release the lease; returns its final status,
        or RUNNING when `stop` was set and the deployment was left for another runner."""
        from targets.base import load_target

        state = self._load(deployment_id)
        target = load_target(state.view.target)
        heartbeat = leases.Heartbeat(self.store, fence)
        try:
            with heartbeat:
                return self._loop(state, fence, target, heartbeat)
        finally:
            if not heartbeat.lost:
                leases.release(self.store, fence)

    def _load(self, deployment_id: int) -> _Run:
        with self.store.read() as session:
            deployment = session.get_one(Deployment, deployment_id)
            endpoint = session.get_one(Endpoint, deployment.endpoint_id)
            attempts = dict(session.execute(
                select(StageAttempt.stage, func.count()).where(StageAttempt.deployment_id == deployment_id)
                .group_by(StageAttempt.stage)
            ).all())
            live_id = endpoint.live_deployment_id
            return _Run(
                view=DeploymentView.of(deployment, endpoint.name),
                attempts={stage: int(count) for stage, count in attempts.items()},
                outputs=stage_outputs(session, deployment_id),
                live_outputs=merged_outputs(session, live_id) if live_id and live_id != deployment_id else None,
                restart_stage=Stage(deployment.restart_stage) if deployment.restart_stage else None,
            )

    def _loop(self, state: _Run, fence: Fence, target: Any, heartbeat: leases.Heartbeat) -> DeploymentStatus:
        view = state.view
        while True:
            if heartbeat.lost:
                raise LeaseLost(f"deployment {view.id}: another runner took the endpoint's lease")
            next_stage = state.next_stage()
            if next_stage is None:
                self._finish(view, fence)
                return DeploymentStatus.SUCCEEDED
            if self.stop.is_set():
                return DeploymentStatus.RUNNING
            if next_stage in target.not_applicable:
                self._record_skipped(state, fence, next_stage, {}, f"{next_stage.value} does not apply to {view.target}")
                continue
            if view.source_deployment_id is not None and next_stage in REUSABLE_STAGES:
                with self.store.read() as session:
                    reused = stage_outputs(session, view.source_deployment_id).get(next_stage.value, {})
                self._record_skipped(state, fence, next_stage, reused,
                                     f"reused from deployment {view.source_deployment_id}")
                continue
            try:
                self._run_stage(state, fence, target, next_stage)
            except _CancelRequested:
                return self.abort(view, fence, target, DeploymentStatus.CANCELLED, "cancelled by request")
            except KeyboardInterrupt:
                self.abort(view, fence, target, DeploymentStatus.FAILED,
                           f"interrupted during {next_stage.value}", kind=ErrorKind.INTERRUPTED)
                raise
            except LeaseLost:
                raise
            except OrchestrateError as exc:
                return self._fail(view, fence, target, next_stage, exc)

    def _run_stage(self, state: _Run, fence: Fence, target: Any, stage: Stage) -> None:
        policy = RetryPolicy.for_stage(state.view.config, stage)
        retrying = Retrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=wait_exponential_jitter(initial=policy.initial_s, max=policy.max_s, jitter=policy.initial_s),
            retry=retry_if_exception_type(RetryableTargetError),
            reraise=True,
            sleep=time.sleep,
        )
        for attempt in retrying:
            with attempt:
                self._attempt(state, fence, target, stage)

    def _attempt(self, state: _Run, fence: Fence, target: Any, stage: Stage) -> None:
        view = state.view
        number = state.attempts.get(stage.value, 0) + 1
        with self.store.write(fence) as tx:
            cancel_requested = tx.session.execute(
                select(Deployment.cancel_requested).where(Deployment.id == view.id)
            ).scalar_one()
            # A cancel is honoured at a boundary up to shift_traffic; after it, finishing is safer.
            if cancel_requested and STAGES.index(stage) <= STAGES.index(Stage.SHIFT_TRAFFIC):
                raise _CancelRequested
            attempt_id = tx.session.execute(
                insert(StageAttempt).values(
                    deployment_id=view.id, stage=stage.value, attempt=number, status=AttemptStatus.RUNNING.value,
                    runner=self.runner.owner, started_at=utcnow(), outputs={},
                ).returning(StageAttempt.id)
            ).scalar_one()
            tx.session.execute(update(Deployment).where(Deployment.id == view.id).values(current_stage=stage.value))
            tx.event("stage_started", f"{stage.value} attempt {number} started",
                     endpoint_id=view.endpoint_id, deployment_id=view.id,
                     data={"stage": stage.value, "attempt": number})
        state.attempts[stage.value] = number
        ctx = StageContext(
            store=self.store, fence=fence, deployment=view, stage=stage, home=self.home,
            outputs=state.merged_outputs(), log_file=self.attempt_log(view.id, stage, number),
            live_outputs=state.live_outputs, echo=self.echo,
        )
        started = time.monotonic()
        try:
            self.faults.on_stage_start(stage)
            result = getattr(target, stage.value)(ctx) or {}
        except LeaseLost:
            raise  # no longer ours to record
        except BaseException as exc:
            self._end_attempt(state, fence, attempt_id, stage, number, AttemptStatus.FAILED, error=exc,
                              kind=error_kind(exc))
            raise
        result["duration_s"] = round(time.monotonic() - started, 3)
        self._end_attempt(state, fence, attempt_id, stage, number, AttemptStatus.SUCCEEDED, outputs=result)
        self.faults.on_stage_end(stage)

    def attempt_log(self, deployment_id: int, stage: Stage, attempt: int) -> Path:
        directory = self.home / "logs" / "deployments" / str(deployment_id)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{stage.value}-{attempt}.log"

    def _end_attempt(
        self,
        state: _Run,
        fence: Fence,
        attempt_id: int,
        stage: Stage,
        number: int,
        status: AttemptStatus,
        *,
        outputs: dict[str, Any] | None = None,
        error: BaseException | None = None,
        kind: ErrorKind | None = None,
    ) -> None:
        view = state.view
        values: dict[str, Any] = {"status": status.value, "finished_at": utcnow()}
        if outputs is not None:
            values["outputs"] = outputs
        message = None
        if error is not None:
            message = secrets.scrub(str(error) or type(error).__name__)
            values.update(error_kind=kind.value if kind else None, error_class=type(error).__name__,
                          error_message=message)
        with self.store.write(fence) as tx:
            tx.session.execute(update(StageAttempt).where(StageAttempt.id == attempt_id).values(**values))
            if status == AttemptStatus.SUCCEEDED:
                if state.restart_stage == stage:
                    tx.session.execute(update(Deployment).where(Deployment.id == view.id).values(restart_stage=None))
                if stage == Stage.SHIFT_TRAFFIC:
                    self._make_live(tx, tx.session.get_one(Deployment, view.id))
            tx.event(
                f"stage_{status.value}",
                f"{stage.value} attempt {number} {status.value}" + (f" ({kind.value}): {message}" if kind else ""),
                endpoint_id=view.endpoint_id, deployment_id=view.id,
                data={"stage": stage.value, "attempt": number, "duration_s": (outputs or {}).get("duration_s")},
            )
        if status == AttemptStatus.SUCCEEDED:
            state.outputs[stage.value] = outputs or {}
            if state.restart_stage == stage:
                state.restart_stage = None

    @staticmethod
    def _make_live(tx: Any, deployment: Deployment) -> None:
        endpoint = tx.session.get_one(Endpoint, deployment.endpoint_id)
        if endpoint.live_deployment_id != deployment.id:
            deployment.previous_live_id = endpoint.live_deployment_id
            endpoint.live_deployment_id = deployment.id
        tx.event("traffic_shifted", f"deployment {deployment.id} is live on {endpoint.name}",
                 endpoint_id=endpoint.id, deployment_id=deployment.id,
                 data={"previous_live_id": deployment.previous_live_id})

    def _record_skipped(self, state: _Run, fence: Fence, stage: Stage, outputs: dict[str, Any],
                        reason: str) -> None:
        view = state.view
        number = state.attempts.get(stage.value, 0) + 1
        recorded = {**outputs, "skipped": reason}
        with self.store.write(fence) as tx:
            now = utcnow()
            tx.session.add(StageAttempt(
                deployment_id=view.id, stage=stage.value, attempt=number, status=AttemptStatus.SKIPPED.value,
                runner=self.runner.owner, started_at=now, finished_at=now, outputs=recorded,
            ))
            tx.event("stage_skipped", f"{stage.value} skipped: {reason}", endpoint_id=view.endpoint_id,
                     deployment_id=view.id, data={"stage": stage.value})
        state.attempts[stage.value] = number
        state.outputs[stage.value] = recorded

    # -- endings --------------------------------------------------------------------------

    def _finish(self, view: DeploymentView, fence: Fence) -> None:
        with self.store.write(fence) as tx:
            deployment = tx.session.get_one(Deployment, view.id)
            check_transition(view.id, DeploymentStatus(deployment.status), DeploymentStatus.SUCCEEDED)
            deployment.status = DeploymentStatus.SUCCEEDED.value
            deployment.current_stage = None
            deployment.error = None
            deployment.finished_at = utcnow()
            tx.event("deployment_succeeded", f"deployment {view.id} succeeded",
                     endpoint_id=view.endpoint_id, deployment_id=view.id)

    def _fail(self, view: DeploymentView, fence: Fence, target: Any, stage: Stage,
              exc: OrchestrateError) -> DeploymentStatus:
        with self.store.read() as session:
            live_id = session.get_one(Endpoint, view.endpoint_id).live_deployment_id
        touched_serving = STAGES.index(stage) >= STAGES.index(Stage.CREATE_ENDPOINT)
        rolls_back = touched_serving and live_id is not None and live_id != view.id
        message = f"{stage.value} failed: {exc}"
        if not rolls_back:
            message += f" (fix the cause, then `orchestrate resume {view.id}`)"
        return self.abort(
            view, fence, target,
            DeploymentStatus.ROLLED_BACK if rolls_back else DeploymentStatus.FAILED,
            message,
            kind=ErrorKind.PERMANENT,
        )

    def abort(self, view: DeploymentView, fence: Fence, target: Any, final: DeploymentStatus, message: str,
              *, kind: ErrorKind | None = None) -> DeploymentStatus:
        """Stop what this deployment started serving, then record how it ended.

        The previous live deployment is never touched, so it keeps serving."""
        if final == DeploymentStatus.ROLLED_BACK:
            self._set_status(view, fence, DeploymentStatus.ROLLING_BACK, "rolling back: " + message)
        try:
            released_stages = self._release_own(view, fence, target)
        except OrchestrateError as exc:
            final = DeploymentStatus.FAILED
            message += f"; releasing its resources also failed: {exc} (retry with `orchestrate cancel {view.id}`)"
            released_stages = []
        with self.store.write(fence) as tx:
            deployment = tx.session.get_one(Deployment, view.id)
            if released_stages:
                earliest = min((Stage(s) for s in released_stages), key=STAGES.index)
                current = Stage(deployment.restart_stage) if deployment.restart_stage else None
                if current is None or STAGES.index(earliest) < STAGES.index(current):
                    deployment.restart_stage = earliest.value
        self._set_status(view, fence, final, message)
        return final

    def _release_own(self, view: DeploymentView, fence: Fence, target: Any) -> list[str]:
        with self.store.read() as session:
            rows = session.execute(
                select(Resource).where(
                    Resource.deployment_id == view.id,
                    Resource.kind.in_(target.disposable_kinds),
                    Resource.state != ResourceState.DELETED.value,
                ).order_by(Resource.id.desc())
            ).scalars().all()
        from .context import ResourceView

        ctx = StageContext(store=self.store, fence=fence, deployment=view, stage=Stage.CLEANUP, home=self.home,
                           outputs={}, log_file=self.home / "logs" / "deployments" / str(view.id) / "abort.log",
                           echo=self.echo)
        ctx.log_file.parent.mkdir(parents=True, exist_ok=True)
        for row in rows:
            target.release_recorded(ctx, ResourceView.of(row))
        return [row.stage for row in rows]

    def _set_status(self, view: DeploymentView, fence: Fence, status: DeploymentStatus, message: str) -> None:
        with self.store.write(fence) as tx:
            deployment = tx.session.get_one(Deployment, view.id)
            current = DeploymentStatus(deployment.status)
            if current != status:
                check_transition(view.id, current, status)
            deployment.status = status.value
            if status != DeploymentStatus.ROLLING_BACK:
                deployment.error = secrets.scrub(message)
                deployment.finished_at = utcnow()
            tx.event(f"deployment_{status.value}", f"deployment {view.id} {status.value}: {message}",
                     endpoint_id=view.endpoint_id, deployment_id=view.id)


def error_kind(error: BaseException) -> ErrorKind:
    if isinstance(error, RetryableTargetError):
        return ErrorKind.TRANSIENT
    if isinstance(error, KeyboardInterrupt):
        return ErrorKind.INTERRUPTED
    if isinstance(error, OrchestrateError):
        return ErrorKind.PERMANENT
    return ErrorKind.CRASHED  # a bug, not a verdict of the target: its traceback shows
