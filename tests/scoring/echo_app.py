"""A WSGI application that answers each request with what the server framed: its method,
request target and body (for the differential framing test, served by ``scoring._worker``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    answer = json.dumps(
        {
            "method": environ["REQUEST_METHOD"],
            "target": environ["RAW_URI"],
            "body": base64.b64encode(body).decode("ascii"),
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))]
    )
    return [answer]
