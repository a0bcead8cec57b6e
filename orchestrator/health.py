"""Health checks shared by every target that serves our scoring server over HTTP."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import PermanentTargetError
from .model.mlmodel import load_input_example


def http(
    method: str, url: str, body: bytes | None = None, content_type: str | None = None, timeout: float = 10.0
) -> tuple[int, str, bytes]:
    """One HTTP request with the standard library; returns (status, content type, body)."""
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def wait_until_ready(
    base_url: str,
    *,
    timeout_s: float,
    still_starting: Callable[[], bool],
    failure_details: Callable[[], str],
) -> float:
    """Poll `/ping` until 200; returns seconds waited. Fails early when the server died."""
    started = time.monotonic()
    delay = 0.05
    while True:
        try:
            status, _type, _body = http("GET", f"{base_url}/ping", timeout=2.0)
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        if not still_starting():
            raise PermanentTargetError(f"the scoring server exited before answering /ping:\n{failure_details()}")
        if time.monotonic() - started > timeout_s:
            raise PermanentTargetError(
                f"the scoring server did not answer /ping within {timeout_s:.0f}s:\n{failure_details()}",
                hint="raise -C startup_timeout=SECONDS if the model is slow to load",
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def smoke_predict(
    base_url: str, model_dir: Path, example: str | None, failure_details: Callable[[], str]
) -> dict[str, Any]:
    """Send the model's input example; check the answer has one prediction per input row."""

    def send(body: bytes) -> tuple[int, bytes]:
        status, _type, answer = http("POST", f"{base_url}/invocations", body, "application/json", timeout=60.0)
        return status, answer

    return smoke_predict_with(send, model_dir, example, failure_details)


def smoke_predict_with(
    send: Callable[[bytes], tuple[int, bytes]],
    model_dir: Path,
    example: str | None,
    failure_details: Callable[[], str],
) -> dict[str, Any]:
    """`smoke_predict` through `send` (a JSON body to /invocations -> status and answer), for a
    server reached some other way than a URL of this machine (the Kubernetes API's proxy)."""
    if example is None:
        return {"smoke_test": "skipped: the model has no input example"}
    body, rows = load_input_example(model_dir, example)
    started = time.monotonic()
    try:
        status, answer = send(body)
    except OSError as exc:
        raise PermanentTargetError(f"smoke prediction failed: {exc}\n{failure_details()}") from exc
    latency_ms = round((time.monotonic() - started) * 1000, 2)
    if status != 200:
        raise PermanentTargetError(
            f"smoke prediction with {example} answered HTTP {status}: {answer[:500].decode(errors='replace')}\n"
            f"{failure_details()}"
        )
    try:
        predictions = json.loads(answer)["predictions"]
    except (ValueError, KeyError, TypeError):
        raise PermanentTargetError(f"smoke prediction answer is not {{'predictions': ...}}: {answer[:300]!r}") from None
    count = len(predictions) if isinstance(predictions, list) else None
    if rows is not None and count is not None and count != rows:
        raise PermanentTargetError(f"smoke prediction returned {count} predictions for {rows} input rows")
    return {"smoke_test": example, "smoke_latency_ms": latency_ms, "smoke_predictions": count}


def check_new_server(
    base_url: str,
    *,
    timeout_s: float,
    still_starting: Callable[[], bool],
    failure_details: Callable[[], str],
    model_dir: Path,
    example: str | None,
    log: Callable[[str], None],
    what: str = "server",
) -> dict[str, Any]:
    """The health_check stage of a target serving our scoring server: ready, then a smoke
    prediction; the outputs record how long each took."""
    ready_s = wait_until_ready(
        base_url, timeout_s=timeout_s, still_starting=still_starting, failure_details=failure_details
    )
    log(f"{what} answered /ping after {ready_s:.2f}s")
    return {"ready_s": round(ready_s, 3), **smoke_predict(base_url, model_dir, example, failure_details)}
