"""The Flask application: routes of the MLflow scoring protocol, the Open Inference Protocol,
``/metrics`` and ``/openapi.json``, JSON errors, request ids, access logs, limits.

Everything that depends only on the model (signature converters, metadata documents, the
OpenAPI document, route labels) is computed in ``create_app``; a request pays for its own data.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from random import getrandbits as _random_bits
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from scoring import _json
from scoring._accesslog import AccessLog
from scoring._config import ServerConfig, load_config
from scoring._errors import (
    InvalidInput,
    ModelError,
    RequestTimeout,
    ScoringError,
)
from scoring._invocations import JSON, media_type, no_cycle_collection, parse_csv, parse_json, read_body
from scoring._metrics import ROUTE_INDEX, Metrics
from scoring._model import LoadedModel, load_model
from scoring._version import __version__

log = logging.getLogger("scoring")

_JSON_MIME = "application/json"
_HTTP_ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def error_body(error_code: str, message: str) -> bytes:
    return _json.dumps({"error_code": error_code, "message": message})


class WorkPool:
    """Runs a request's work on a per-process thread pool, so a request that overruns the
    timeout is answered 504 on time (the work itself cannot be interrupted; it finishes in
    the background while the pool's other threads keep serving)."""

    def __init__(self, timeout: float, threads: int) -> None:
        self.timeout = timeout
        self._threads = threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()
        if not timeout:
            # No limit: run in the request's own thread and skip two thread switches.
            self.run = _call  # type: ignore[method-assign]

    def disable(self) -> None:
        """Run work in the caller's thread: the server enforces the timeout itself
        (``scoring._worker``)."""
        self.run = _call  # type: ignore[method-assign]

    def _get_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        # A pool's threads do not survive fork: each worker makes its own on first use.
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=self._threads, thread_name_prefix="scoring-predict"
                    )
                    self._pid = pid
        assert self._pool is not None
        return self._pool

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        future = self._get_pool().submit(fn, *args)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise timeout_error(self.timeout) from None

    def shutdown(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.shutdown(wait=False, cancel_futures=True)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def timeout_error(timeout: float) -> RequestTimeout:
    return RequestTimeout(f"the request took longer than the {timeout:g} s limit (ORCHESTRATE_TIMEOUT)")


class Scorer:
    """The model-facing work of one request, without Flask: body in, response body out."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.enforcer = model.enforcer

    def invocations(self, body: bytes, mime: str) -> tuple[bytes, list[str]]:
        with no_cycle_collection():
            if mime == JSON:
                data, params = parse_json(body)
            else:
                data, params = parse_csv(body, self.enforcer), None
            enforced = self.enforcer.enforce(data)
            del data  # freed now, by reference counting, not walked by the collector later
        predictions = self.predict(enforced.data, self.enforcer.params(params))
        try:
            return _json.predictions_body(predictions), enforced.ignored
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"the model returned {type(predictions).__name__}, which cannot be written as JSON: {exc}"
            ) from None

    def predict(self, data: Any, params: dict[str, Any] | None) -> Any:
        try:
            return self.model.predict(data, params)
        except ScoringError:
            raise
        except Exception as exc:
            if not self.model.direct and _is_mlflow_input_error(exc):
                # MLflow enforced the schema here and rejected the input.
                raise InvalidInput(_first_line(getattr(exc, "message", str(exc)))) from None
            columns = getattr(self.enforcer, "columns", None) or ()
            fault = input_fault(data, [c.name for c in columns])
            if fault is not None:
                # What MLflow answers 400 too: the input, not the model, is what to fix.
                raise InvalidInput(
                    f"{fault}, which the model does not accept (it raised "
                    f"{type(exc).__name__}: {_first_line(exc, 200)})"
                ) from None
            log.exception("model raised while predicting")
            raise ModelError(f"the model raised {type(exc).__name__}: {_first_line(exc)}") from None


def input_fault(data: Any, columns: list[str]) -> str | None:
    """What in ``data`` (a DataFrame, an array or a dict of arrays) a model is likely to
    refuse: no rows, or a NaN or infinite value, named by column and row. ``columns`` names
    a 2-D array's columns (the signature's, when the array is the model's input)."""
    import numpy as np

    if hasattr(data, "columns") and hasattr(data, "iloc"):
        if len(data) == 0:
            return "the request has no rows"
        named = [(f"column {str(name)!r}", data[name]) for name in data.columns]
    elif isinstance(data, dict):
        named = [(f"input {str(name)!r}", value) for name, value in data.items()]
    else:
        named = [("the input", data)]
    for label, value in named:
        try:
            values = np.asarray(value)
        except (TypeError, ValueError):  # ragged lists, objects numpy cannot hold
            continue
        if values.ndim and len(values) == 0:
            return "the request has no rows"
        if values.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(values)
        if not bad.any():
            continue
        where = np.unravel_index(int(bad.argmax()), bad.shape)
        what = "NaN" if np.isnan(values[where]) else "an infinite value (or one past float range)"
        if values.ndim == 2 and len(columns) == values.shape[1]:
            label = f"column {columns[int(where[1])]!r}"
        return f"{label} holds {what} at row {int(where[0]) if where else 0}"
    return None


def _is_mlflow_input_error(exc: Exception) -> bool:
    return type(exc).__name__ == "MlflowException" and getattr(exc, "error_code", "") in (
        "INVALID_PARAMETER_VALUE",
        "BAD_REQUEST",
    )


def _first_line(exc: object, limit: int = 500) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def route_index(path: str) -> int:
    """The metrics label index of a request path (model names folded into ``{name}``)."""
    index = ROUTE_INDEX.get(path)
    if index is not None:
        return index
    if path.startswith("/v2/models/"):
        rest = path[len("/v2/models/") :]
        if rest.endswith("/infer"):
            return ROUTE_INDEX["/v2/models/{name}/infer"]
        if rest.endswith("/ready"):
            return ROUTE_INDEX["/v2/models/{name}/ready"]
        return ROUTE_INDEX["/v2/models/{name}"]
    return ROUTE_INDEX["other"]


class Observe:
    """WSGI middleware: request id, metrics and the access log for every request, including
    the ones Flask answers itself (404, 405).

    ``POST /invocations`` is answered here, by the same ``invocations`` function the Flask
    route calls, without building Flask's request context: that is a sixth of the server's
    own time per request for a small model. Every other request goes to Flask.

    A server that answers timeouts itself (``scoring._worker``) puts a ``scoring.claim``
    callable in the environ, true for whoever answers first; a request is counted and logged
    only by the side that claims it: here, or ``timeout_answer``.
    """

    def __init__(
        self,
        app: Any,
        metrics: Metrics,
        access_log: AccessLog | None,
        invocations: Callable[[dict[str, Any]], tuple[int, list[tuple[str, str]], bytes]],
        timeout: float,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.invocations = invocations
        self.timeout = timeout

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID")
        if not request_id or len(request_id) > 200 or not request_id.isprintable():
            request_id = f"{_random_bits(128):032x}"
        environ["scoring.request_id"] = request_id
        status = [500]
        self.metrics.started()
        try:
            if environ.get("PATH_INFO") == "/invocations" and environ["REQUEST_METHOD"] == "POST":
                code, headers, body = self.invocations(environ)
                status[0] = code
                headers.append(("X-Request-ID", request_id))
                start_response(_STATUS_LINES[code], headers)
                return [body]

            def _start_response(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                status[0] = int(status_line[:3])
                headers.append(("X-Request-ID", request_id))
                return start_response(status_line, headers, exc_info)

            return self.app(environ, _start_response)
        finally:
            claim = environ.get("scoring.claim")
            if claim is None or claim():
                environ["scoring.answered"] = True
                self._record(environ, status[0], time.perf_counter() - start)

    def _record(self, environ: dict[str, Any], status: int, seconds: float) -> None:
        path = environ.get("PATH_INFO", "")
        self.metrics.finished(route_index(path), status, seconds)
        if self.access_log is not None:
            length = environ.get("CONTENT_LENGTH") or "0"
            self.access_log.write(
                request_id=environ["scoring.request_id"],
                method=environ.get("REQUEST_METHOD", ""),
                path=path,
                status=status,
                seconds=seconds,
                remote=environ.get("REMOTE_ADDR", ""),
                bytes_in=int(length) if length.isdigit() else 0,
            )

    def refused(self, environ: dict[str, Any], status: int) -> None:
        """Count and log a request the server refused before the application saw it (a
        malformed request, a limit passed); ``environ`` holds what is known of it."""
        environ["scoring.request_id"] = f"{_random_bits(128):032x}"
        self.metrics.started()
        self._record(environ, status, 0.0)

    def timeout_answer(self, environ: dict[str, Any], seconds: float) -> tuple[str, list[tuple[str, str]], bytes]:
        """The 504 for a request still running at its deadline, counted and logged here;
        the caller must have won ``environ["scoring.claim"]``."""
        from scoring._v2 import v2_error_body

        exc = timeout_error(self.timeout)
        if environ.get("PATH_INFO", "").startswith("/v2/"):
            body = v2_error_body(exc)
        else:
            body = error_body(exc.error_code, exc.message)
        environ.setdefault("scoring.request_id", f"{_random_bits(128):032x}")
        self._record(environ, 504, seconds)
        headers = [
            ("Content-Type", _JSON_MIME),
            ("Content-Length", str(len(body))),
            ("X-Request-ID", environ["scoring.request_id"]),
        ]
        return _STATUS_LINES[504], headers, body


_STATUS_LINES = {code: f"{code} {HTTPStatus(code).phrase}" for code in (200, 400, 404, 413, 415, 500, 503, 504)}


def make_invocations(
    scorer: Scorer, runner: WorkPool, max_bytes: int
) -> Callable[[dict[str, Any]], tuple[int, list[tuple[str, str]], bytes]]:
    """``POST /invocations`` as a function of the WSGI environ: (status, headers, body)."""
    invoke = scorer.invocations

    def invocations(environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            mime = media_type(environ.get("CONTENT_TYPE"))
            body = read_body(environ, max_bytes)
            out, ignored = runner.run(invoke, body, mime)
        except ScoringError as exc:
            out = error_body(exc.error_code, exc.message)
            return (
                exc.status,
                [("Content-Type", _JSON_MIME), ("Content-Length", str(len(out)))],
                out,
            )
        except Exception:
            log.exception("unexpected error answering POST /invocations")
            out = error_body("INTERNAL_ERROR", "internal server error")
            return 500, [("Content-Type", _JSON_MIME), ("Content-Length", str(len(out)))], out
        headers = [("Content-Type", _JSON_MIME), ("Content-Length", str(len(out)))]
        if ignored:
            headers.append(("X-Ignored-Columns", _json.dumps(ignored[:100]).decode()))
        return 200, headers, out

    return invocations


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """See ``scoring.create_app``."""
    overrides = dict(config or {})
    model: LoadedModel | None = overrides.pop("model", None)
    metrics: Metrics | None = overrides.pop("metrics", None)
    cfg = load_config(overrides)
    if model is None:
        model = load_model(cfg.model_dir, cfg.loader)
    if metrics is None:
        metrics = Metrics(1)
    metrics.model_load_seconds = model.load_seconds

    app = Flask("scoring")
    # No redirects (werkzeug answers them in HTML, outside the error handlers): "//" in a
    # path is just part of an unknown model name, answered 404 in JSON.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_request_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False  # OPTIONS: 405 in JSON, like any other
    app.json.sort_keys = False  # type: ignore[attr-defined]
    scorer = Scorer(model)
    runner = WorkPool(cfg.timeout, max(cfg.threads, 1) * 2)
    app.extensions["scoring"] = {
        "config": cfg,
        "model": model,
        "metrics": metrics,
        "runner": runner,
        "scorer": scorer,
    }
    _register_mlflow_routes(app, cfg, model, make_invocations(scorer, runner, cfg.max_request_bytes))
    _register_operations(app, cfg, model, metrics)
    from scoring._v2 import register_v2_routes

    register_v2_routes(app, cfg, model, scorer, runner)
    _register_errors(app)
    invocations = make_invocations(scorer, runner, cfg.max_request_bytes)
    observe = Observe(app.wsgi_app, metrics, AccessLog() if cfg.access_log else None, invocations, cfg.timeout)
    app.wsgi_app = observe  # type: ignore[method-assign]
    app.extensions["scoring"]["observe"] = observe
    return app


def _json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype=_JSON_MIME)


def _register_mlflow_routes(
    app: Flask,
    cfg: ServerConfig,
    model: LoadedModel,
    invocations_fn: Callable[[dict[str, Any]], tuple[int, list[tuple[str, str]], bytes]],
) -> None:
    ping_body = b"\n"
    version_body = _json.dumps(
        {
            "server": "orchestrate-scoring",
            "version": __version__,
            "model": {
                "name": cfg.served_model_name,
                "flavors": list(model.flavors),
                "loader": model.loader,
                "mlflow_version": model.mlflow_version,
            },
        }
    )

    @app.get("/ping")
    def ping() -> Response:
        return _json_response(ping_body)

    @app.get("/health")
    def health() -> Response:
        return _json_response(ping_body)

    @app.get("/version")
    def version() -> Response:
        return _json_response(version_body)

    @app.post("/invocations")
    def invocations() -> Response:
        # Normally answered by ``Observe`` before Flask; this route keeps the URL map whole
        # (405 for GET, the OpenAPI view) and serves the app when mounted without it.
        status, headers, body = invocations_fn(request.environ)
        return Response(body, status=status, headers=headers)


def _register_operations(app: Flask, cfg: ServerConfig, model: LoadedModel, metrics: Metrics) -> None:
    name = cfg.served_model_name

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(name), mimetype="text/plain; version=0.0.4")

    openapi_body: list[bytes] = []

    @app.get("/openapi.json")
    def openapi() -> Response:
        if not openapi_body:
            from scoring._openapi import openapi_document

            openapi_body.append(_json.dumps(openapi_document(cfg, model)))
        return _json_response(openapi_body[0])


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ScoringError)
    def scoring_error(exc: ScoringError) -> Response:
        return _json_response(error_body(exc.error_code, exc.message), exc.status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            message = "the request body is larger than the limit (ORCHESTRATE_MAX_REQUEST_BYTES)"
        else:
            message = exc.description or exc.name
        code = _HTTP_ERROR_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
        response = _json_response(error_body(code, message), status)
        if status == 405:
            allowed: Iterable[str] = getattr(exc, "valid_methods", None) or ()
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return _json_response(error_body("INTERNAL_ERROR", "internal server error"), 500)
