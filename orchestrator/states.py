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


TERMINAL_STATUSES = frozenset(
    {DeploymentStatus.SUCCEEDED, DeploymentStatus.CANCELLED, DeploymentStatus.ROLLED_BACK}
)
# Statuses in which a deployment may be holding, or waiting for, its endpoint.
ACTIVE_STATUSES = frozenset(
    {DeploymentStatus.QUEUED, DeploymentStatus.RUNNING, DeploymentStatus.ROLLING_BACK}
)

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
