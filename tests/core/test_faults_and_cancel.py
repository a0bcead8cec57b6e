"""Injected faults (ORCHESTRATE_FAULTS) and cancel, through the real CLI, on SQLite and
PostgreSQL: transient faults are retried, too many fail, a permanent one fails at once,
and a cancelled deployment releases what it created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

NAME = "faulty"
FAST_RETRY = ("-C", "retry_initial_s=0.01", "-C", "retry_max_s=0.05")


@pytest.fixture
def store(db_url: str, orch: Any) -> Any:
    """`orch` on this test's database (SQLite in tmp_path, or a fresh PostgreSQL one)."""
    orch.db_url = db_url
    return orch


def _attempts(record: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    return [a for a in record["attempts"] if a["stage"] == stage]


@pytest.mark.parametrize("faults", [1, 2])
def test_transient_faults_are_retried(store: Any, example_model: Path, faults: int) -> None:
    result = store.run("deploy", str(example_model), "--name", NAME, "--target", "noop", *FAST_RETRY,
                       env={"ORCHESTRATE_FAULTS": f"build:transient:{faults}"})
    assert result.returncode == 0, store.describe(result)
    record = store.deployment(1)
    assert record["status"] == "succeeded"
    build = _attempts(record, "build")
    assert [(a["attempt"], a["status"], a["error_kind"]) for a in build] == [
        *((n, "failed", "transient") for n in range(1, faults + 1)), (faults + 1, "succeeded", None)]
    assert all("injected transient fault" in a["error_message"] for a in build[:-1])
    for stage in ("validate", "push", "create_endpoint", "health_check", "shift_traffic", "cleanup"):
        assert [a["status"] for a in _attempts(record, stage)] == ["succeeded"], stage


def test_transient_faults_on_the_local_target(orch: Any, example_model: Path) -> None:
    """The same on a real server: health_check fails twice, the third attempt serves."""
    result = orch.run("deploy", str(example_model), "--name", NAME, *FAST_RETRY,
                      env={"ORCHESTRATE_FAULTS": "health_check:transient:2"})
    assert result.returncode == 0, orch.describe(result)
    record = orch.deployment(1)
    assert [(a["status"], a["error_kind"]) for a in _attempts(record, "health_check")] == [
        ("failed", "transient"), ("failed", "transient"), ("succeeded", None)]
    assert len(orch.servers(NAME)) == 1


@pytest.mark.parametrize("limit", [("-C", "max_attempts=3"), ("-C", "max_attempts.create_endpoint=2")],
                         ids=["max_attempts", "per-stage"])
def test_more_transient_faults_than_attempts_fail(store: Any, example_model: Path, limit: tuple[str, str]) -> None:
    allowed = int(limit[1].split("=")[1])
    result = store.run("deploy", str(example_model), "--name", NAME, "--target", "noop", *FAST_RETRY, *limit,
                       env={"ORCHESTRATE_FAULTS": "create_endpoint:transient:5"})
    assert result.returncode == 1, store.describe(result)
    assert "Traceback" not in result.stderr
    assert "injected transient fault" in result.stderr and "failed" in result.stderr
    record = store.deployment(1)
    assert record["status"] == "failed"
    assert record["error"].startswith("create_endpoint failed:")
    assert "orchestrate resume 1" in record["error"]
    attempts = _attempts(record, "create_endpoint")
    assert [(a["status"], a["error_kind"]) for a in attempts] == [("failed", "transient")] * allowed
    assert not _attempts(record, "health_check")


def test_permanent_fault_fails_at_once(store: Any, example_model: Path) -> None:
    result = store.run("deploy", str(example_model), "--name", NAME, "--target", "noop", *FAST_RETRY,
                       env={"ORCHESTRATE_FAULTS": "health_check:permanent"})
    assert result.returncode == 1, store.describe(result)
    assert "injected permanent fault in health_check" in result.stderr
    record = store.deployment(1)
    assert record["status"] == "failed"
    assert "injected permanent fault in health_check" in record["error"]
    assert [(a["status"], a["error_kind"]) for a in _attempts(record, "health_check")] == [("failed", "permanent")]
    # What create_endpoint made is released when the deployment fails.
    assert [r["state"] for r in record["resources"]] == ["deleted"]
    text = store.ok("status", "1").stdout
    assert "deployment 1: failed" in text
    assert "injected permanent fault in health_check" in text
    assert "permanent: injected permanent fault" in text

    # A failed deployment can be resumed (faults gone) and then succeeds.
    resumed = store.run("resume", "1")
    assert resumed.returncode == 0, store.describe(resumed)
    after = store.deployment(1)
    assert after["status"] == "succeeded"
    # The released record stays as history; the rerun recorded a new one.
    assert [r["state"] for r in after["resources"]] == ["deleted", "created"]


def test_cancel_mid_way(store: Any, example_model: Path) -> None:
    runner = store.spawn("deploy", str(example_model), "--name", NAME, "--target", "noop", "-C", "sleep_s=2")
    try:
        # Cancel while create_endpoint runs: the request lands before shift_traffic even when
        # the `cancel` command is slow to start (two busy cores), and there is something to release.
        store.wait_for(1, lambda r: any(a["stage"] == "create_endpoint" and a["status"] == "running"
                                        for a in r["attempts"]), what="create_endpoint running")
        cancelled = store.run("cancel", "1", timeout=60)
        assert cancelled.returncode == 0, store.describe(cancelled)
        assert "deployment 1 cancelled" in cancelled.stdout
        _, stderr = store.finish(runner, timeout=60)
    finally:
        store.stop(runner)
    assert runner.returncode == 1, stderr
    assert "cancelled" in stderr and "Traceback" not in stderr
    record = store.deployment(1)
    assert record["status"] == "cancelled"
    assert record["error"] == "cancelled by request"
    assert [r["state"] for r in record["resources"]] == ["deleted"]
    assert not _attempts(record, "shift_traffic")
    endpoint = store.json("status", NAME)
    assert endpoint["live_deployment_id"] is None and endpoint["lease"] is None
    kinds = [e["kind"] for e in store.json("history", "1")]
    assert "cancel_requested" in kinds and kinds[-1] == "deployment_cancelled"
    # The endpoint is free again.
    again = store.run("deploy", str(example_model), "--name", NAME, "--target", "noop")
    assert again.returncode == 0, store.describe(again)


def test_cancel_failed_deployment(store: Any, example_model: Path) -> None:
    failed = store.run("deploy", str(example_model), "--name", NAME, "--target", "noop",
                       env={"ORCHESTRATE_FAULTS": "shift_traffic:permanent"})
    assert failed.returncode == 1, store.describe(failed)
    assert store.deployment(1)["status"] == "failed"

    cancelled = store.run("cancel", "1")
    assert cancelled.returncode == 0, store.describe(cancelled)
    assert "deployment 1 cancelled" in cancelled.stdout
    record = store.deployment(1)
    assert record["status"] == "cancelled"
    assert {r["state"] for r in record["resources"]} == {"deleted"}
    # Cancelled is final: neither resume nor a second cancel applies.
    for command in ("resume", "cancel"):
        refused = store.run(command, "1")
        assert refused.returncode == 2, store.describe(refused)
        assert "already cancelled" in refused.stderr


def test_cancel_local_deployment_stops_its_server(orch: Any, example_model: Path) -> None:
    """On the local target, cancel mid-way stops the server process it started."""
    runner = orch.spawn("deploy", str(example_model), "--name", NAME)
    try:
        orch.wait_for(1, lambda r: any(a["stage"] == "health_check" and a["status"] == "running"
                                       for a in r["attempts"]), timeout=120, what="health_check running")
        assert len(orch.servers(NAME)) == 1
        cancelled = orch.run("cancel", "1", timeout=120)
        assert cancelled.returncode == 0, orch.describe(cancelled)
        orch.finish(runner, timeout=60)
    finally:
        orch.stop(runner)
    record = orch.deployment(1)
    assert record["status"] == "cancelled"
    assert [r["state"] for r in record["resources"] if r["kind"] == "process"] == ["deleted"]
    assert orch.servers(NAME) == []
