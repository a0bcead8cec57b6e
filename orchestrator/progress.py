"""Live stage progress: on a terminal one line per stage, rewritten in place from running to
its end state and time; piped, plain event lines."""

from __future__ import annotations

import sys
from typing import TextIO

from .states import LIFECYCLE_EVENTS, STAGE_EVENTS, EventKind
from .store import EventRecord

_SYMBOLS = {"started": "…", "succeeded": "✓", "failed": "✗", "skipped": "–"}
_CLEAR_LINE = "\r\033[K"


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._open_line = False  # a "running" line waiting to be rewritten

    def _write(self, text: str, *, end: str = "\n") -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + end)
        self.stream.flush()

    def detail(self, message: str) -> None:
        for line in message.splitlines():
            self._write(f"    {line}")

    def on_event(self, event: EventRecord) -> None:
        if not self.tty:
            if event.kind in STAGE_EVENTS or event.kind in LIFECYCLE_EVENTS:
                self._write(f"deployment {event.deployment_id}: {event.message}")
            return
        if event.kind in STAGE_EVENTS:
            state = STAGE_EVENTS[EventKind(event.kind)]
            stage = str(event.data.get("stage", "?"))
            took = event.data.get("duration_s")
            timing = f"  {took:.2f}s" if isinstance(took, (int, float)) else ""
            line = f"  {_SYMBOLS.get(state, '?')} {stage:<16}{'running' if state == 'started' else state}{timing}"
            if state == "started":
                self._write(line, end="")
                self._open_line = True
                return
            if self._open_line:
                self.stream.write(_CLEAR_LINE)
                self._open_line = False
            self._write(line)
            if state == "failed":
                self.detail(event.message)
        elif event.kind in LIFECYCLE_EVENTS:
            self._write(f"  {event.message}")
