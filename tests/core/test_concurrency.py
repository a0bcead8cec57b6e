"""One deployment at a time per endpoint, between real `orchestrate` processes, on SQLite
and PostgreSQL: the second deploy exits 3 naming the holder; resume takes over from a dead
holder at once and refuses while the holder lives."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

NAME = "contested"
# Six stages of 1 s each: long enough for the runs to overlap.
SLOW = ("--target", "noop", "-C", "sleep_s=1")
BUSY = re.compile(
    r"endpoint 'contested' is busy with deployment (?P<id>\d+) "
    r"\(owner (?P<owner>\S+), since (?P<since>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)\)"
)


@pytest.fixture
def store(db_url: str, orch: Any) -> Any:
    orch.db_url = db_url
    return orch


def test_two_concurrent_deploys_one_runs(store: Any, example_model: Path) -> None:
    processes = [store.spawn("deploy", str(example_model), "--name", NAME, *SLOW) for _ in range(2)]
    results = [(p, *store.finish(p)) for p in processes]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 3], [(p.returncode, err[-2000:]) for p, _, err in results]
    (winner, _, _), = [r for r in results if r[0].returncode == 0]
    (_, _, loser_err), = [r for r in results if r[0].returncode == 3]

    assert "Traceback" not in loser_err
    assert loser_err.startswith("Error: "), loser_err
    match = BUSY.search(loser_err)
    assert match, loser_err
    assert match["id"] == "1"
    assert f"/pid:{winner.pid}/" in match["owner"]
    assert "orchestrate cancel 1" in loser_err

    rows = store.json("list")
    assert [(r["id"], r["status"]) for r in rows] == [(1, "succeeded")]
    attempts = store.deployment(1)["attempts"]
    assert {a["runner"] for a in attempts} == {match["owner"]}


def _wait_running(store: Any) -> dict[str, Any]:
    """Until deployment 1 runs one of its first stages."""
    record: dict[str, Any] = store.wait_for(
        1, lambda r: r["status"] == "running" and any(a["status"] == "running" and a["stage"] in ("build", "push")
                                                      for a in r["attempts"]),
        timeout=60, what="build or push running")
    return record


def test_resume_refused_while_holder_alive(store: Any, example_model: Path) -> None:
    runner = store.spawn("deploy", str(example_model), "--name", NAME, *SLOW)
    try:
        _wait_running(store)
        refused = store.run("resume", "1")
        assert refused.returncode == 3, store.describe(refused)
        match = BUSY.search(refused.stderr)
        assert match and match["id"] == "1" and f"/pid:{runner.pid}/" in match["owner"], refused.stderr
        _, err = store.finish(runner)
    finally:
        store.stop(runner)
    assert runner.returncode == 0, err
    record = store.deployment(1)
    assert record["status"] == "succeeded"
    # The refused resume left no trace in the attempts.
    assert len({a["runner"] for a in record["attempts"]}) == 1


def test_resume_takes_over_from_a_dead_holder_at_once(store: Any, example_model: Path) -> None:
    runner = store.spawn("deploy", str(example_model), "--name", NAME, *SLOW)
    try:
        _wait_running(store)
        runner.send_signal(signal.SIGKILL)
        store.finish(runner)
    finally:
        store.stop(runner)
    assert runner.returncode == -signal.SIGKILL

    lease = store.json("status", NAME)["lease"]
    assert lease is not None and lease["holder_gone"] is True
    # The lease itself is still unexpired (30 s TTL): only the dead pid frees it.
    started = time.monotonic()
    resumed = store.run("resume", "1")
    took = time.monotonic() - started
    assert resumed.returncode == 0, store.describe(resumed)
    # Five remaining 1 s stages at most; waiting out the lease would add ~30 s.
    assert took < 20, f"resume took {took:.1f}s: it waited for the lease to expire"
    record = store.deployment(1)
    assert record["status"] == "succeeded"
    # Killed in a stage (almost always): that attempt is abandoned and the stage run again.
    abandoned = [a for a in record["attempts"] if a["status"] == "abandoned"]
    assert len(abandoned) <= 1, abandoned
    for attempt in abandoned:
        assert attempt["error_kind"] == "crashed"
        again = [a["status"] for a in record["attempts"] if a["stage"] == attempt["stage"]]
        assert again == ["abandoned", "succeeded"], record["attempts"]
    assert len({a["runner"] for a in record["attempts"]}) == 2
    # A second deploy still finds the endpoint free afterwards.
    again = store.run("deploy", str(example_model), "--name", NAME, "--target", "noop")
    assert again.returncode == 0, store.describe(again)
