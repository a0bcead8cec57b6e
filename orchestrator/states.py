"""Stages, statuses and the one table of allowed status moves."""

from __future__ import annotations

import enum

from .errors import StateError


class Stage(str, enum.Enum):
    VALIDATE = "validate"
    BUILD = "build"
    PUSH = "push"
    CREATE_ENDPOINT = "create_endpoint"
    HEALTH_CHECK = "health_check"
    SHIFT_TRAFFIC = "shift_traffic"
    CLEANUP = "cleanup"


STAGES: tuple[Stage, ...] = tuple(Stage)

# Stages a rollback reuses from the deployment it restores instead of running again.
REUSABLE_STAGES = frozenset({Stage.VALIDATE, Stage.BUILD, Stage.PUSH})


class DeploymentStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


TERMINAL_STATUSES = frozenset({DeploymentStatus.SUCCEEDED, DeploymentStatus.CANCELLED, DeploymentStatus.ROLLED_BACK})
# Statuses in which a deployment may be holding, or waiting for, its endpoint.
ACTIVE_STATUSES = frozenset({DeploymentStatus.QUEUED, DeploymentStatus.RUNNING, DeploymentStatus.ROLLING_BACK})

INITIAL_STATUS = DeploymentStatus.QUEUED

_S = DeploymentStatus
# A failed deployment is not terminal: `resume` runs it again, `cancel` ends it.
TRANSITIONS: dict[DeploymentStatus, frozenset[DeploymentStatus]] = {
    _S.QUEUED: frozenset({_S.RUNNING, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.CANCELLED, _S.ROLLING_BACK}),
    _S.FAILED: frozenset({_S.RUNNING, _S.CANCELLED}),
    _S.ROLLING_BACK: frozenset({_S.ROLLED_BACK, _S.FAILED}),
    _S.SUCCEEDED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.ROLLED_BACK: frozenset(),
}


def check_transition(deployment_id: int, current: DeploymentStatus, new: DeploymentStatus) -> None:
    """Raise StateError unless the table allows `current` → `new`."""
    if new not in TRANSITIONS[current]:
        raise StateError(
            f"deployment {deployment_id} cannot move from {current.value} to {new.value}",
            hint=f"run `orchestrate status {deployment_id}` to see where it stands",
        )


class AttemptStatus(str, enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    # The runner died (SIGKILL, crash, lost lease) while the attempt ran.
    ABANDONED = "abandoned"


class ErrorKind(str, enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CRASHED = "crashed"
    INTERRUPTED = "interrupted"


class ResourceState(str, enum.Enum):
    PLANNED = "planned"
    CREATED = "created"
    ADOPTED = "adopted"
    DELETED = "deleted"


LIVE_RESOURCE_STATES = frozenset({ResourceState.CREATED, ResourceState.ADOPTED})


class EventKind(str, enum.Enum):
    """Every kind of event the store records: the audit log's closed vocabulary."""

    DEPLOYMENT_CREATED = "deployment_created"
    DEPLOYMENT_CLAIMED = "deployment_claimed"
    DEPLOYMENT_TAKEN_OVER = "deployment_taken_over"
    DEPLOYMENT_RESUMED = "deployment_resumed"
    DEPLOYMENT_SUCCEEDED = "deployment_succeeded"
    DEPLOYMENT_FAILED = "deployment_failed"
    DEPLOYMENT_CANCELLED = "deployment_cancelled"
    DEPLOYMENT_ROLLING_BACK = "deployment_rolling_back"
    DEPLOYMENT_ROLLED_BACK = "deployment_rolled_back"
    CANCEL_REQUESTED = "cancel_requested"
    STAGE_STARTED = "stage_started"
    STAGE_SUCCEEDED = "stage_succeeded"
    STAGE_FAILED = "stage_failed"
    STAGE_SKIPPED = "stage_skipped"
    STAGE_ABANDONED = "stage_abandoned"
    TRAFFIC_SHIFTED = "traffic_shifted"
    RESOURCE_PLANNED = "resource_planned"
    RESOURCE_CREATED = "resource_created"
    RESOURCE_ADOPTED = "resource_adopted"
    RESOURCE_DELETED = "resource_deleted"
    ENDPOINT_DELETED = "endpoint_deleted"
    REGISTRY_TAG_FAILED = "registry_tag_failed"
    GC = "gc"

    @classmethod
    def of_deployment(cls, status: DeploymentStatus) -> EventKind:
        """The event of a deployment entering `status` (queued has its own: created)."""
        return cls(f"deployment_{status.value}")

    @classmethod
    def of_attempt(cls, status: AttemptStatus) -> EventKind:
        return cls(f"stage_{status.value}")

    @classmethod
    def of_resource(cls, state: ResourceState) -> EventKind:
        return cls(f"resource_{state.value}")


# The attempt status a stage event reports, for the progress display.
STAGE_EVENTS: dict[EventKind, str] = {
    EventKind.STAGE_STARTED: "started",
    **{EventKind.of_attempt(status): status.value for status in AttemptStatus if status != AttemptStatus.RUNNING},
}
# Events that say where a deployment stands: what a piped deploy prints and a worker logs.
LIFECYCLE_EVENTS = frozenset(
    {kind for kind in EventKind if kind.value.startswith("deployment_")}
    | {EventKind.TRAFFIC_SHIFTED, EventKind.CANCEL_REQUESTED}
)
