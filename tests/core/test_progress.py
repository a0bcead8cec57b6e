"""Progress output: rewritten stage lines on a terminal, plain event lines when piped."""

from __future__ import annotations

import io

from orchestrator.progress import Progress
from orchestrator.store import EventRecord
from orchestrator.store.tables import utcnow


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _event(kind: str, message: str, **data: object) -> EventRecord:
    return EventRecord(time=utcnow(), actor="t", kind=kind, message=message, endpoint_id=1, deployment_id=4,
                       data=dict(data))


def test_terminal_rewrites_the_running_line_with_state_and_time() -> None:
    stream = _Terminal()
    progress = Progress(stream)
    progress.on_event(_event("stage_started", "build attempt 1 started", stage="build"))
    progress.on_event(_event("stage_succeeded", "build attempt 1 succeeded", stage="build", duration_s=1.5))
    assert stream.getvalue() == "  … build           running\r\033[K  ✓ build           succeeded  1.50s\n"


def test_detail_lines_close_an_open_running_line_first() -> None:
    stream = _Terminal()
    progress = Progress(stream)
    progress.on_event(_event("stage_started", "build attempt 1 started", stage="build"))
    progress.detail("building environment")
    assert stream.getvalue().endswith("running\n    building environment\n")


def test_piped_output_is_plain_event_lines() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    progress.on_event(_event("stage_failed", "build attempt 1 failed (permanent): boom", stage="build"))
    progress.on_event(_event("resource_planned", "process x planned"))
    assert stream.getvalue() == "deployment 4: build attempt 1 failed (permanent): boom\n"
