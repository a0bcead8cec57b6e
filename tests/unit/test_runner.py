"""The runner driven in-process with a recording target: the exact target calls and the records.

No services: a SQLite file, the model snapshot under ORCHESTRATE_HOME, a fake sleep. The
"outside world" the target creates servers in is a JSON file, so a runner that dies in a
forked child and the one that resumes in this process see the same world.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from orchestrator.api import Client
from orchestrator.errors import PermanentTargetError, RetryableTargetError
from orchestrator.states import EventKind
from orchestrator.store import reads
from orchestrator.target_contract import Outputs, ResourceState, ResourceView, StageContext, Target

SERVER = "server"
STAGES = ["validate", "build", "push", "create_endpoint", "health_check", "shift_traffic", "cleanup"]


class RecordingTarget(Target):
    """Serves nothing; records each call as (method, deployment id) and keeps its servers in
    `world.json`. `faults[(method, n)]` is raised by the method's n-th call for a deployment;
    `hooks[method]` runs inside the method, after it did its work."""

    name = "recording"
    description = "records every call (unit tests)"
    disposable_kinds: ClassVar[frozenset[str]] = frozenset({SERVER})

    def __init__(self, directory: Path) -> None:
        self.world_file = directory / "world.json"
        self.calls_file = directory / "calls.jsonl"
        self.faults: dict[tuple[str, int], BaseException] = {}
        self.hooks: dict[str, Callable[[StageContext], None]] = {}

    # -- what the tests read ----------------------------------------------------------------

    @property
    def calls(self) -> list[tuple[str, int]]:
        if not self.calls_file.exists():
            return []
        return [tuple(json.loads(line)) for line in self.calls_file.read_text().splitlines()]  # type: ignore[misc]

    @property
    def world(self) -> dict[str, int]:
        """Server name -> how many times it was created."""
        return json.loads(self.world_file.read_text()) if self.world_file.exists() else {}

    # -- the contract -------------------------------------------------------------------------

    def _enter(self, method: str, deployment_id: int) -> None:
        with self.calls_file.open("a") as handle:
            handle.write(json.dumps([method, deployment_id]) + "\n")
        fault = self.faults.get((method, self.calls.count((method, deployment_id))))
        if fault is not None:
            raise fault

    def _leave(self, method: str, ctx: StageContext) -> None:
        hook = self.hooks.get(method)
        if hook is not None:
            hook(ctx)

    def _save(self, world: dict[str, int]) -> None:
        self.world_file.write_text(json.dumps(world))

    def validate(self, ctx: StageContext) -> Outputs:
        self._enter("validate", ctx.deployment.id)
        outputs = super().validate(ctx)
        self._leave("validate", ctx)
        return outputs

    def build(self, ctx: StageContext) -> Outputs:
        self._enter("build", ctx.deployment.id)
        self._leave("build", ctx)
        return {"image": f"image-of-{ctx.deployment.model_digest[:12]}"}

    def push(self, ctx: StageContext) -> Outputs:
        self._enter("push", ctx.deployment.id)
        self._leave("push", ctx)
        return {"pushed": ctx.outputs["image"]}

    def create_endpoint(self, ctx: StageContext) -> Outputs:
        self._enter("create_endpoint", ctx.deployment.id)
        name = f"{ctx.deployment.endpoint_name}-{ctx.deployment.id}"
        resource = ctx.plan(SERVER, name)
        world = self.world
        if name not in world:  # adopt a server an earlier attempt made
            world[name] = world.get(name, 0) + 1
            self._save(world)
        if resource.state == ResourceState.PLANNED:
            ctx.mark(resource, ResourceState.CREATED, external_id=name)
        self._leave("create_endpoint", ctx)
        return {"server": name}

    def health_check(self, ctx: StageContext) -> Outputs:
        self._enter("health_check", ctx.deployment.id)
        self._leave("health_check", ctx)
        return {}

    def shift_traffic(self, ctx: StageContext) -> Outputs:
        self._enter("shift_traffic", ctx.deployment.id)
        self._leave("shift_traffic", ctx)
        return {"serving": ctx.outputs["server"]}

    def cleanup(self, ctx: StageContext) -> Outputs:
        self._enter("cleanup", ctx.deployment.id)
        return super().cleanup(ctx)

    def release(self, ctx: StageContext, resource: ResourceView) -> None:
        self._enter("release", ctx.deployment.id)
        world = self.world
        world.pop(resource.name, None)
        self._save(world)


@pytest.fixture
def target(tmp_path: Path) -> RecordingTarget:
    return RecordingTarget(tmp_path)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def make_client(db_url: str, target: RecordingTarget, sleeps: list[float] | None = None) -> Client:
    client = Client(db_url=db_url, targets=lambda _name: target)
    if sleeps is not None:
        client.runner.sleep = sleeps.append
    return client


@pytest.fixture
def client(db_url: str, target: RecordingTarget) -> Any:
    client = make_client(db_url, target)
    yield client
    client.close()


def attempts(client: Client, deployment_id: int) -> list[tuple[str, int, str]]:
    record = client.deployment_record(deployment_id)
    return [(a.stage, a.attempt, a.status) for a in record.attempts]


def resources(client: Client, deployment_id: int) -> list[tuple[str, str]]:
    return [(r.name, r.state) for r in client.deployment_record(deployment_id).resources]


def test_a_deployment_calls_each_stage_once_in_order_and_records_each(
        client: Client, target: RecordingTarget, noop_model: Path) -> None:
    deployment = client.deploy(str(noop_model), name="churn", target="recording")

    assert target.calls == [(stage, deployment) for stage in STAGES]
    assert attempts(client, deployment) == [(stage, 1, "succeeded") for stage in STAGES]
    assert resources(client, deployment) == [(f"churn-{deployment}", "created")]
    record = client.deployment_record(deployment)
    assert (record.status, record.live) == ("succeeded", True)
    assert target.world == {f"churn-{deployment}": 1}
    kinds = [EventKind(event.kind) for event in client.events()]
    per_stage = {"create_endpoint": [EventKind.RESOURCE_PLANNED, EventKind.RESOURCE_CREATED],
                 "shift_traffic": [EventKind.TRAFFIC_SHIFTED]}
    assert kinds == [EventKind.DEPLOYMENT_CREATED,
                     *(kind for stage in STAGES
                       for kind in (EventKind.STAGE_STARTED, *per_stage.get(stage, []), EventKind.STAGE_SUCCEEDED)),
                     EventKind.DEPLOYMENT_SUCCEEDED]


def test_a_transient_fault_is_retried_after_the_policy_wait(
        db_url: str, target: RecordingTarget, noop_model: Path) -> None:
    sleeps: list[float] = []
    client = make_client(db_url, target, sleeps)
    target.faults[("push", 1)] = RetryableTargetError("registry answered 503")

    deployment = client.deploy(str(noop_model), name="churn", target="recording")

    assert [call for call, _ in target.calls] == ["validate", "build", "push", "push", *STAGES[3:]]
    assert attempts(client, deployment)[2:4] == [("push", 1, "failed"), ("push", 2, "succeeded")]
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 60  # one wait, through the given clock
    failed = client.deployment_record(deployment).attempts[2]
    assert (failed.error_kind, failed.error_message) == ("transient", "registry answered 503")
    assert client.deployment_record(deployment).status == "succeeded"
    client.close()


def test_a_permanent_fault_fails_at_once_and_releases_what_the_deployment_made(
        client: Client, target: RecordingTarget, noop_model: Path) -> None:
    target.faults[("health_check", 1)] = PermanentTargetError("the model does not load")

    deployment = client.deploy(str(noop_model), name="churn", target="recording", detach=False)

    assert [call for call, _ in target.calls] == [*STAGES[:5], "release"]
    assert attempts(client, deployment)[-1] == ("health_check", 1, "failed")
    assert resources(client, deployment) == [(f"churn-{deployment}", "deleted")]
    assert target.world == {}
    record = client.deployment_record(deployment)
    assert record.status == "failed" and "the model does not load" in record.error
    assert record.live is False


def _deploy_and_die_in_create_endpoint(db_url: str, directory: str, model: str) -> None:
    """In a forked child: deploy, and die like SIGKILL once the server exists, before the
    stage is recorded."""
    target = RecordingTarget(Path(directory))
    target.hooks["create_endpoint"] = lambda _ctx: os._exit(137)
    make_client(db_url, target).deploy(model, name="churn", target="recording")


def test_a_runner_that_dies_mid_stage_is_resumed_without_creating_anything_twice(
        db_url: str, target: RecordingTarget, tmp_path: Path, noop_model: Path) -> None:
    child = multiprocessing.get_context("fork").Process(
        target=_deploy_and_die_in_create_endpoint, args=(db_url, str(tmp_path), str(noop_model)))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 137
    died = target.calls
    assert [call for call, _ in died] == STAGES[:4]
    deployment = died[0][1]
    client = make_client(db_url, target)
    assert client.deployment_record(deployment).status == "running"  # what a crash leaves

    client.resume(deployment)  # the dead runner's lease is taken over at once: its pid is gone

    assert target.calls[len(died):] == [(stage, deployment) for stage in STAGES[3:]]
    assert attempts(client, deployment)[3:5] == [("create_endpoint", 1, "abandoned"),
                                                 ("create_endpoint", 2, "succeeded")]
    assert target.world == {f"churn-{deployment}": 1}  # created once, adopted by the resume
    assert resources(client, deployment) == [(f"churn-{deployment}", "created")]
    assert client.deployment_record(deployment).status == "succeeded"
    client.close()


def test_a_cancel_is_honoured_at_the_next_stage_boundary_and_releases(
        client: Client, db_url: str, target: RecordingTarget, noop_model: Path) -> None:
    def cancel_from_another_client(ctx: StageContext) -> None:
        other = make_client(db_url, target)
        assert other.cancel(ctx.deployment.id, wait_s=0) == "running"  # requested, not yet honoured
        other.close()

    target.hooks["create_endpoint"] = cancel_from_another_client

    deployment = client.deploy(str(noop_model), name="churn", target="recording")

    assert [call for call, _ in target.calls] == [*STAGES[:4], "release"]  # no health check
    assert attempts(client, deployment) == [(stage, 1, "succeeded") for stage in STAGES[:4]]
    assert resources(client, deployment) == [(f"churn-{deployment}", "deleted")]
    assert client.deployment_record(deployment).status == "cancelled"
    assert target.world == {}


def test_a_rollback_reuses_the_recorded_build_and_cleans_up_the_version_it_replaces(
        client: Client, target: RecordingTarget, noop_model: Path) -> None:
    first = client.deploy(str(noop_model), name="churn", target="recording")
    second = client.deploy(str(noop_model), name="churn", target="recording", force=True)
    assert target.world == {f"churn-{second}": 1}  # the second's cleanup released the first's server
    calls_before = len(target.calls)

    restored = client.rollback("churn")

    assert target.calls[calls_before:] == [(stage, restored) for stage in STAGES[3:]] + [("release", restored)]
    assert attempts(client, restored) == (
        [(stage, 1, "skipped") for stage in STAGES[:3]] + [(stage, 1, "succeeded") for stage in STAGES[3:]])
    record = client.deployment_record(restored)
    assert (record.source_deployment_id, record.live, record.status) == (first, True, "succeeded")
    assert target.world == {f"churn-{restored}": 1}
    assert resources(client, second) == [(f"churn-{second}", "deleted")]


def test_reads_return_frozen_records_whose_to_dict_is_the_json_shape(client: Client, noop_model: Path) -> None:
    deployment = client.deploy(str(noop_model), name="churn", target="recording")

    record = client.deployment_record(deployment)
    assert isinstance(record, reads.DeploymentRecord) and record.attempts is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "failed"  # type: ignore[misc]
    shown = json.loads(json.dumps(record.to_dict()))
    assert list(shown) == [
        "id", "endpoint", "target", "status", "current_stage", "live", "model_uri", "model_digest",
        "model_source", "model", "config", "config_sources", "error", "source_deployment_id",
        "previous_live_id", "actor", "created_at", "started_at", "finished_at", "url", "attempts", "resources",
    ]
    assert [a["stage"] for a in shown["attempts"]] == [a.stage for a in record.attempts] == STAGES
    assert "attempts" not in client.deployment_record(deployment, with_attempts=False).to_dict()

    status = client.endpoint_status("churn")
    assert (status.live_deployment_id, status.latest_deployment_id, status.latest) == (deployment, deployment, None)
    assert status.live is not None and status.live.runtime is not None  # the target's describe
    assert status.to_dict()["live"] == client.deployment_record(deployment, with_attempts=False, describe=True).to_dict()

    [summary] = client.list_endpoints()
    assert summary == reads.EndpointSummary("churn", "recording", deployment, record.model_digest, busy=False)
    assert [row.id for row in client.list_deployments()] == [deployment]
    events = client.history("churn")
    assert all(isinstance(e, reads.RecordedEvent) for e in events)
    assert {e.id for e in client.history(str(deployment))} <= {e.id for e in events}
    assert events[-1].to_dict()["kind"] == events[-1].kind
