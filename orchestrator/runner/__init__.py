"""The runner: a reconcile loop that drives one deployment through its stages under a lease."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from .. import secret_values
from ..errors import LeaseLost, OrchestrateError, RetryableTargetError
from ..registry_feedback import update_registry_tags
from ..states import (
    REUSABLE_STAGES,
    STAGES,
    TRANSITIONS,
    AttemptStatus,
    DeploymentStatus,
    ErrorKind,
    EventKind,
    ResourceState,
    Stage,
    check_transition,
)
from ..store import Fence, Store, Tx, leases
from ..store.tables import Deployment, Endpoint, Resource, StageAttempt, utcnow
from ..target_contract import (
    DeploymentView,
    ResourceView,
    StageContext,
    Target,
    load_target,
    merged_outputs,
    stage_outputs,
)
from .faults import Faults

Echo = Callable[[str], None]

_DONE = frozenset({AttemptStatus.SUCCEEDED.value, AttemptStatus.SKIPPED.value})

# The runner's statements, built once (building one costs more CPU than running it cached)
# and run on the transaction's connection, past the ORM: nobody else writes the deployment
# while the runner holds the lease, so there is no identity map to keep in step.
_LOAD_DEPLOYMENT = (
    select(
        Deployment.id,
        Deployment.endpoint_id,
        Endpoint.name.label("endpoint_name"),
        Deployment.target,
        Deployment.model_uri,
        Deployment.model_digest,
        Deployment.config,
        Deployment.source_deployment_id,
        Deployment.previous_live_id,
        Deployment.restart_stage,
        Endpoint.live_deployment_id,
    )
    .join(Endpoint, Endpoint.id == Deployment.endpoint_id)
    .where(Deployment.id == bindparam("deployment"))
)
_LOAD_ATTEMPTS = (
    select(StageAttempt.stage, StageAttempt.status, StageAttempt.outputs)
    .where(StageAttempt.deployment_id == bindparam("deployment"))
    .order_by(StageAttempt.id)
)
_ENTER_STAGE = (
    update(Deployment).where(Deployment.id == bindparam("deployment")).values(current_stage=bindparam("stage"))
)
# Matches no row when a cancel was requested: the cancel flag is read by the write itself.
_ENTER_STAGE_UNLESS_CANCELLED = _ENTER_STAGE.where(Deployment.cancel_requested.is_(False))
_INSERT_ATTEMPT = insert(StageAttempt).returning(StageAttempt.id)
_END_ATTEMPT = (
    update(StageAttempt)
    .where(StageAttempt.id == bindparam("attempt_id"))
    .values(
        status=bindparam("new_status"),
        finished_at=bindparam("at"),
        outputs=bindparam("new_outputs"),
        error_kind=bindparam("kind"),
        error_class=bindparam("error"),
        error_message=bindparam("message"),
    )
)
_CLEAR_RESTART_STAGE = update(Deployment).where(Deployment.id == bindparam("deployment")).values(restart_stage=None)
_LIVE_NOW = (
    select(Endpoint.live_deployment_id, Endpoint.name, Deployment.previous_live_id)
    .join(Deployment, Deployment.endpoint_id == Endpoint.id)
    .where(Endpoint.id == bindparam("endpoint"), Deployment.id == bindparam("deployment"))
)
_SET_PREVIOUS_LIVE = (
    update(Deployment).where(Deployment.id == bindparam("deployment")).values(previous_live_id=bindparam("previous"))
)
_SET_LIVE = update(Endpoint).where(Endpoint.id == bindparam("endpoint")).values(live_deployment_id=bindparam("live"))
_SUCCEED = (
    update(Deployment)
    .where(
        Deployment.id == bindparam("deployment"),
        Deployment.status.in_([s.value for s, moves in TRANSITIONS.items() if DeploymentStatus.SUCCEEDED in moves]),
    )
    .values(status=DeploymentStatus.SUCCEEDED.value, current_stage=None, error=None, finished_at=bindparam("at"))
)
_STATUS = select(Deployment.status).where(Deployment.id == bindparam("deployment"))


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


@dataclass
class _Run:
    """What a runner knows of its deployment while it holds the lease: nobody else writes it,
    so it is read once and kept current in memory instead of re-read at every stage."""

    view: DeploymentView
    attempts: dict[str, int]
    outputs: dict[str, dict[str, Any]]
    live_outputs: dict[str, Any] | None
    restart_stage: Stage | None
    # Records that need not be durable before the next transaction (a finished attempt, a
    # skipped stage): nothing external happens between them and it, so they go into it. The
    # runner writes before every call into the target, so none is ever left behind one.
    pending: list[Callable[[Tx], None]] = field(default_factory=list)
    # Set once a transaction freed the lease along with the deployment's last record.
    released: bool = False

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


class DeploymentRunner:
    """Runs deployments; one per process (or worker thread), one lease per running deployment."""

    def __init__(
        self,
        store: Store,
        owner: leases.LeaseOwner,
        home: Path,
        *,
        echo: Echo | None = None,
        lease_ttl_s: float = leases.DEFAULT_TTL_S,
        stop: threading.Event | None = None,
        targets: Callable[[str], Target] = load_target,
        faults: Faults | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.owner = owner
        self.home = home
        self.echo: Echo = echo or (lambda _line: None)
        self.lease_ttl_s = lease_ttl_s
        # Given, not found: tests hand in a recording target, a fake clock and their own faults.
        self.targets = targets
        self.faults = faults or Faults("")
        self.sleep = sleep
        self.monotonic = monotonic
        # Set by a worker told to stop: finish the current stage, release, leave it resumable.
        self.stop = stop or threading.Event()

    # -- the loop -------------------------------------------------------------------------

    def run(self, deployment_id: int, fence: Fence) -> DeploymentStatus:
        """Drive the deployment to an end and release the lease; returns its final status,
        or RUNNING when `stop` was set and the deployment was left for another runner."""
        state = self._load(deployment_id)
        target = self.targets(state.view.target)
        self._forget_vanished_outputs(state, target)
        heartbeat = leases.Heartbeat(self.store, fence)
        try:
            with heartbeat:
                status = self._loop(state, fence, target, heartbeat)
        finally:
            if not heartbeat.lost and not state.released:
                leases.release(self.store, fence)
        if status == DeploymentStatus.SUCCEEDED and state.view.config.get("registry_tags"):
            update_registry_tags(self.store, deployment_id, self.echo)
        return status

    def _load(self, deployment_id: int) -> _Run:
        with self.store.read() as session:
            connection = session.connection()
            row = connection.execute(_LOAD_DEPLOYMENT, {"deployment": deployment_id}).one()
            attempts: dict[str, int] = {}
            outputs: dict[str, dict[str, Any]] = {}
            for stage, status, stage_outputs_ in connection.execute(_LOAD_ATTEMPTS, {"deployment": deployment_id}):
                attempts[stage] = attempts.get(stage, 0) + 1
                if status in _DONE:
                    outputs[stage] = dict(stage_outputs_)
            live_id = row.live_deployment_id
            return _Run(
                view=DeploymentView(
                    id=row.id,
                    endpoint_id=row.endpoint_id,
                    endpoint_name=row.endpoint_name,
                    target=row.target,
                    model_uri=row.model_uri,
                    model_digest=row.model_digest,
                    config=dict(row.config),
                    source_deployment_id=row.source_deployment_id,
                    previous_live_id=row.previous_live_id,
                ),
                attempts=attempts,
                outputs=outputs,
                live_outputs=merged_outputs(session, live_id) if live_id and live_id != deployment_id else None,
                restart_stage=Stage(row.restart_stage) if row.restart_stage else None,
            )

    def _loop(self, state: _Run, fence: Fence, target: Target, heartbeat: leases.Heartbeat) -> DeploymentStatus:
        view = state.view
        while True:
            if heartbeat.lost:
                raise LeaseLost(f"deployment {view.id}: another runner took the endpoint's lease")
            next_stage = state.next_stage()
            if next_stage is None:
                self._finish(state, fence)
                return DeploymentStatus.SUCCEEDED
            if self.stop.is_set():
                self._flush(state, fence, end_lease=True)
                return DeploymentStatus.RUNNING
            if next_stage in target.not_applicable:
                self._record_skipped(state, next_stage, {}, f"{next_stage.value} does not apply to {view.target}")
                continue
            if view.source_deployment_id is not None and next_stage in REUSABLE_STAGES:
                with self.store.read() as session:
                    reused = stage_outputs(session, view.source_deployment_id).get(next_stage.value, {})
                if target.outputs_usable(next_stage, reused):
                    self._record_skipped(
                        state, next_stage, reused, f"reused from deployment {view.source_deployment_id}"
                    )
                    continue
                self.echo(
                    f"deployment {view.id}: {next_stage.value} of deployment {view.source_deployment_id} "
                    "names files that are gone from this machine; running it again"
                )
            try:
                self._run_stage(state, fence, target, next_stage)
            except _CancelRequested:
                return self.abort(view, fence, target, DeploymentStatus.CANCELLED, "cancelled by request")
            except KeyboardInterrupt:
                if state.pending:  # interrupted while starting the attempt: the stage before it still succeeded
                    self._flush(state, fence)
                self.abort(
                    view,
                    fence,
                    target,
                    DeploymentStatus.FAILED,
                    f"interrupted during {next_stage.value}",
                    kind=ErrorKind.INTERRUPTED,
                )
                raise
            except LeaseLost:
                raise
            except OrchestrateError as exc:
                return self._fail(view, fence, target, next_stage, exc)

    def _forget_vanished_outputs(self, state: _Run, target: Target) -> None:
        """Stages whose recorded outputs name files gone from this machine (a model snapshot or
        virtualenv deleted under ORCHESTRATE_HOME) run again instead of handing later stages
        paths that no longer exist."""
        for stage in STAGES:
            outputs = state.outputs.get(stage.value)
            if outputs is not None and not target.outputs_usable(stage, outputs):
                del state.outputs[stage.value]
                self.echo(f"deployment {state.view.id}: the files {stage.value} recorded are gone; running it again")

    def _run_stage(self, state: _Run, fence: Fence, target: Target, stage: Stage) -> None:
        policy = RetryPolicy.for_stage(state.view.config, stage)
        retrying = Retrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=wait_exponential_jitter(multiplier=policy.initial_s, max=policy.max_s, jitter=policy.initial_s),
            retry=retry_if_exception_type(RetryableTargetError),
            reraise=True,
            sleep=self.sleep,
        )
        for attempt in retrying:
            with attempt:
                self._attempt(state, fence, target, stage)

    def _attempt(self, state: _Run, fence: Fence, target: Target, stage: Stage) -> None:
        view = state.view
        number = state.attempts.get(stage.value, 0) + 1
        attempt_id = self._start_attempt(state, fence, stage, number)
        state.attempts[stage.value] = number
        ctx = StageContext(
            store=self.store,
            fence=fence,
            deployment=view,
            stage=stage,
            home=self.home,
            outputs=state.merged_outputs(),
            log_file=self.attempt_log(view.id, stage, number),
            live_outputs=state.live_outputs,
            echo=self.echo,
        )
        started = self.monotonic()
        try:
            self.faults.on_stage_start(stage)
            result = target.run_stage(stage, ctx) or {}
        except LeaseLost:
            raise  # no longer ours to record
        except BaseException as exc:
            kind = error_kind(exc)
            with self.store.write(fence) as tx:
                self._write_end(tx, view, attempt_id, stage, number, AttemptStatus.FAILED, error=exc, kind=kind)
            raise
        result["duration_s"] = round(self.monotonic() - started, 3)
        finished_at = utcnow()
        redone = state.restart_stage == stage
        state.pending.append(
            lambda tx: self._write_end(
                tx,
                view,
                attempt_id,
                stage,
                number,
                AttemptStatus.SUCCEEDED,
                outputs=result,
                finished_at=finished_at,
                redone=redone,
            )
        )
        state.outputs[stage.value] = result
        if redone:
            state.restart_stage = None
        if self.faults.crashes_after(stage):  # a drill kills the runner once the stage is recorded
            self._flush(state, fence)
        self.faults.on_stage_end(stage)

    def _start_attempt(self, state: _Run, fence: Fence, stage: Stage, number: int) -> int:
        """Record the attempt `running` (with what is pending) and return its id; raise
        _CancelRequested instead when a cancel is to be honoured here."""
        view = state.view
        # A cancel is honoured at a boundary up to shift_traffic; after it, finishing is safer.
        honours_cancel = STAGES.index(stage) <= STAGES.index(Stage.SHIFT_TRAFFIC)
        attempt_id = None
        with self.store.write(fence) as tx:
            self._write_pending(tx, state)
            moved = tx.connection.execute(
                _ENTER_STAGE_UNLESS_CANCELLED if honours_cancel else _ENTER_STAGE,
                {"deployment": view.id, "stage": stage.value},
            )
            if moved.rowcount == 1:
                attempt_id = tx.connection.execute(
                    _INSERT_ATTEMPT,
                    {
                        "deployment_id": view.id,
                        "stage": stage.value,
                        "attempt": number,
                        "status": AttemptStatus.RUNNING.value,
                        "runner": self.owner.owner,
                        "started_at": utcnow(),
                        "finished_at": None,
                        "outputs": {},
                    },
                ).scalar_one()
                tx.event(
                    EventKind.STAGE_STARTED,
                    f"{stage.value} attempt {number} started",
                    endpoint_id=view.endpoint_id,
                    deployment_id=view.id,
                    data={"stage": stage.value, "attempt": number},
                )
        state.pending.clear()
        if attempt_id is None:
            raise _CancelRequested
        return int(attempt_id)

    def _write_pending(self, tx: Tx, state: _Run) -> None:
        for write in state.pending:
            write(tx)

    def _flush(self, state: _Run, fence: Fence, *, end_lease: bool = False) -> None:
        """Write what is pending in a transaction of its own."""
        with self.store.write(fence, end_lease=end_lease) as tx:
            self._write_pending(tx, state)
        state.pending.clear()
        state.released = state.released or end_lease

    def attempt_log(self, deployment_id: int, stage: Stage, attempt: int) -> Path:
        return self.log_path(deployment_id, f"{stage.value}-{attempt}.log")

    def log_path(self, deployment_id: int, name: str) -> Path:
        from ..store import private_directory

        # Logs can quote what a stage saw: the owner's eyes only (0700 directories, 0600 files).
        directory = private_directory(self.home / "logs" / "deployments" / str(deployment_id), "log directory")
        return directory / name

    def _write_end(
        self,
        tx: Tx,
        view: DeploymentView,
        attempt_id: int,
        stage: Stage,
        number: int,
        status: AttemptStatus,
        *,
        outputs: dict[str, Any] | None = None,
        error: BaseException | None = None,
        kind: ErrorKind | None = None,
        finished_at: dt.datetime | None = None,
        redone: bool = False,
    ) -> None:
        """Record how an attempt ended; `redone` clears the deployment's restart stage."""
        values: dict[str, Any] = {
            "attempt_id": attempt_id,
            "new_status": status.value,
            "at": finished_at or utcnow(),
            "new_outputs": outputs or {},
            "kind": None,
            "error": None,
            "message": None,
        }
        message = None
        if error is not None:
            message = secret_values.scrub(str(error) or type(error).__name__)
            values.update(kind=kind.value if kind else None, error=type(error).__name__, message=message)
        tx.connection.execute(_END_ATTEMPT, values)
        if redone:
            tx.connection.execute(_CLEAR_RESTART_STAGE, {"deployment": view.id})
        if status == AttemptStatus.SUCCEEDED and stage == Stage.SHIFT_TRAFFIC:
            self._make_live(tx, view)
        tx.event(
            EventKind.of_attempt(status),
            f"{stage.value} attempt {number} {status.value}" + (f" ({kind.value}): {message}" if kind else ""),
            endpoint_id=view.endpoint_id,
            deployment_id=view.id,
            data={"stage": stage.value, "attempt": number, "duration_s": (outputs or {}).get("duration_s")},
        )

    @staticmethod
    def _make_live(tx: Tx, view: DeploymentView) -> None:
        row = tx.connection.execute(_LIVE_NOW, {"endpoint": view.endpoint_id, "deployment": view.id}).one()
        previous_live_id = row.previous_live_id
        if row.live_deployment_id != view.id:
            previous_live_id = row.live_deployment_id
            tx.connection.execute(_SET_PREVIOUS_LIVE, {"deployment": view.id, "previous": previous_live_id})
            tx.connection.execute(_SET_LIVE, {"endpoint": view.endpoint_id, "live": view.id})
        tx.event(
            EventKind.TRAFFIC_SHIFTED,
            f"deployment {view.id} is live on {row.name}",
            endpoint_id=view.endpoint_id,
            deployment_id=view.id,
            data={"previous_live_id": previous_live_id},
        )

    def _record_skipped(self, state: _Run, stage: Stage, outputs: dict[str, Any], reason: str) -> None:
        view = state.view
        number = state.attempts.get(stage.value, 0) + 1
        recorded = {**outputs, "skipped": reason}
        now = utcnow()

        def write(tx: Tx) -> None:
            tx.connection.execute(
                _INSERT_ATTEMPT,
                {
                    "deployment_id": view.id,
                    "stage": stage.value,
                    "attempt": number,
                    "status": AttemptStatus.SKIPPED.value,
                    "runner": self.owner.owner,
                    "started_at": now,
                    "finished_at": now,
                    "outputs": recorded,
                },
            )
            tx.event(
                EventKind.STAGE_SKIPPED,
                f"{stage.value} skipped: {reason}",
                endpoint_id=view.endpoint_id,
                deployment_id=view.id,
                data={"stage": stage.value},
            )

        state.pending.append(write)
        state.attempts[stage.value] = number
        state.outputs[stage.value] = recorded

    # -- endings --------------------------------------------------------------------------

    def _finish(self, state: _Run, fence: Fence) -> None:
        """Record success and free the lease, in one transaction with what is pending."""
        view = state.view
        with self.store.write(fence, end_lease=True) as tx:
            self._write_pending(tx, state)
            done = tx.connection.execute(_SUCCEED, {"deployment": view.id, "at": utcnow()})
            if done.rowcount != 1:
                current = tx.connection.execute(_STATUS, {"deployment": view.id}).scalar_one()
                check_transition(view.id, DeploymentStatus(current), DeploymentStatus.SUCCEEDED)
            tx.event(
                EventKind.DEPLOYMENT_SUCCEEDED,
                f"deployment {view.id} succeeded",
                endpoint_id=view.endpoint_id,
                deployment_id=view.id,
            )
        state.pending.clear()
        state.released = True

    def _fail(
        self, view: DeploymentView, fence: Fence, target: Target, stage: Stage, exc: OrchestrateError
    ) -> DeploymentStatus:
        with self.store.read() as session:
            live_id = session.get_one(Endpoint, view.endpoint_id).live_deployment_id
        touched_serving = STAGES.index(stage) >= STAGES.index(Stage.CREATE_ENDPOINT)
        rolls_back = touched_serving and live_id is not None and live_id != view.id
        message = f"{stage.value} failed: {exc}"
        if not rolls_back:
            message += f" (fix the cause, then `orchestrate resume {view.id}`)"
        return self.abort(
            view,
            fence,
            target,
            DeploymentStatus.ROLLED_BACK if rolls_back else DeploymentStatus.FAILED,
            message,
            kind=ErrorKind.PERMANENT,
        )

    def abort(
        self,
        view: DeploymentView,
        fence: Fence,
        target: Target,
        final: DeploymentStatus,
        message: str,
        *,
        kind: ErrorKind | None = None,
    ) -> DeploymentStatus:
        """Stop what this deployment started serving, then record how it ended.

        The previous live deployment is never touched, so it keeps serving."""
        if final == DeploymentStatus.ROLLED_BACK:
            self._set_status(view, fence, DeploymentStatus.ROLLING_BACK, "rolling back: " + message)
        if final == DeploymentStatus.FAILED and view.config.get("keep_failed"):
            # Kept for inspection and resume (which adopts them); cancel still releases them.
            message += f"; what it created is kept (keep_failed): `orchestrate cancel {view.id}` releases it"
            self._set_status(view, fence, final, message)
            return final
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

    def _release_own(self, view: DeploymentView, fence: Fence, target: Target) -> list[str]:
        with self.store.read() as session:
            rows = (
                session.execute(
                    select(Resource)
                    .where(
                        Resource.deployment_id == view.id,
                        Resource.kind.in_(target.disposable_kinds),
                        Resource.state != ResourceState.DELETED.value,
                    )
                    .order_by(Resource.id.desc())
                )
                .scalars()
                .all()
            )
        target.release_disposable(self.cleanup_context(view, fence, "abort.log"), map(ResourceView.of, rows))
        return [row.stage for row in rows]

    def cleanup_context(self, view: DeploymentView, fence: Fence, log_name: str) -> StageContext:
        """The context releases outside a stage run in (an abort, ``delete``): no outputs."""
        return StageContext(
            store=self.store,
            fence=fence,
            deployment=view,
            stage=Stage.CLEANUP,
            home=self.home,
            outputs={},
            log_file=self.log_path(view.id, log_name),
            echo=self.echo,
        )

    def _set_status(self, view: DeploymentView, fence: Fence, status: DeploymentStatus, message: str) -> None:
        with self.store.write(fence) as tx:
            deployment = tx.session.get_one(Deployment, view.id)
            current = DeploymentStatus(deployment.status)
            if current != status:
                check_transition(view.id, current, status)
            deployment.status = status.value
            if status != DeploymentStatus.ROLLING_BACK:
                deployment.error = secret_values.scrub(message)
                deployment.finished_at = utcnow()
            tx.event(
                EventKind.of_deployment(status),
                f"deployment {view.id} {status.value}: {message}",
                endpoint_id=view.endpoint_id,
                deployment_id=view.id,
            )


def error_kind(error: BaseException) -> ErrorKind:
    if isinstance(error, RetryableTargetError):
        return ErrorKind.TRANSIENT
    if isinstance(error, KeyboardInterrupt):
        return ErrorKind.INTERRUPTED
    if isinstance(error, OrchestrateError):
        return ErrorKind.PERMANENT
    return ErrorKind.CRASHED  # a bug, not a verdict of the target: its traceback shows
