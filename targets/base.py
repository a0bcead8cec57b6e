"""The interface every target implements, and how targets are found (entry points)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.config import ConfigKey
from orchestrator.context import ResourceView, StageContext
from orchestrator.errors import ConfigError
from orchestrator.states import LIVE_RESOURCE_STATES, Stage

ENTRY_POINT_GROUP = "orchestrate.targets"

Outputs = dict[str, Any]


@dataclass(frozen=True)
class Invocation:
    status: int
    content_type: str
    body: bytes


class Target(ABC):
    """A place models serve from. Stage methods are idempotent: run twice, they adopt."""

    name: ClassVar[str]
    description: ClassVar[str]
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {}
    # Stages recorded as skipped for this target.
    not_applicable: ClassVar[frozenset[Stage]] = frozenset()
    # Resource kinds that serve traffic: stopped on failure, cancel, cleanup and delete.
    # Anything else (a shared virtualenv, a cached image) outlives deployments.
    disposable_kinds: ClassVar[frozenset[str]] = frozenset()

    def normalize_config(self, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Config as given (-C or a file, named by `where`) with other tools' names for this
        target's keys replaced by its own (the sagemaker target takes MLflow's)."""
        return dict(values)

    def preflight(self, config: Mapping[str, Any], live_outputs: Mapping[str, Any] | None) -> None:
        """Checks that need no state change (a port in use); raise ConfigError."""

    def validate(self, ctx: StageContext) -> Outputs:
        """Read the model again, check it is the one recorded, and snapshot it."""
        return validated_model(ctx)

    def outputs_usable(self, stage: Stage, outputs: Mapping[str, Any]) -> bool:
        """Whether a stage's recorded outputs can stand in for running it again (a rollback reuses
        them, a resume skips the stage): False when files they name on this machine are gone."""
        if stage == Stage.VALIDATE and outputs.get("model_dir"):
            return (Path(outputs["model_dir"]) / "MLmodel").is_file()  # the snapshot under ORCHESTRATE_HOME/models
        return True

    def build(self, ctx: StageContext) -> Outputs:
        return {}

    def push(self, ctx: StageContext) -> Outputs:
        return {}

    @abstractmethod
    def create_endpoint(self, ctx: StageContext) -> Outputs: ...

    @abstractmethod
    def health_check(self, ctx: StageContext) -> Outputs: ...

    def shift_traffic(self, ctx: StageContext) -> Outputs:
        return {}

    def cleanup(self, ctx: StageContext) -> Outputs:
        """Release what older deployments of this endpoint still hold."""
        released = []
        for resource in ctx.endpoint_resources():
            if resource.deployment_id != ctx.deployment.id and resource.kind in self.disposable_kinds:
                self.release_recorded(ctx, resource)
                released.append(resource.name)
        return {"released": released}

    @abstractmethod
    def release(self, ctx: StageContext, resource: ResourceView) -> None:
        """Delete one external resource; one already gone is not an error."""

    def release_recorded(self, ctx: StageContext, resource: ResourceView) -> None:
        from orchestrator.states import ResourceState

        if resource.state in LIVE_RESOURCE_STATES or resource.state == ResourceState.PLANNED:
            self.release(ctx, resource)
            ctx.mark(resource, ResourceState.DELETED)

    def describe(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """Live facts about a deployment from its recorded outputs (is the process alive...)."""
        return {}

    def invoke(self, outputs: Mapping[str, Any], body: bytes, content_type: str) -> Invocation:
        raise ConfigError(f"target {self.name!r} cannot be invoked from orchestrate")

    def logs(self, outputs: Mapping[str, Any], tail: int) -> str:
        raise ConfigError(f"target {self.name!r} keeps no logs orchestrate can read")


def validated_model(ctx: StageContext) -> Outputs:
    """The model's facts for later stages, from a snapshot under ORCHESTRATE_HOME/models, so a
    later edit of the user's directory cannot leak into this deployment or its rollback."""
    from orchestrator import model_uri, requirements

    # The snapshot made when the deployment was created; never the URI resolved again.
    info = model_uri.materialize(ctx.deployment.model_uri, ctx.deployment.model_digest, ctx.home / "models",
                                 recorded=lambda: model_uri.recorded_source(ctx.store, ctx.deployment.id))
    requirements.check_policy(info.requirements, requirements.Policy.from_config(ctx.config))
    return {
        "model_dir": str(info.path),
        "python_version": info.python_version,
        "requirements": list(info.requirements),
        "loader_module": info.loader_module,
        "input_example": info.input_example,
    }


def invoke_scoring_server(url: str, body: bytes, content_type: str, *, hint: str) -> Invocation:
    """POST to /invocations of a scoring server this machine can reach."""
    from orchestrator import health
    from orchestrator.errors import PermanentTargetError

    try:
        status, answer_type, answer = health.http("POST", f"{url}/invocations", body, content_type, timeout=60.0)
    except OSError as exc:
        raise PermanentTargetError(f"cannot reach {url}: {exc}", hint=hint) from exc
    return Invocation(status, answer_type, answer)


def available_targets() -> dict[str, str]:
    """Installed target names and the import path of each."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


# Scanning entry points reads the metadata of every installed distribution (~20 ms); a
# deployment loads its target several times, so each found class is remembered.
_target_classes: dict[str, type[Target]] = {}


def load_target(name: str) -> Target:
    """The installed target called `name`, or a ConfigError listing the installed ones."""
    target_class = _target_classes.get(name)
    if target_class is None:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not matches:
            installed = ", ".join(sorted(available_targets())) or "none"
            raise ConfigError(
                f"unknown target {name!r}",
                hint=f"installed targets: {installed} (see `orchestrate targets`)",
            )
        loaded = matches[0].load()
        if not (isinstance(loaded, type) and issubclass(loaded, Target)):
            raise ConfigError(f"entry point {matches[0].value} for target {name!r} is not a Target subclass")
        target_class = _target_classes.setdefault(name, loaded)
    return target_class()
