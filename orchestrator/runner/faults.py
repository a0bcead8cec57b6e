"""Fault injection for tests and drills: ORCHESTRATE_FAULTS="stage:kind[:arg],...".

Kinds: `transient:N` (the first N attempts raise a retryable error), `permanent`,
`crash-before` / `crash-after` (SIGKILL this process at the stage boundary),
`crash-during:SECONDS` (SIGKILL this process that long into the stage).
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

from ..errors import ConfigError, PermanentTargetError, RetryableTargetError
from ..states import Stage

ENV_VAR = "ORCHESTRATE_FAULTS"
_KINDS = ("transient", "permanent", "crash-before", "crash-after", "crash-during")


@dataclass
class Fault:
    stage: Stage
    kind: str
    arg: float


class Faults:
    def __init__(self, spec: str) -> None:
        self._faults: list[Fault] = []
        self._fired: dict[int, int] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            stage, _, rest = item.partition(":")
            kind, _, arg = rest.partition(":")
            try:
                parsed = Fault(Stage(stage), kind, float(arg) if arg else 1.0)
            except ValueError:
                parsed = None
            if parsed is None or kind not in _KINDS:
                raise ConfigError(f"malformed {ENV_VAR} entry {item!r}", hint=__doc__.splitlines()[0])
            self._faults.append(parsed)

    @classmethod
    def from_env(cls) -> Faults:
        return cls(os.environ.get(ENV_VAR, ""))

    def _matching(self, stage: Stage, kind: str) -> list[Fault]:
        return [f for f in self._faults if f.stage == stage and f.kind == kind]

    def on_stage_start(self, stage: Stage) -> None:
        for _fault in self._matching(stage, "crash-before"):
            _kill_self()
        for fault in self._matching(stage, "crash-during"):
            timer = threading.Timer(fault.arg, _kill_self)
            timer.daemon = True
            timer.start()
        for fault in self._matching(stage, "transient"):
            fired = self._fired.get(id(fault), 0)
            if fired < fault.arg:
                self._fired[id(fault)] = fired + 1
                raise RetryableTargetError(f"injected transient fault {fired + 1} of {int(fault.arg)} in {stage.value}")
        for _fault in self._matching(stage, "permanent"):
            raise PermanentTargetError(f"injected permanent fault in {stage.value}")

    def crashes_after(self, stage: Stage) -> bool:
        """Whether `on_stage_end` will kill this process, so the runner records the stage first."""
        return bool(self._matching(stage, "crash-after"))

    def on_stage_end(self, stage: Stage) -> None:
        for _fault in self._matching(stage, "crash-after"):
            _kill_self()


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
