"""Prometheus metrics shared by every gunicorn worker of one server.

The master allocates one anonymous shared memory block before forking; each worker writes
only its own slot (assigned by the master, reused when a worker is replaced, so counters stay
monotonic), and ``/metrics`` on any worker sums all slots. No files, no extra dependency, and
an increment costs a lock and a few float additions.
"""

from __future__ import annotations

import mmap
import os
import threading
from bisect import bisect_left
from collections.abc import Iterable

ROUTES = (
    "/ping",
    "/health",
    "/version",
    "/invocations",
    "/metrics",
    "/openapi.json",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{name}",
    "/v2/models/{name}/ready",
    "/v2/models/{name}/infer",
    "other",
)
STATUSES = (200, 400, 404, 405, 413, 415, 500, 503, 504, 0)  # 0: any other status
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ROUTE_INDEX = {route: i for i, route in enumerate(ROUTES)}
_STATUS_INDEX = {status: i for i, status in enumerate(STATUSES)}
_NR, _NS, _NB = len(ROUTES), len(STATUSES), len(BUCKETS) + 1  # +1: the +Inf bucket
# Slot layout, in float64 cells.
_REQ = 0
_BUCKET = _REQ + _NR * _NS
_SUM = _BUCKET + _NR * _NB
_INFLIGHT = _SUM + _NR
_SLOT = _INFLIGHT + 1


class Metrics:
    """Counters for one server; ``slots`` is how many processes may write at once."""

    def __init__(self, slots: int = 1) -> None:
        self._slots = max(1, slots)
        self._mem = mmap.mmap(-1, self._slots * _SLOT * 8)  # MAP_SHARED: survives fork
        self._cells = memoryview(self._mem).cast("d")
        self._base = 0
        self._lock = threading.Lock()
        self._free = list(range(self._slots - 1, 0, -1))  # slot 0: the master / no gunicorn
        self.model_load_seconds = 0.0
        self.pid = os.getpid()

    # ---- master side: slot bookkeeping across forks -------------------------------------

    def claim_slot(self) -> int:
        """A free slot for a worker about to fork (the last one when all are taken)."""
        return self._free.pop() if self._free else self._slots - 1

    def release_slot(self, slot: int) -> None:
        if slot and slot not in self._free:
            self._free.append(slot)

    def use_slot(self, slot: int) -> None:
        """In a new worker: write to ``slot`` from now on (its in-flight gauge restarts)."""
        self._base = slot * _SLOT
        self._lock = threading.Lock()
        self._cells[self._base + _INFLIGHT] = 0.0

    # ---- worker side ---------------------------------------------------------------------

    def started(self) -> None:
        with self._lock:
            self._cells[self._base + _INFLIGHT] += 1.0

    def finished(self, route: int, status: int, seconds: float) -> None:
        """Count one answered request on route index ``route``."""
        base = self._base
        cells = self._cells
        s = _STATUS_INDEX.get(status, _NS - 1)
        b = bisect_left(BUCKETS, seconds)  # the first bucket whose bound is >= seconds
        with self._lock:
            cells[base + _INFLIGHT] -= 1.0
            cells[base + _REQ + route * _NS + s] += 1.0
            cells[base + _BUCKET + route * _NB + b] += 1.0
            cells[base + _SUM + route] += seconds

    # ---- exposition ----------------------------------------------------------------------

    def _totals(self) -> list[float]:
        cells = self._cells
        totals = [0.0] * _SLOT
        for slot in range(self._slots):
            base = slot * _SLOT
            for i in range(_SLOT):
                totals[i] += cells[base + i]
        return totals

    def render(self, model_name: str) -> str:
        """Everything in the Prometheus text exposition format (version 0.0.4)."""
        t = self._totals()
        out: list[str] = []
        out += _header("scoring_requests_total", "counter", "Requests answered, by route and status.")
        for r, route in enumerate(ROUTES):
            for s, status in enumerate(STATUSES):
                n = t[_REQ + r * _NS + s]
                if n:
                    label = str(status) if status else "other"
                    out.append(f'scoring_requests_total{{route="{route}",status="{label}"}} {n:.0f}')
        out += _header("scoring_request_errors_total", "counter", "Requests answered 4xx or 5xx.")
        for r, route in enumerate(ROUTES):
            n = sum(t[_REQ + r * _NS + s] for s, st in enumerate(STATUSES) if st != 200)
            if n:
                out.append(f'scoring_request_errors_total{{route="{route}"}} {n:.0f}')
        out += _header("scoring_request_duration_seconds", "histogram", "Time to answer, by route.")
        for r, route in enumerate(ROUTES):
            counts = t[_BUCKET + r * _NB : _BUCKET + (r + 1) * _NB]
            total = sum(counts)
            if not total:
                continue
            running = 0.0
            for bound, n in zip((*BUCKETS, "+Inf"), counts):
                running += n
                out.append(f'scoring_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} {running:.0f}')
            out.append(f'scoring_request_duration_seconds_sum{{route="{route}"}} {t[_SUM + r]!r}')
            out.append(f'scoring_request_duration_seconds_count{{route="{route}"}} {total:.0f}')
        out += _header("scoring_requests_in_flight", "gauge", "Requests being answered now.")
        out.append(f"scoring_requests_in_flight {max(t[_INFLIGHT], 0.0):.0f}")
        out += _header("scoring_model_load_seconds", "gauge", "Time the model took to load.")
        out.append(f'scoring_model_load_seconds{{model="{_escape(model_name)}"}} {self.model_load_seconds!r}')
        return "\n".join(out) + "\n"


def _header(name: str, kind: str, text: str) -> Iterable[str]:
    return (f"# HELP {name} {text}", f"# TYPE {name} {kind}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
