"""The exceptions orchestrate raises, and the exit code each one means.

    OrchestrateError                  exit 1
    ├── ConfigError                   exit 2  the user fixes input (model, config, arguments)
    │   └── NotFound                  exit 2  no such endpoint or deployment
    ├── EndpointBusy                  exit 3  another deployment holds the endpoint's lease
    ├── StateError                    exit 2  a move the state machine does not allow
    ├── LeaseLost                     exit 1  our fencing token is no longer current
    ├── StoreUnavailable              exit 1  the state store stopped answering mid-run
    ├── DeploymentFailed              exit 1  the deployment ended failed or rolled back
    └── TargetError                   exit 1  a target (cloud, process, engine) said no
        ├── RetryableTargetError              transient: throttling, 5xx, resets, timeouts
        └── PermanentTargetError              validation, auth, quota, a bad model

Programming mistakes stay built-in exceptions and are never caught broadly.
"""

from __future__ import annotations


class OrchestrateError(Exception):
    """Base of every expected orchestrate error; `hint` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class ConfigError(OrchestrateError):
    """Bad input the user can fix: model directory, target config, CLI arguments."""

    exit_code = 2


class NotFound(ConfigError):
    """No endpoint or deployment answers to the name or id given."""


class EndpointBusy(OrchestrateError):
    """Another deployment holds the endpoint's lease."""

    exit_code = 3


class StateError(OrchestrateError):
    """A status move the state machine does not allow."""

    exit_code = 2


class LeaseLost(OrchestrateError):
    """Another runner took the endpoint's lease; this runner must stop writing."""


class StoreUnavailable(OrchestrateError):
    """The state store stopped answering while a deployment ran; what was recorded is kept."""


class DeploymentFailed(OrchestrateError):
    """The deployment ended failed, rolled back or cancelled."""


class TargetError(OrchestrateError):
    """A target could not do what a stage asked."""


class RetryableTargetError(TargetError):
    """A transient fault; the stage is retried with backoff."""


class PermanentTargetError(TargetError):
    """A fault retrying cannot fix; the deployment fails at once."""
