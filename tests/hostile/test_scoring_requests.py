"""Hostile and careless requests to the scoring server (issue 11's scoring findings): each
must get a clear 4xx answer, at once, counted and logged, never a 500, a hang or silence.

| finding | what was wrong on 1407a72 | test |
|---|---|---|
| C9 | a JSON integer of over 4,300 digits: 500 | ``test_an_integer_past_the_digit_limit_is_400`` |
| C10 | a 1M-row request stalls ``/ping`` for seconds | ``tests/scoring/test_invocations.py::test_the_collector_does_not_run_while_a_large_body_is_decoded``, ``tests/compat/test_fast_paths.py`` (slices); the wait itself: benchmark ``scoring_worker_before_after.py --stall`` |
| B (values) | NaN, Infinity, -Infinity, 1e999 (JSON, CSV): 500 | ``test_values_the_model_refuses_are_400_naming_the_column`` |
| B (rows) | zero rows, header-only CSV: 500 | ``test_no_rows_is_400`` |
| B (bare LF) | a head ended by bare LFs: never answered | ``test_bare_lf_heads_are_answered_400`` |
| B (chunk size) | a 16-hex-digit chunk size: waits 30 s | ``test_a_chunk_size_past_the_limit_is_413_at_once`` |
| B (log) | HTTP-layer refusals in neither the access log nor ``/metrics`` | ``test_refusals_are_logged_and_counted`` |
| K (method) | lower-case ``get`` routed as GET | ``test_lower_case_methods_are_refused`` |

C10's wait is a question of time, which the project measures with benchmark scripts that
print figures, not with timed assertions; the tests check its causes: no garbage collection
while a body is decoded, conversions in slices that give what one numpy call gives.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.scoring.conftest import IRIS_COLUMNS, Server, free_port, start_server

pytestmark = pytest.mark.slow

SPLIT = json.dumps(
    {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [["VALUE", 1.0, 1.0, 1.0]]}}
)
SPLIT = SPLIT.replace('"VALUE"', "%s")


@pytest.fixture(scope="module")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    path = tmp_path_factory.mktemp("hostile-scoring") / "iris"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y = load_iris(return_X_y=True, as_frame=True)
        model = LogisticRegression(max_iter=1000).fit(X, y)
        mlflow.sklearn.save_model(model, path, signature=infer_signature(X, model.predict(X)))
    return path


@pytest.fixture(scope="module")
def server(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server (one worker, access log on) for the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("hostile-server") / "server.log"
    cmd = [sys.executable, "-m", "scoring", "serve", str(iris_dir), "--port", str(port)]
    running = start_server([*cmd, "--workers", "1", "--max-request-bytes", "100000"], port, log)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _post(server: Server, body: bytes, mime: str = "application/json") -> requests.Response:
    return requests.post(
        server.url + "/invocations", data=body, headers={"Content-Type": mime}, timeout=10
    )


def _answer_within(server: Server, data: bytes, seconds: float = 5.0) -> bytes:
    """What the server sends for ``data`` (the connection left open) before it closes, or
    what it sent by the time ``seconds`` passed (``b""``: no answer at all)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=seconds) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def test_an_integer_past_the_digit_limit_is_400(server: Server) -> None:
    response = _post(server, b'{"inputs": [[' + b"1" * 5000 + b", 1, 1, 1]]}")
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert "4300 digits" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "mime", "what"),
    [
        (SPLIT % "NaN", "application/json", "NaN"),
        (SPLIT % "Infinity", "application/json", "infinite"),
        (SPLIT % "-Infinity", "application/json", "infinite"),
        (SPLIT % "1e999", "application/json", "infinite"),
        (
            json.dumps({"dataframe_records": [dict.fromkeys(IRIS_COLUMNS, 1.0)]}).replace(
                "1.0", "NaN", 1
            ),
            "application/json",
            "NaN",
        ),
        (",".join(IRIS_COLUMNS) + "\nnan,1,1,1\n", "text/csv", "NaN"),
        (",".join(IRIS_COLUMNS) + "\ninf,1,1,1\n", "text/csv", "infinite"),
    ],
)
def test_values_the_model_refuses_are_400_naming_the_column(
    server: Server, body: str, mime: str, what: str
) -> None:
    response = _post(server, body.encode(), mime)
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert "column 'sepal length (cm)'" in message and what in message and "row 0" in message


@pytest.mark.parametrize(
    ("body", "mime"),
    [
        (
            json.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": []}}),
            "application/json",
        ),
        ('{"dataframe_records": []}', "application/json"),
        (",".join(IRIS_COLUMNS) + "\n", "text/csv"),
    ],
)
def test_no_rows_is_400(server: Server, body: str, mime: str) -> None:
    response = _post(server, body.encode(), mime)
    assert response.status_code == 400, response.text
    assert "no rows" in response.json()["message"]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /ping HTTP/1.1\nHost: x\n\n",
        b"GET /ping HTTP/1.1\r\nHost: x\n\n",
        b"GET /ping HTTP/1.1\nHost: x\r\n\r\n",
    ],
)
def test_bare_lf_heads_are_answered_400(server: Server, head: bytes) -> None:
    answer = _answer_within(server, head)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"Connection: close" in answer


def test_a_chunk_size_past_the_limit_is_413_at_once(server: Server) -> None:
    started = time.monotonic()
    answer = _answer_within(
        server,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        seconds=10,
    )
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b"PAYLOAD_TOO_LARGE" in answer
    assert time.monotonic() - started < 10  # answered, not closed at the 30 s I/O timeout


def _count(metrics: str, route: str, status: str) -> float:
    prefix = f'scoring_requests_total{{route="{route}",status="{status}"}} '
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


def _metrics(server: Server) -> str:
    return requests.get(server.url + "/metrics", timeout=10).text


def test_refusals_are_logged_and_counted(server: Server) -> None:
    before = _metrics(server)
    refused = {
        b"POST /invocations HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab": (
            "/invocations",
            "400",
        ),
        b"GET /ping HTTP/1.1\nHost: x\n\n": ("/ping", "400"),
        b"GET /ping?" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n": ("/ping", "other"),  # 414
    }
    for data in refused:
        assert _answer_within(server, data).startswith(b"HTTP/1.1 4"), data
    after = _metrics(server)
    for route, status in set(refused.values()):
        wanted = sum(1 for value in refused.values() if value == (route, status))
        assert _count(after, route, status) - _count(before, route, status) == wanted, after
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    logged = {(line["method"], line["path"], line["status"]) for line in lines}
    assert ("POST", "/invocations", 400) in logged
    assert ("GET", "/ping", 400) in logged
    assert any(status == 414 for _, _, status in logged)


@pytest.mark.parametrize("method", [b"get", b"Get", b"pOST"])
def test_lower_case_methods_are_refused(server: Server, method: bytes) -> None:
    answer = _answer_within(server, method + b" /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"BAD_REQUEST" in answer


def test_valid_requests_still_answered(server: Server) -> None:
    """The other tests' server answers ordinary requests (so their refusals mean something)."""
    assert requests.get(server.url + "/ping", timeout=10).status_code == 200
    response = _post(server, (SPLIT % "5.1").encode())
    assert response.status_code == 200 and response.json() == {"predictions": [0]}
