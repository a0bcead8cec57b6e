"""Live stage progress: a line per stage with its state and time; plain lines when piped."""

from __future__ import annotations

import sys
from typing import TextIO

from .tables import Event

_SYMBOLS = {"started": "…", "succeeded": "✓", "failed": "✗", "skipped": "–"}


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def detail(self, message: str) -> None:
        for line in message.splitlines():
            self._write(f"    {line}")

    def on_event(self, event: Event) -> None:
        if event.kind.startswith("stage_"):
            state = event.kind.removeprefix("stage_")
            stage = event.data.get("stage", "?")
            if self.tty:
                took = event.data.get("duration_s")
                timing = f" {took:.2f}s" if isinstance(took, (int, float)) else ""
                self._write(f"  {_SYMBOLS.get(state, '?')} {stage:<16}{state}{timing}")
                if state in ("failed",):
                    self.detail(event.message)
            else:
                self._write(f"deployment {event.deployment_id}: {event.message}")
        elif event.kind.startswith("deployment_") or event.kind in ("traffic_shifted", "cancel_requested"):
            self._write(f"deployment {event.deployment_id}: {event.message}" if not self.tty
                        else f"  {event.message}")
