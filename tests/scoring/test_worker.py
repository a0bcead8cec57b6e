"""The scoring server's own gunicorn worker (``scoring._worker``) over real sockets: HTTP/1.1
framing, limits, timeouts answered by the supervisor, and slow requests not blocking others."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.scoring.conftest import IRIS_COLUMNS

pytestmark = pytest.mark.slow

IRIS_BODY = json.dumps(
    {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}
).encode()


def _exchange(port: int, data: bytes, *, until_close: bool = True, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if not until_close and b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split(" ")[1]), headers, raw[:length]))
        raw = raw[length:]
    return out


def _post(body: bytes, *, extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return (
        f"POST /invocations {version}\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_pipelined_requests_keep_alive_and_close(serve: Any, iris_model: Path) -> None:
    server = serve(iris_model, "--workers", "1")
    raw = _exchange(
        server.port,
        _post(IRIS_BODY)
        + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
        + _post(IRIS_BODY, extra="Connection: close\r\n"),
    )
    answers = _responses(raw)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert json.loads(answers[0][2]) == {"predictions": [0]}
    assert answers[1][2] == b"\n"
    assert answers[2][1]["connection"] == "close"
    assert all(headers["x-request-id"] and headers["date"] for _, headers, _ in answers)


def test_http10_chunked_expect_head_and_bad_requests(serve: Any, iris_model: Path) -> None:
    server = serve(iris_model, "--workers", "1")
    [(status, _, body)] = _responses(_exchange(server.port, _post(IRIS_BODY, version="HTTP/1.0")))
    assert status == 200 and json.loads(body) == {"predictions": [0]}

    half = len(IRIS_BODY) // 2
    chunked = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"%x\r\n" % half
        + IRIS_BODY[:half]
        + b"\r\n"
        + b"%x;ext=1\r\n" % (len(IRIS_BODY) - half)
        + IRIS_BODY[half:]
        + b"\r\n0\r\n\r\n"
    )
    [(status, _, body)] = _responses(_exchange(server.port, chunked))
    assert status == 200 and json.loads(body) == {"predictions": [0]}

    # Expect: 100-continue: the server says continue, then answers once the body arrives.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = _post(b"", extra="Expect: 100-continue\r\n")
        sock.sendall(head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(IRIS_BODY)))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(IRIS_BODY)
        time.sleep(0.2)
        [(status, _, body)] = _responses(sock.recv(65536))
        assert status == 200 and json.loads(body) == {"predictions": [0]}

    head_answer = _exchange(
        server.port, b"HEAD /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert head_answer.startswith(b"HTTP/1.1 200 ") and head_answer.endswith(b"\r\n\r\n")

    for bad, status_line in (
        (b"GARBAGE\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET / HTTP/2.0\r\n\r\n", b"HTTP/1.1 505 "),
        (b"GET /ping HTTP/1.1\r\nBad Header\r\n\r\n", b"HTTP/1.1 400 "),
        (b"POST /invocations HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"HTTP/1.1 501 "),
    ):
        answer = _exchange(server.port, bad)
        assert answer.startswith(status_line), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error_code"] == "BAD_REQUEST"
    assert requests.get(server.url + "/ping", timeout=5).status_code == 200


def test_too_large_is_413_without_reading_the_body(serve: Any, iris_model: Path) -> None:
    server = serve(iris_model, "--workers", "1", "--max-request-bytes", "1000")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = sock.recv(65536)
    [(status, headers, body)] = _responses(answer)
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error_code"] == "PAYLOAD_TOO_LARGE"
    big = requests.post(
        server.url + "/invocations",
        data=iter([b'{"inputs": [' + b"1," * 600 + b"1]}"]),  # chunked, over the limit
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert big.status_code == 413


def test_timeout_is_504_on_time_and_counted_once(serve: Any, custom_model: Path) -> None:
    server = serve(custom_model, "--workers", "1", "--threads", "2", "--timeout", "0.5")
    payload = {
        "dataframe_records": [{"x": 1.0, "n": 1, "label": "a", "flag": True}],
        "params": {"sleep": 3.0},
    }
    started = time.monotonic()
    response = requests.post(
        server.url + "/invocations", json=payload, headers={"X-Request-ID": "slow-1"}, timeout=10
    )
    took = time.monotonic() - started
    assert response.status_code == 504 and 0.45 < took < 1.5
    assert response.json() == {
        "error_code": "REQUEST_TIMEOUT",
        "message": "the request took longer than the 0.5 s limit (ORCHESTRATE_TIMEOUT)",
    }
    assert response.headers["X-Request-ID"] == "slow-1"
    # The other thread answers meanwhile; the model's late answer is thrown away.
    fast = {"dataframe_records": payload["dataframe_records"]}
    assert requests.post(server.url + "/invocations", json=fast, timeout=5).status_code == 200
    time.sleep(3)
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert 'scoring_requests_total{route="/invocations",status="504"} 1' in metrics
    assert 'scoring_requests_total{route="/invocations",status="200"} 1' in metrics
    v2 = requests.post(
        server.url + f"/v2/models/{custom_model.name}/infer",
        json={
            "inputs": [
                {"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "n", "shape": [1], "datatype": "INT64", "data": [1]},
                {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["a"]},
                {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [True]},
            ],
            "parameters": {"sleep": 3.0},
        },
        timeout=10,
    )
    assert v2.status_code == 504 and v2.json()["error_code"] == "REQUEST_TIMEOUT"
    assert "error" in v2.json()


def test_ping_not_stuck_behind_a_slow_prediction(serve: Any, custom_model: Path) -> None:
    server = serve(custom_model, "--workers", "1", "--threads", "2")
    payload = {
        "dataframe_records": [{"x": 1.0, "n": 1, "label": "a", "flag": True}],
        "params": {"sleep": 2.0},
    }
    result: dict[str, Any] = {}
    slow = threading.Thread(
        target=lambda: result.update(
            r=requests.post(server.url + "/invocations", json=payload, timeout=10)
        )
    )
    slow.start()
    time.sleep(0.5)
    with requests.Session() as session:  # the slow request's keep-alive peers too
        for _ in range(3):
            started = time.monotonic()
            assert session.get(server.url + "/ping", timeout=5).status_code == 200
            assert time.monotonic() - started < 0.5
    slow.join(10)
    assert result["r"].status_code == 200


def test_slow_upload_does_not_block_others(serve: Any, iris_model: Path) -> None:
    server = serve(iris_model, "--workers", "1", "--threads", "2")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(_post(IRIS_BODY)[: -len(IRIS_BODY) // 2])  # headers, half the body
        time.sleep(0.3)  # a thread is now waiting for the rest
        started = time.monotonic()
        assert requests.get(server.url + "/ping", timeout=5).status_code == 200
        assert time.monotonic() - started < 0.5
        slow.sendall(IRIS_BODY[-len(IRIS_BODY) // 2 :])
        [(status, _, body)] = _responses(slow.recv(65536))
    assert status == 200 and json.loads(body) == {"predictions": [0]}


def test_sigterm_with_idle_keep_alive_connections_exits_at_once(
    serve: Any, iris_model: Path
) -> None:
    server = serve(iris_model, "--workers", "1", "--graceful-timeout", "30")
    with requests.Session() as session:
        assert session.get(server.url + "/ping", timeout=5).status_code == 200
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 5
