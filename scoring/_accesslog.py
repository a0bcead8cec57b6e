"""Structured access logs: one JSON object per answered request, on standard output."""

from __future__ import annotations

import sys
import threading
import time
from json.encoder import encode_basestring as _quote
from typing import IO


class AccessLog:
    """Writes one line per request; ``stream`` defaults to standard output at write time.

    The line is formatted by hand (it is on every request's path): the timestamp's seconds
    once a second, strings escaped by the JSON encoder's own function, as
    ``json.dumps(..., ensure_ascii=False)`` would.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._second = -1
        self._prefix = ""

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
        second = int(now)
        if second != self._second:
            self._prefix = '{"time":"' + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        line = (
            f'{self._prefix}.{int(now % 1 * 1000):03d}Z","request_id":{_quote(request_id)},'
            f'"method":{_quote(method)},"path":{_quote(path[:500])},"status":{status:d},'
            f'"duration_ms":{round(seconds * 1000, 3)!r},"remote":{_quote(remote)},'
            f'"bytes_in":{bytes_in:d}}}\n'
        )
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(line)
            stream.flush()
