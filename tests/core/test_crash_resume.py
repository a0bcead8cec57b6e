"""Crash resume on the local target: a real `orchestrate deploy` is SIGKILLed at a stage
boundary or in the middle of `build`, then `orchestrate resume` finishes the job with one
server and one virtualenv, never two."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.slow

NAME = "crashy"
V1_PREDICTIONS = [0, 1, 2, 2]

# The local target skips push, so no `push:crash-after` boundary is ever reached.
BOUNDARIES = ["validate", "build", "create_endpoint", "health_check", "shift_traffic", "cleanup"]
# A cold build here takes ~1.5 s (uv from its cache); 0.8 s in, it is installing.
BUILD_CRASH_AFTER_S = 0.8


def _check_resumed(orch: Any, example_model: Path) -> dict[str, Any]:
    """After a successful resume: one process resource, one server, one virtualenv record."""
    record: dict[str, Any] = orch.deployment(1)
    assert record["status"] == "succeeded"
    assert not [a for a in record["attempts"] if a["status"] == "running"], record["attempts"]
    processes = [r for r in record["resources"] if r["kind"] == "process"]
    assert [r["state"] for r in processes] == ["created"], processes
    virtualenvs = [r for r in record["resources"] if r["kind"] == "virtualenv"]
    assert len(virtualenvs) == 1, virtualenvs
    assert virtualenvs[0]["state"] in ("created", "adopted")

    servers = orch.servers(NAME)
    assert [p.pid for p in servers] == [int(processes[0]["external_id"])], [p.cmdline() for p in servers]
    assert record["runtime"]["process_alive"] is True and record["runtime"]["answering"] is True
    predicted = orch.ok("predict", NAME, "-i", str(example_model / "serving_input_example.json")).stdout
    assert '"predictions":[0,1,2,2]' in predicted.replace(" ", "")
    return record


def _kill_and_resume(orch: Any, example_model: Path, fault: str) -> dict[str, Any]:
    crashed = orch.run("deploy", str(example_model), "--name", NAME, env={"ORCHESTRATE_FAULTS": fault})
    assert crashed.returncode == -signal.SIGKILL, orch.describe(crashed)
    before: dict[str, Any] = orch.deployment(1)
    assert before["status"] == "running"
    lease = orch.json("status", NAME)["lease"]
    assert lease is not None and lease["holder_gone"] is True, lease

    resumed = orch.run("resume", "1")
    assert resumed.returncode == 0, orch.describe(resumed)
    assert "deployment 1 succeeded" in resumed.stdout
    return before


@pytest.mark.parametrize("stage", BOUNDARIES)
def test_kill_after_stage_then_resume(orch: Any, example_model: Path, stage: str) -> None:
    before = _kill_and_resume(orch, example_model, f"{stage}:crash-after")
    # The killed runner got as far as recording the stage; nothing after it started.
    done = [a["stage"] for a in before["attempts"] if a["status"] in ("succeeded", "skipped")]
    assert done[-1] == stage, before["attempts"]
    assert not [a for a in before["attempts"] if a["status"] == "running"]

    record = _check_resumed(orch, example_model)
    by_stage: dict[str, list[str]] = {}
    for attempt in record["attempts"]:
        by_stage.setdefault(attempt["stage"], []).append(attempt["status"])
    # Each stage ran once: the one finished before the kill is not run again.
    expected = {s: ["succeeded"] for s in BOUNDARIES} | {"push": ["skipped"]}
    assert by_stage == expected
    runners = {a["stage"]: a["runner"] for a in record["attempts"]}
    assert runners[stage] != runners["cleanup"] or stage == "cleanup"
    kinds = [e["kind"] for e in orch.json("history", "1")]
    assert "deployment_resumed" in kinds


@pytest.mark.parametrize("stage", ["build", "health_check"])
def test_kill_during_stage_then_resume(orch: Any, example_model: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    envs = tmp_path / "envs"
    if stage == "build":
        # A cache of its own, so the build really is under way when the runner dies.
        monkeypatch.setenv("ORCHESTRATE_ENVS_DIR", str(envs))
    delay = BUILD_CRASH_AFTER_S if stage == "build" else 1.0
    before = _kill_and_resume(orch, example_model, f"{stage}:crash-during:{delay}")
    running = [a for a in before["attempts"] if a["status"] == "running"]
    assert [a["stage"] for a in running] == [stage], before["attempts"]

    record = _check_resumed(orch, example_model)
    attempts = [a for a in record["attempts"] if a["stage"] == stage]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "abandoned"), (2, "succeeded")]
    assert attempts[0]["error_kind"] == "crashed"
    assert attempts[0]["runner"] in attempts[0]["error_message"]
    resumed = [e for e in orch.json("history", "1") if e["kind"] == "deployment_resumed"]
    assert len(resumed) == 1 and "1 abandoned attempt(s)" in resumed[0]["message"]
    if stage == "build":
        built = sorted(p.name for p in envs.iterdir() if p.is_dir())
        assert len(built) == 1, built
        assert (envs / built[0] / ".orchestrate-env.json").is_file()
        (virtualenv,) = [r for r in record["resources"] if r["kind"] == "virtualenv"]
        assert virtualenv["external_id"] == str(envs / built[0])
        # Nothing of the killed build keeps running.
        strays = [p for p in psutil.process_iter(["cmdline"])
                  if any(str(envs) in part for part in (p.info["cmdline"] or []))
                  and "scoring" not in (p.info["cmdline"] or [])]
        assert not strays, [p.info["cmdline"] for p in strays]
