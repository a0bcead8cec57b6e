"""The scoring worker (``scoring._worker``) facing hostile or broken clients, over real
sockets: request smuggling attempts, limits, slow clients, clients that do not read, HTTP
semantics, and gunicorn's settings (``max_requests``, request limits, ``worker_connections``)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.scoring.conftest import REPO_ROOT, Server, free_port
from tests.scoring.test_worker import IRIS_BODY, _exchange, _post, _responses

pytestmark = pytest.mark.slow

PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


def _closed_after(sock: socket.socket, timeout: float = 5) -> bytes:
    """Everything the server sends until it closes ``sock``."""
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _assert_rejected(port: int, request: bytes, status: int) -> None:
    """``request``, followed by a pipelined ``/ping``, is answered ``status`` alone, then the
    connection is closed: whatever followed the bad request is never read as a request."""
    answers = _responses(_exchange(port, request + PING))
    assert [code for code, _, _ in answers] == [status], (request, answers)
    assert answers[0][1]["connection"] == "close"
    assert json.loads(answers[0][2])["error_code"] == "BAD_REQUEST"


def test_request_smuggling_attempts_are_rejected(serve: Any, iris_model: Path) -> None:
    server = serve(iris_model, "--workers", "1")
    port = server.port
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    for headers, body in (
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
        (b"Content-Length: 5\r\nContent-Length: 6\r\n", b"123456"),
        (b"Content-Length: +5\r\n", b"12345"),
        (b"Content-Length: -1\r\n", b""),
        (b"Content-Length: 5, 5\r\n", b"12345"),
        (b"Content-Length: 0x5\r\n", b"12345"),
        (b"Content-Length: \xb2\r\n", b"12"),  # latin-1 superscript two: a digit to isdigit()
        (b"Content-Length: 1" + b"0" * 30 + b"\r\n", b""),
        (b"X-A: a\nContent-Length: 5\r\n", b"12345"),  # bare LF: a second header to some
        (b"X-A: a\rContent-Length: 5\r\n", b"12345"),  # bare CR
        (b"X-A: a\x00b\r\n", b""),
        (b"X-A: a\r\n Content-Length: 5\r\n", b"12345"),  # obs-fold
        (b"Content-Length : 5\r\n", b"12345"),  # space before the colon
        (b"Con\x01tent-Length: 5\r\n", b"12345"),
    ):
        _assert_rejected(port, head + headers + b"\r\n" + body, 400)

    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n"
    # Whitespace before an extension too: RFC 9112 allows it, llhttp (strict) does not.
    for size_line in (b"0x5", b"+5", b"-5", b" 5", b"1_0", b"5 5", b"1" + b"0" * 16, b"", b"5 ;a"):
        _assert_rejected(port, chunked + size_line + b"\r\n12345\r\n0\r\n\r\n", 400)
    for bad_body in (
        b"5\r\n123456\r\n0\r\n\r\n",  # data longer than its size
        b"5\r\n12345\n0\r\n\r\n",  # bare LF after the data
        b"5;a\nb\r\n12345\r\n0\r\n\r\n",  # bare LF in an extension
        b"5\r\n12345\r\n0\r\nno colon\r\n\r\n",  # a malformed trailer
    ):
        _assert_rejected(port, chunked + bad_body, 400)
    _assert_rejected(port, head + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 501)
    _assert_rejected(port, head + b"Transfer-Encoding: identity\r\n\r\n", 501)
    _assert_rejected(
        port,
        head.replace(b"HTTP/1.1", b"HTTP/1.0")
        + b"Transfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n0\r\n\r\n",
        400,
    )

    # Request lines: HTTP/0.9 and no version are 400, other versions (HTTP/2's preface) 505.
    # (Two spaces after the method are accepted: llhttp parses on whitespace, as RFC 9112,
    # 3 allows; where the request ends does not depend on it.)
    for line, status in (
        (b"GET /ping\r\n\r\n", 400),
        (b"GET ping HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"G(T /ping HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET /ping HTTP/1.2\r\nHost: x\r\n\r\n", 505),
        (b"GET /ping http/1.1\r\nHost: x\r\n\r\n", 505),
    ):
        _assert_rejected(port, line, status)
    # The absolute form is accepted (RFC 9112, 3.2.2): the path is what is routed.
    [(status, _, body)] = _responses(
        _exchange(port, b"GET http://evil.example/ping HTTP/1.1\r\nConnection: close\r\n\r\n")
    )
    assert status == 200 and body == b"\n"


def test_chunked_bodies_trailers_and_what_follows(serve: Any, iris_model: Path) -> None:
    server = serve(iris_model, "--workers", "1", "--max-request-bytes", "100000")
    half = len(IRIS_BODY) // 2
    chunked = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%X;name=value\r\n" % half  # upper-case hex, an extension
        + IRIS_BODY[:half]
        + b"\r\n%x\r\n" % (len(IRIS_BODY) - half)
        + IRIS_BODY[half:]
        + b"\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n"
    )
    answers = _responses(
        _exchange(server.port, chunked + chunked + PING[:-2] + b"Connection: close\r\n\r\n")
    )
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert json.loads(answers[1][2]) == {"predictions": [0]}

    # The last 60 bytes one at a time: the decoder resumes anywhere.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(chunked[:-60])
        for i in range(len(chunked) - 60, len(chunked)):
            time.sleep(0.002)
            sock.sendall(chunked[i : i + 1])
        [(status, _, body)] = _responses(sock.recv(65536))
    assert status == 200 and json.loads(body) == {"predictions": [0]}

    # A chunk size far beyond the limit: 413 once the limit is passed, nothing more is read.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n" + b"1" * 100_001
        )
        [(status, headers, body)] = _responses(_closed_after(sock))
    assert status == 413 and headers["connection"] == "close"
    # Trailers without end are bounded like headers.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(chunked.partition(b"\r\n0\r\n")[0] + b"\r\n0\r\n")
        try:
            for _ in range(20):
                sock.sendall(b"X-Trailer: " + b"a" * 8000 + b"\r\n")
        except OSError:
            pass  # closed by the server already
        answer = _closed_after(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_request_head_limits(serve: Any, iris_model: Path) -> None:
    server = serve(iris_model, "--workers", "1")
    port = server.port
    long_line = b"GET /ping?" + b"a" * 8200 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _exchange(port, long_line).startswith(b"HTTP/1.1 414 ")
    # A request line that never ends is refused as soon as it is too long.
    assert _exchange(port, b"GET /ping?" + b"a" * 9000).startswith(b"HTTP/1.1 414 ")
    many = b"GET /ping HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(101)) + b"\r\n"
    assert _exchange(port, many).startswith(b"HTTP/1.1 431 ")
    assert _exchange(port, b"GET /ping HTTP/1.1\r\nX-Big: " + b"a" * 8200 + b"\r\n\r\n").startswith(
        b"HTTP/1.1 431 "
    )
    # Headers that never end: many lines, or one line (which llhttp buffers without telling).
    for endless in (b"X-H: " + b"a" * 8000 + b"\r\n", b"a" * 8000):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                sock.sendall(b"GET /ping HTTP/1.1\r\nX-Long: ")
                for _ in range(10):
                    sock.sendall(endless)
            except OSError:
                pass
            assert _closed_after(sock).startswith(b"HTTP/1.1 431 ")
    # At the limits: 100 headers of 8190 bytes would pass; a request line of 8190 does.
    ok = b"GET /ping?" + b"a" * 8166 + b" HTTP/1.1\r\nConnection: close\r\n\r\n"
    assert _exchange(port, ok).startswith(b"HTTP/1.1 200 ")


def test_slow_clients_do_not_starve_the_worker(serve: Any, iris_model: Path) -> None:
    server = serve(
        iris_model, "--workers", "1", "--threads", "1", env={"ORCHESTRATE_KEEPALIVE": "2"}
    )
    slow = []
    try:
        for i in range(8):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            slow.append(sock)
            if i % 2:  # headers, then half a body
                sock.sendall(_post(IRIS_BODY)[: -len(IRIS_BODY) // 2])
            else:  # half the headers
                sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.3)
        with requests.Session() as session:
            for _ in range(5):
                started = time.monotonic()
                assert session.get(server.url + "/ping", timeout=5).status_code == 200
                response = session.post(
                    server.url + "/invocations",
                    data=IRIS_BODY,
                    headers={"Content-Type": "application/json"},
                    timeout=5,
                )
                assert response.status_code == 200
                assert time.monotonic() - started < 0.5
        # The uploads finish whenever their clients get round to it.
        for sock in slow[1::2]:
            sock.sendall(IRIS_BODY[-len(IRIS_BODY) // 2 :])
            [(status, _, body)] = _responses(sock.recv(65536))
            assert status == 200 and json.loads(body) == {"predictions": [0]}
    finally:
        for sock in slow:
            sock.close()

    # Trickling a head does not keep it alive: the head is due within the keep-alive time.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        answer = None
        for byte in b"GET /ping HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
                if select.select([sock], [], [], 0.25)[0]:
                    answer = sock.recv(100)
                    break
            except OSError:
                answer = b""
                break
        assert answer == b""  # closed without an answer
        assert 1.5 < time.monotonic() - started < 5


def test_a_client_that_does_not_read_holds_no_thread(serve: Any, iris_model: Path) -> None:
    server = serve(iris_model, "--workers", "1", "--threads", "1")
    flood = socket.socket()
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood.connect(("127.0.0.1", server.port))
    flood.settimeout(3)
    big = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    sent = 0
    try:
        with pytest.raises(TimeoutError):  # the server stops reading: buffering is bounded
            while sent < 200_000_000:
                flood.sendall(big * 1000)
                sent += len(big) * 1000
        assert sent < 50_000_000
        # The only request thread is free: others are answered at once.
        for _ in range(3):
            started = time.monotonic()
            assert requests.get(server.url + "/ping", timeout=5).status_code == 200
            assert time.monotonic() - started < 0.5
    finally:
        flood.close()
    assert requests.get(server.url + "/ping", timeout=5).status_code == 200


def test_http_semantics(serve: Any, iris_model: Path) -> None:
    server = serve(iris_model, "--workers", "1")
    port = server.port
    # HTTP/1.0: closed after the answer unless keep-alive is asked for.
    [(status, headers, _)] = _responses(_exchange(port, b"GET /ping HTTP/1.0\r\n\r\n"))
    assert status == 200 and headers["connection"] == "close"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(b"GET /ping HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            [(status, headers, body)] = _responses(sock.recv(65536))
            assert (status, headers["connection"], body) == (200, "keep-alive", b"\n")
    # HTTP/1.1: kept alive unless closed; Connection is a list of case-insensitive options.
    for value in (b"Close", b"keep-alive, close", b"Upgrade, CLOSE"):
        answers = _responses(
            _exchange(port, PING[:-2] + b"Connection: " + value + b"\r\n\r\n" + PING)
        )
        assert [(s, h["connection"]) for s, h, _ in answers] == [(200, "close")]
    # HEAD: the GET answer's headers, no body, and the connection stays in step.
    raw = _exchange(
        port, b"HEAD /version HTTP/1.1\r\n\r\n" + PING[:-2] + b"Connection: close\r\n\r\n"
    )
    get = requests.get(server.url + "/version", timeout=5)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"\r\nContent-Length: %d\r\n" % len(get.content) in head
    [(status, _, body)] = _responses(rest)
    assert status == 200 and body == b"\n"
    # Every answer has a Date; no Server header (nothing to fingerprint).
    assert b"\r\nDate: " in head and b"\r\nServer:" not in raw

    # 100 Continue only when a body is expected and not here already, and never to HTTP/1.0.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_post(IRIS_BODY, extra="Expect: 100-continue\r\n"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.sendall(PING[:-2] + b"Content-Length: 0\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.sendall(
            _post(b"", extra="Expect: 100-continue\r\n", version="HTTP/1.0").replace(
                b"Content-Length: 0", b"Content-Length: %d" % len(IRIS_BODY)
            )
        )
        time.sleep(0.3)
        sock.sendall(IRIS_BODY)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")

    # X-Request-ID is echoed only when short and printable; CR in it is a bad request.
    for sent, echoed in ((b"abc-123", True), (b"a" * 300, False), (b"a\x7fb", False)):
        answer = _exchange(
            port, PING[:-2] + b"X-Request-ID: " + sent + b"\r\nConnection: close\r\n\r\n"
        )
        [(status, headers, _)] = _responses(answer)
        assert status == (400 if b"\x7f" in sent else 200)
        assert (headers.get("x-request-id") == sent.decode()) is echoed
    answer = _exchange(port, PING[:-2] + b"X-Request-ID: a\rSet-Cookie: x=1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Set-Cookie" not in answer


def test_big_bodies_wait_for_the_body_budget(serve: Any, iris_model: Path) -> None:
    # One thread, bodies up to 1 MB: 1 MB of bodies buffered at a time in this worker.
    server = serve(iris_model, "--workers", "1", "--threads", "1", "--max-request-bytes", "1000000")
    body = b'{"inputs": [' + b"1," * 400_000 + b"1]}"
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    first = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    second = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with first, second:
        first.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:1000])
        time.sleep(0.3)
        second.sendall(head + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
        second.settimeout(0.5)
        with pytest.raises(TimeoutError):  # parked: not read, and not told to continue
            second.recv(100)
        assert requests.get(server.url + "/ping", timeout=5).status_code == 200
        first.sendall(body[1000:])
        first.settimeout(10)
        assert first.recv(65536).startswith(b"HTTP/1.1 ")
        second.settimeout(5)
        assert second.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        second.sendall(body)
        assert second.recv(65536).startswith(b"HTTP/1.1 ")


def test_sigterm_finishes_requests_in_flight(serve: Any, custom_model: Path) -> None:
    server = serve(custom_model, "--workers", "1", "--graceful-timeout", "10")
    payload = json.dumps(
        {
            "dataframe_records": [{"x": 1.0, "n": 1, "label": "a", "flag": True}],
            "params": {"sleep": 1.0},
        }
    ).encode()
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as busy,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle,
    ):
        idle.sendall(PING)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        busy.sendall(_post(payload))
        time.sleep(0.3)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert _closed_after(idle) == b""  # the idle keep-alive connection is closed
        [(status, headers, _)] = _responses(_closed_after(busy))
        assert status == 200 and headers["connection"] == "close"
        assert server.proc.wait(10) == 0
        assert time.monotonic() - started < 5


def test_sigterm_answers_a_connection_whose_first_request_is_on_the_way(serve: Any, iris_model: Path) -> None:
    # A proxy (docker's, a load balancer) connects first and forwards the request after: such a
    # connection is not an idle keep-alive one, and closing it at SIGTERM lost the request.
    server = serve(iris_model, "--workers", "1", "--graceful-timeout", "10")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as early:
        time.sleep(0.3)  # accepted by the worker, nothing sent yet
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the worker is draining
        early.sendall(PING)
        [(status, headers, _)] = _responses(_closed_after(early))
        assert status == 200 and headers["connection"] == "close"
    assert server.proc.wait(10) == 0


# ---- gunicorn settings the command line does not offer ---------------------------------------

_LAUNCHER = """
import sys
from scoring import _gunicorn
from scoring._cli import main

settings = {settings!r}
load_config = _gunicorn.ScoringServer.load_config

def patched(self):
    load_config(self)
    for key, value in settings.items():
        self.cfg.set(key, value)

_gunicorn.ScoringServer.load_config = patched
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def serve_with(tmp_path: Path) -> Iterator[Any]:
    """``serve_with(model_dir, settings, *args)``: a server with gunicorn ``settings`` set."""
    servers: list[Server] = []

    def start(model_dir: Path, settings: dict[str, Any], *args: str) -> Server:
        port = free_port()
        log = tmp_path / f"server-{len(servers)}.log"
        cmd = [sys.executable, "-c", _LAUNCHER.format(settings=settings), "serve", str(model_dir)]
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [*cmd, "--port", str(port), "--workers", "1", *args],
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )
        server = Server(proc, port, log)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


def test_gunicorn_limits_and_max_requests(serve_with: Any, iris_model: Path) -> None:
    server = serve_with(
        iris_model,
        {
            "limit_request_line": 100,
            "limit_request_fields": 5,
            "limit_request_field_size": 50,
            "max_requests": 20,
        },
    )
    port = server.port
    assert _exchange(port, b"GET /ping?" + b"a" * 100 + b" HTTP/1.1\r\n\r\n").startswith(
        b"HTTP/1.1 414 "
    )
    six = b"GET /ping HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(6)) + b"\r\n"
    assert _exchange(port, six).startswith(b"HTTP/1.1 431 ")
    assert _exchange(port, b"GET /ping HTTP/1.1\r\nX-H: " + b"a" * 50 + b"\r\n\r\n").startswith(
        b"HTTP/1.1 431 "
    )
    # max_requests: the worker answers the last one with Connection: close, then is replaced.
    with requests.Session() as session:
        closing = [
            session.get(server.url + "/ping", timeout=5).headers.get("Connection")
            for _ in range(20)
        ]
    assert "close" in closing
    deadline = time.monotonic() + 20
    while "Autorestarting worker" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Autorestarting worker after current request." in server.output()
    server.wait_ready()


def test_worker_connections_limit(serve_with: Any, iris_model: Path) -> None:
    server = serve_with(iris_model, {"worker_connections": 3})
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(PING)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        result: dict[str, Any] = {}
        waiting = threading.Thread(
            target=lambda: result.update(
                answer=_exchange(server.port, PING[:-2] + b"Connection: close\r\n\r\n")
            )
        )
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive()  # queued by the kernel, not accepted
        held.pop().close()
        waiting.join(5)
        assert result["answer"].startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
