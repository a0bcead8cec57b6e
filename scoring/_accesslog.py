"""Structured access logs: one JSON object per answered request, on standard output."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO


class AccessLog:
    """Writes one line per request; ``stream`` defaults to standard output at write time."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(
        self,
        *,
        request_id: str,
        method: str,
        path: str,
        status: int,
        seconds: float,
        remote: str,
        bytes_in: int,
    ) -> None:
        now = time.time()
        line = json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now % 1 * 1000):03d}Z",
                "request_id": request_id,
                "method": method,
                "path": path[:500],
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "remote": remote,
                "bytes_in": bytes_in,
            },
            ensure_ascii=False,
        )
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(line + "\n")
            stream.flush()
