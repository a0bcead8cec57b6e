"""The gunicorn worker class of the scoring server: HTTP/1.1 connections on one epoll loop.

Why not gunicorn's ``gthread``: it spends about 0.25 ms of CPU per request (a thread-pool hop
per request, its own parser and response objects), twice what a small scikit-learn model
takes to predict, and the request timeout needed a second hop. This worker answers a
request in the thread that read it:

- ``threads`` request threads share one epoll set. One of them, the *leader*, polls and
  answers the requests it finds, in turn, without handing them to anyone. Connections are
  armed one-shot, so exactly one thread owns a connection while it answers on it.
- The main thread is the *supervisor*: every ``_TICK`` seconds it hands the leader role to an
  idle thread when the leader has been inside one request for longer than ``_HANDOFF`` (so
  ``/ping`` is never stuck behind a slow prediction while a thread is free), answers ``504``
  for requests past the timeout (the model call cannot be interrupted; its answer is thrown
  away when it comes), closes expired keep-alive connections and sends gunicorn's heartbeat.
  It stops the heartbeat when every thread is stuck past the timeout, so gunicorn replaces
  a worker that a hung model has wedged.
- ``SIGTERM``: stop accepting, close idle keep-alive connections, let requests in flight
  finish (up to ``graceful_timeout``), answering them with ``Connection: close``.

Request bodies are read whole before the application runs (up to ``max_request_bytes``;
beyond it the application answers 413 from the headers alone and the connection is closed).
``Expect: 100-continue`` and chunked bodies are supported; responses always carry a
Content-Length. Who answers a request is decided once: the application's middleware
(``Observe``) and the supervisor both go through ``environ["scoring.claim"]``, so a request
is counted and logged exactly once, as 200 or as 504.
"""

from __future__ import annotations

import collections
import errno
import itertools
import json
import os
import re
import select
import socket
import sys
import threading
import time
from email.utils import formatdate
from functools import partial
from typing import Any
from urllib.parse import unquote_to_bytes

from gunicorn.workers.base import Worker

_TICK = 0.01  # supervisor period, seconds
_HANDOFF = 0.02  # a leader busy this long with one request hands the loop to an idle thread
_BODY_TIMEOUT = 30.0  # a client that stalls this long in the middle of a request is dropped
_MAX_HEAD = 65536  # request line and headers
_RECV = 262144

_IN = select.EPOLLIN if hasattr(select, "EPOLLIN") else 1
_ONESHOT_IN = _IN | (select.EPOLLONESHOT if hasattr(select, "EPOLLONESHOT") else 0)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUS = ("1", "204", "304")


class BadRequest(Exception):
    """A request this worker answers itself, then closes the connection."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Connection:
    """One client connection: its socket and the bytes read but not yet used."""

    __slots__ = ("buf", "environ", "fd", "idle_since", "sock")

    def __init__(self, sock: socket.socket, environ: dict[str, Any]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.environ = environ  # what every request's WSGI environ on it starts from
        self.buf = b""
        self.idle_since = time.monotonic()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Date:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._line = ""

    def line(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._line = f"Date: {formatdate(now, usegmt=True)}\r\n"
            self._second = now
        return self._line


class ScoringWorker(Worker):  # type: ignore[misc]
    """See the module docstring. Linux only (epoll); ``scoring._gunicorn`` picks gthread
    elsewhere."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        server_cfg = getattr(self.app, "scoring_config", None)
        self.max_body = server_cfg.max_request_bytes if server_cfg else 100 * 1024 * 1024
        self.request_timeout = server_cfg.timeout if server_cfg else 0.0
        self.nthreads = max(1, self.cfg.threads)
        self.keepalive = self.cfg.keepalive
        self.max_conns = self.cfg.worker_connections
        self.multiprocess = self.cfg.workers > 1

    # ---- set-up ---------------------------------------------------------------------------

    def init_process(self) -> None:
        self.epoll = select.epoll()
        self.listeners: dict[int, tuple[socket.socket, tuple[str, str]]] = {}
        self.idle: dict[int, Connection] = {}  # armed connections, waiting for a request
        self.nconns = 0
        self.ready: collections.deque[tuple[int, int]] = collections.deque()
        self.accepting = False
        self.stopping = False
        self.claims: dict[int, bool] = {}
        self.serial = itertools.count()
        # Per request thread: (claim key, start, environ, connection) while answering.
        self.busy: list[tuple[int, float, dict[str, Any], Connection] | None] = [
            None
        ] * self.nthreads
        self.stuck: set[int] = set()  # threads still inside a request that was answered 504
        # When each thread started its current request (reading, answering, writing); 0: none.
        self.since = [0.0] * self.nthreads
        self.leader = 0
        self.lock = threading.Lock()
        self.accept_lock = threading.Lock()
        self.wake = [threading.Event() for _ in range(self.nthreads)]
        self.date = _Date()
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        ext = getattr(self.wsgi, "extensions", {}).get("scoring")
        self.observe = ext["observe"] if ext else None
        if ext and self.request_timeout:
            # Deadlines are enforced here, without a thread hop per request.
            ext["runner"].disable()

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False

    # ---- supervisor (main thread) ---------------------------------------------------------

    def run(self) -> None:
        for sock in self.sockets:
            sock.setblocking(False)
            name = sock.getsockname()
            host, port = (name[0], str(name[1])) if isinstance(name, tuple) else (str(name), "")
            self.listeners[sock.fileno()] = (sock, (host, port))
        self._set_accepting(True)
        threads = [
            threading.Thread(target=self._serve, args=(i,), name=f"scoring-{i}", daemon=True)
            for i in range(self.nthreads)
        ]
        for thread in threads:
            thread.start()
        self.wake[0].set()
        last_beat = 0.0
        last_sweep = time.monotonic()
        while self.alive:
            time.sleep(_TICK)
            now = time.monotonic()
            self._supervise(now)
            if now - last_beat >= 1.0 and len(self.stuck) < self.nthreads:
                self.notify()
                last_beat = now
            if now - last_sweep >= 0.5:
                last_sweep = now
                self._close_expired(now)
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    break
        self._shutdown()

    def _supervise(self, now: float) -> None:
        timeout = self.request_timeout
        for index, entry in enumerate(self.busy):
            if entry is None:
                continue
            key, start, environ, conn = entry
            if timeout and now - start > timeout and self.claims.pop(key, None):
                self.stuck.add(index)
                self._answer_timeout(environ, conn, now - start)
        with self.lock:
            since = self.since[self.leader]
            if since and now - since > _HANDOFF:
                self._promote()

    def _promote(self) -> None:
        """Give the leader role to an idle thread, if any (called with ``lock`` held)."""
        for index in range(self.nthreads):
            if not self.since[index] and index != self.leader:
                self.leader = index
                self.wake[index].set()
                return

    def _answer_timeout(self, environ: dict[str, Any], conn: Connection, seconds: float) -> None:
        if self.observe is not None:
            status, headers, body = self.observe.timeout_answer(environ, seconds)
        else:  # pragma: no cover - only the scoring app is served by this worker
            status, headers, body = "504 Gateway Timeout", [], b""
        data = self._head(status, headers, body, close=True, http10=False) + body
        try:
            conn.sock.send(data)
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _close_expired(self, now: float) -> None:
        limit = now - self.keepalive
        for fd, conn in list(self.idle.items()):
            if conn.idle_since < limit and self.idle.pop(fd, None) is not None:
                self._drop(conn)

    def _shutdown(self) -> None:
        self.stopping = True
        self._set_accepting(False)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline:
            # Idle keep-alive connections go now (a request already sent on one is answered).
            for fd, conn in list(self.idle.items()):
                if not _has_data(conn.sock) and self.idle.pop(fd, None) is not None:
                    self._drop(conn)
            if self.nconns <= 0:
                break
            time.sleep(_TICK)
            self._supervise(time.monotonic())
        for sock, _ in self.listeners.values():
            sock.close()

    # ---- request threads -------------------------------------------------------------------

    def _serve(self, index: int) -> None:
        wake = self.wake[index]
        ready = self.ready
        poll = self.epoll.poll
        while True:
            wake.wait()
            wake.clear()
            while self.leader == index:
                try:
                    fd, _ = ready.popleft()
                except IndexError:
                    try:
                        ready.extend(poll(0.2 if self.stopping else 1.0))
                    except InterruptedError:
                        pass
                    continue
                try:
                    listener = self.listeners.get(fd)
                    if listener is not None:
                        self._accept(*listener)
                        continue
                    conn = self.idle.pop(fd, None)
                    if conn is not None:
                        self._on_readable(index, conn)
                except Exception:  # the loop must survive anything one connection does
                    self.log.exception("error in the connection loop")
                    time.sleep(0.01)

    def _set_accepting(self, enabled: bool) -> None:
        with self.accept_lock:
            if enabled == self.accepting or (enabled and self.stopping):
                return
            self.accepting = enabled
            self._register_listeners(enabled)

    def _register_listeners(self, enabled: bool) -> None:
        for fd in self.listeners:
            try:
                if enabled:
                    self.epoll.register(fd, _IN)
                else:
                    self.epoll.unregister(fd)
            except OSError:
                pass

    def _accept(self, listener: socket.socket, name: tuple[str, str]) -> None:
        while self.accepting and self.nconns < self.max_conns:
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EMFILE, errno.ENFILE, errno.EBADF):
                    return
                raise
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.nconns += 1
            conn = Connection(sock, self._connection_environ(name, addr))
            self.idle[conn.fd] = conn
            self.epoll.register(conn.fd, _ONESHOT_IN)
        if self.nconns >= self.max_conns:
            self._set_accepting(False)

    def _connection_environ(self, listener: tuple[str, str], addr: Any) -> dict[str, Any]:
        remote = isinstance(addr, tuple)
        return {
            "SCRIPT_NAME": "",
            "SERVER_NAME": listener[0],
            "SERVER_PORT": listener[1],
            "REMOTE_ADDR": addr[0] if remote else "",
            "REMOTE_PORT": str(addr[1]) if remote else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": self.nthreads > 1,
            "wsgi.multiprocess": self.multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    def _drop(self, conn: Connection) -> None:
        try:
            self.epoll.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        conn.close()
        with self.lock:
            self.nconns -= 1
            resume = not self.stopping and not self.accepting and self.nconns < self.max_conns
        if resume:
            self._set_accepting(True)

    def _rearm(self, conn: Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle[conn.fd] = conn
        try:
            self.epoll.modify(conn.fd, _ONESHOT_IN)
        except OSError:
            if self.idle.pop(conn.fd, None) is not None:
                self._drop(conn)

    def _on_readable(self, index: int, conn: Connection) -> None:
        """Read from ``conn`` and answer every complete request in what was read."""
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            self._rearm(conn)
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        conn.buf = conn.buf + data if conn.buf else data
        keep = True
        self.since[index] = time.monotonic()
        try:
            while keep and conn.buf:
                end = conn.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(conn.buf) > _MAX_HEAD:
                        raise BadRequest("431 Request Header Fields Too Large", "headers too large")
                    break
                keep = self._request(index, conn, end)
        except BadRequest as exc:
            self._send_error(conn, exc)
            keep = False
        except OSError:
            keep = False
        except Exception:  # a bug here must not kill the thread
            self.log.exception("error answering a request")
            keep = False
        self.since[index] = 0.0
        if keep and not self.stopping:
            self._rearm(conn)
        else:
            self._drop(conn)

    def _request(self, index: int, conn: Connection, end: int) -> bool:
        """Answer the request whose head ends at ``end``; whether to keep the connection."""
        head = conn.buf[:end].decode("latin-1")
        rest = conn.buf[end + 4 :]
        environ, http10, keep, length, chunked, expect = self._environ(head, conn)
        close_after = False
        if chunked:
            conn.buf = rest
            body = self._read_chunked(conn, expect)
            if len(body) > self.max_body:
                close_after = True
            rest = conn.buf
        elif length > self.max_body:
            # The application answers 413 from the headers; the body is never read.
            body = b""
            rest = b""
            close_after = True
        elif len(rest) >= length:
            body = rest[:length]
            rest = rest[length:]
        else:
            if expect:
                conn.sock.sendall(_CONTINUE)
            body = self._read_exactly(conn, rest, length)
            rest = b""
        conn.buf = rest
        environ["wsgi.input"] = _Input(body)

        key = next(self.serial)
        self.claims[key] = True
        environ["scoring.claim"] = partial(self.claims.pop, key, None)
        self.busy[index] = (key, time.monotonic(), environ, conn)
        try:
            status, headers, chunks = self._call(environ)
        except Exception:
            self.log.exception("error answering %s %s", environ["REQUEST_METHOD"], _target(environ))
            status, headers, chunks = _INTERNAL_ERROR
        finally:
            self.busy[index] = None
            self.stuck.discard(index)
            # Whoever claimed the request first answers it: the application, or the
            # supervisor with a 504 (the connection is then shut down already).
            ours = self.claims.pop(key, None) is not None or "scoring.answered" in environ
        if not ours:
            return False
        keep = keep and not close_after and not self.stopping
        if environ["REQUEST_METHOD"] == "HEAD" or status.startswith(_NO_BODY_STATUS):
            chunks = []
        body_out = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        out = self._head(status, headers, body_out, close=not keep, http10=http10) + body_out
        _send_all(conn.sock, out)
        return keep

    def _call(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], list[bytes]]:
        result: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if exc_info and result:
                raise exc_info[1].with_traceback(exc_info[2])
            result[:] = [status, headers]
            return _no_write

        iterable = self.wsgi(environ, start_response)
        try:
            chunks = [bytes(c) for c in iterable] if not isinstance(iterable, list) else iterable
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        if not result:
            raise RuntimeError("the application did not call start_response")
        return result[0], result[1], chunks

    def _head(
        self,
        status: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        close: bool,
        http10: bool,
    ) -> bytes:
        lines = [f"HTTP/1.1 {status}\r\n"]
        has_length = False
        for name, value in headers:
            if not has_length and name.lower() == "content-length":
                has_length = True
            lines.append(f"{name}: {value}\r\n")
        if not has_length:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append(self.date.line())
        if close:
            lines.append("Connection: close\r\n")
        elif http10:
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _send_error(self, conn: Connection, exc: BadRequest) -> None:
        body = _error_body("BAD_REQUEST", exc.message)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        try:
            _send_all(
                conn.sock, self._head(exc.status, headers, body, close=True, http10=False) + body
            )
        except OSError:
            pass

    # ---- parsing -----------------------------------------------------------------------------

    def _environ(
        self, head: str, conn: Connection
    ) -> tuple[dict[str, Any], bool, bool, int, bool, bool]:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise BadRequest("400 Bad Request", "invalid request line")
        method, target, version = parts
        if version == "HTTP/1.1":
            http10 = False
        elif version == "HTTP/1.0":
            http10 = True
        else:
            raise BadRequest("505 HTTP Version Not Supported", "only HTTP/1.0 and 1.1")
        if not _TOKEN(method):
            raise BadRequest("400 Bad Request", "invalid method")
        if target.startswith("/"):
            path, _, query = target.partition("?")
        elif target.startswith(("http://", "https://")):
            rest = target.split("/", 3)
            path, _, query = ("/" + (rest[3] if len(rest) > 3 else "")).partition("?")
        elif target == "*":
            path, query = "*", ""
        else:
            raise BadRequest("400 Bad Request", "invalid request target")
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
        environ = conn.environ.copy()
        environ["REQUEST_METHOD"] = method
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = query
        environ["RAW_URI"] = target
        environ["SERVER_PROTOCOL"] = version
        connection = ""
        length = 0
        chunked = False
        expect = False
        seen_length = None
        for line in itertools.islice(lines, 1, None):
            name, sep, value = line.partition(":")
            key = _ENVIRON_KEYS.get(name) if sep else None  # names seen before are valid
            if key is None:
                if not sep or not _TOKEN(name):
                    raise BadRequest("400 Bad Request", "invalid header line")
                if "_" in name:
                    continue  # as gunicorn: X_Foo would pass for X-Foo in the environ
                key = _environ_key(name)
            value = value.strip(" \t")
            if key == "CONTENT_LENGTH":
                if not value.isdigit() or (seen_length is not None and value != seen_length):
                    raise BadRequest("400 Bad Request", "invalid Content-Length")
                seen_length = value
                length = int(value)
            elif key == "HTTP_TRANSFER_ENCODING":
                if value.lower() != "chunked":
                    raise BadRequest("501 Not Implemented", "only chunked transfer coding")
                chunked = True
            elif key == "HTTP_CONNECTION":
                connection = value.lower()
            elif key == "HTTP_EXPECT":
                if value.lower() != "100-continue":
                    raise BadRequest("417 Expectation Failed", "only 100-continue is supported")
                expect = not http10
            if key in environ and key.startswith("HTTP_"):
                environ[key] += "," + value
            else:
                environ[key] = value
        if chunked and seen_length is not None:
            raise BadRequest("400 Bad Request", "both Content-Length and Transfer-Encoding")
        if http10:
            keep = "keep-alive" in connection
        else:
            keep = "close" not in connection
        return environ, http10, keep, length, chunked, expect

    def _read_exactly(self, conn: Connection, start: bytes, length: int) -> bytes:
        data = bytearray(start)
        sock = conn.sock
        sock.settimeout(_BODY_TIMEOUT)
        try:
            while len(data) < length:
                chunk = sock.recv(min(length - len(data), 1 << 20))
                if not chunk:
                    raise OSError(errno.ECONNRESET, "client closed the connection mid-request")
                data += chunk
        except TimeoutError:
            raise OSError(errno.ETIMEDOUT, "client stalled mid-request") from None
        finally:
            sock.setblocking(False)
        return bytes(data)

    def _read_chunked(self, conn: Connection, expect: bool) -> bytes:
        """Decode a chunked body from ``conn`` (stopping past ``max_body``)."""
        sock = conn.sock
        buf = conn.buf
        out = bytearray()
        sent_continue = False

        def more() -> None:
            nonlocal buf, sent_continue
            if expect and not sent_continue:
                sock.sendall(_CONTINUE)
                sent_continue = True
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise OSError(errno.ECONNRESET, "client closed the connection mid-request")
            buf += chunk

        sock.settimeout(_BODY_TIMEOUT)
        try:
            while True:
                line_end = buf.find(b"\r\n")
                while line_end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise BadRequest("400 Bad Request", "invalid chunk size line")
                    more()
                    line_end = buf.find(b"\r\n")
                size_text = buf[:line_end].split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BadRequest("400 Bad Request", "invalid chunk size") from None
                buf = buf[line_end + 2 :]
                if size == 0:
                    # Trailers, if any, end with an empty line.
                    while True:
                        line_end = buf.find(b"\r\n")
                        while line_end < 0:
                            more()
                            line_end = buf.find(b"\r\n")
                        line, buf = buf[:line_end], buf[line_end + 2 :]
                        if not line:
                            conn.buf = buf
                            return bytes(out)
                while len(buf) < size + 2:
                    more()
                if buf[size : size + 2] != b"\r\n":
                    raise BadRequest("400 Bad Request", "invalid chunk")
                out += buf[:size]
                buf = buf[size + 2 :]
                if len(out) > self.max_body:
                    conn.buf = b""
                    return bytes(out)
        except TimeoutError:
            raise OSError(errno.ETIMEDOUT, "client stalled mid-request") from None
        finally:
            sock.setblocking(False)


class _Input:
    """``wsgi.input``: the request body, already read."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, size: int | None = -1) -> bytes:
        data, pos = self._data, self._pos
        if size is None or size < 0:
            end = len(data)
        else:
            end = min(len(data), pos + size)
        self._pos = end
        if pos == 0 and end == len(data):
            return data
        return data[pos:end]

    def readline(self, size: int | None = -1) -> bytes:
        data, pos = self._data, self._pos
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end + 1
        if size is not None and size >= 0:
            end = min(end, pos + size)
        self._pos = end
        return data[pos:end]

    def readlines(self, hint: Any = None) -> list[bytes]:
        lines = []
        while line := self.readline():
            lines.append(line)
        return lines

    def __iter__(self) -> Any:
        return iter(self.readlines())


def _error_body(error_code: str, message: str) -> bytes:
    return json.dumps({"error_code": error_code, "message": message}).encode()


_INTERNAL_ERROR = (
    "500 Internal Server Error",
    [("Content-Type", "application/json")],
    [_error_body("INTERNAL_ERROR", "internal server error")],
)


def _target(environ: dict[str, Any]) -> str:
    return str(environ.get("RAW_URI") or environ.get("PATH_INFO", ""))[:200]


def _no_write(data: bytes) -> None:
    raise RuntimeError("this server does not support the WSGI write() callable")


def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = "HTTP_" + key
    if len(_ENVIRON_KEYS) < 512:
        _ENVIRON_KEYS[name] = key
    return key


_ENVIRON_KEYS: dict[str, str] = {}


def _has_data(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False


def _send_all(sock: socket.socket, data: bytes) -> None:
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    if sent < len(data):
        sock.settimeout(_BODY_TIMEOUT)
        try:
            sock.sendall(memoryview(data)[sent:])
        finally:
            sock.setblocking(False)
