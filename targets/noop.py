"""The `noop` target: runs every stage and records one resource, serving nothing.

For measuring the orchestrator's own overhead and for drills of queues and workers."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import ClassVar

from orchestrator.target_contract import (
    ConfigKey,
    Outputs,
    ResourceState,
    ResourceView,
    StageContext,
    Target,
)


class NoopTarget(Target):
    name = "noop"
    description = "does nothing in each stage (optionally sleeps); for benchmarks and drills"
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "sleep_s": ConfigKey(float, 0.0, "seconds each stage sleeps", minimum=0, maximum=3600),
        "api_token": ConfigKey(
            str,
            "",
            "a credential (env:NAME or file:PATH) it only reads and logs, scrubbed; for drills of secret handling",
        ),
    }
    disposable_kinds = frozenset({"noop"})

    def _pause(self, ctx: StageContext) -> None:
        if ctx.config.get("sleep_s"):
            time.sleep(float(ctx.config["sleep_s"]))

    def validate(self, ctx: StageContext) -> Outputs:
        self._pause(ctx)
        token = ctx.config.get("api_token")
        if token:
            ctx.log(f"authenticating with token {token}")
        return {}

    def build(self, ctx: StageContext) -> Outputs:
        self._pause(ctx)
        return {}

    def push(self, ctx: StageContext) -> Outputs:
        self._pause(ctx)
        return {}

    def create_endpoint(self, ctx: StageContext) -> Outputs:
        self._pause(ctx)
        name = f"{ctx.deployment.endpoint_name}-{ctx.deployment.id}"
        resource = ctx.plan("noop", name)
        if resource.state == ResourceState.PLANNED:
            ctx.mark(resource, ResourceState.CREATED, external_id=name)
        return {"resource": name}

    def health_check(self, ctx: StageContext) -> Outputs:
        self._pause(ctx)
        return {}

    def release(self, ctx: StageContext, resource: ResourceView) -> None:
        return None
