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
  away when it comes), closes connections past their deadline and sends gunicorn's
  heartbeat. It stops the heartbeat when every thread is stuck past the timeout, so gunicorn
  replaces a worker that a hung model has wedged.
- ``SIGTERM`` (or ``max_requests`` answered): accept what is queued, close the listening
  sockets (the next server on the port gets new connections), close idle keep-alive
  connections, let requests in flight finish (up to ``graceful_timeout``), answering them
  with ``Connection: close``; a connection whose first request has not arrived yet gets it
  answered too (its head deadline bounds the wait).

Framing is decided by llhttp (Node.js's HTTP/1.1 parser, through ``httptools``) in its
strict mode, never by code of ours: where a request ends, its Content-Length or chunked body,
bare CR or LF, control characters, obs-fold, Content-Length with Transfer-Encoding, duplicate
Content-Length, bad chunk sizes. Whatever llhttp refuses is answered 400 (505 for an HTTP
version other than 1.0 and 1.1, 501 for a transfer coding other than ``chunked``) and the
connection closed after the requests before it are answered. On what llhttp accepts, this
worker adds only limits and policy: gunicorn's ``limit_request_line`` (414),
``limit_request_fields`` and ``limit_request_field_size`` (431), ``max_request_bytes`` (413),
no chunked body in HTTP/1.0, ``Expect`` only ``100-continue`` (417). A refused request is
counted in ``/metrics`` and written to the access log like any other.

Clients are untrusted, so a thread never waits on one: request heads, bodies and answers
move only when epoll says the socket is ready. A connection's state between two readiness
events lives on its ``Connection``: its parser, the requests parsed and not answered yet, an
answer the client has not read yet (nothing more is read from a client that does not read
its answers). Each armed connection has a deadline: the whole request head within
``keepalive`` seconds of the connection going idle (trickling bytes does not extend it), and
at most ``_IO_TIMEOUT`` seconds without progress while a body or an answer is in transit.
Bodies larger than one read are buffered only within a per-worker byte budget (``threads`` x
``max_request_bytes``); a body beyond it waits, unread, for its turn.

Request bodies are read whole before the application runs (up to ``max_request_bytes``;
beyond it the application answers 413 from the headers alone and the connection is closed;
a chunked body is refused 413 as soon as its chunk sizes pass the limit). ``Expect:
100-continue`` is supported; responses always carry a Content-Length. Who answers a request
is decided once: the application's middleware (``Observe``) and the supervisor both go
through ``environ["scoring.claim"]``, so a request is counted and logged exactly once, as 200
or as 504.
"""

from __future__ import annotations

import collections
import errno
import itertools
import json
import os
import select
import socket
import sys
import threading
import time
from email.utils import formatdate
from functools import partial
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

import httptools
from gunicorn.workers.base import Worker

_TICK = 0.01  # supervisor period, seconds
_HANDOFF = 0.02  # a leader busy this long with one request hands the loop to an idle thread
_IO_TIMEOUT = 30.0  # a client making no progress this long mid-body or mid-answer is dropped
_MAX_HEAD = 65536  # request line and headers, in all (unless gunicorn's limits need more)
_RECV = 262144  # one read; a body larger than this needs a share of the body budget
_LINGER = 2.0  # after refusing a request: how long its unread bytes are drained, seconds

_IN = select.EPOLLIN if hasattr(select, "EPOLLIN") else 1
_ONESHOT = select.EPOLLONESHOT if hasattr(select, "EPOLLONESHOT") else 0
_ONESHOT_IN = _IN | _ONESHOT
_ONESHOT_OUT = (select.EPOLLOUT if hasattr(select, "EPOLLOUT") else 4) | _ONESHOT
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUS = ("1", "204", "304")
_NO_LENGTH_STATUS = ("1", "204")
# llhttp's reasons that are not a plain 400 (it gives a reason, not an error number, here).
_VERSION_REASONS = ("Invalid HTTP version", "Expected HTTP/", "Pause on PRI/Upgrade")
_CODING_REASONS = ("Invalid `Transfer-Encoding` header value", "Request has invalid `Transfer")


class BadRequest(Exception):
    """A request this worker answers itself, then closes the connection."""

    def __init__(self, status: str, message: str, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.environ: dict[str, Any] | None = None  # what is known of the request


class _Stop(Exception):
    """Raised in a parser callback: parse nothing more on this connection."""


class _Limits(NamedTuple):
    line: int  # request line, bytes (414)
    fields: int  # header fields (431)
    field: int  # one header field, bytes (431)
    head: int  # request line and headers, or trailers, in all (431)
    body: int  # request body, bytes (413)


def _parser_refusal(exc: httptools.HttpParserError) -> BadRequest:
    """The answer to a request llhttp refused, or to one a callback of ours refused."""
    cause = exc.__context__
    if isinstance(cause, BadRequest):
        return cause
    reason = str(exc)
    if reason.startswith(_VERSION_REASONS):
        return BadRequest("505 HTTP Version Not Supported", "only HTTP/1.0 and 1.1")
    if reason.startswith(_CODING_REASONS):
        return BadRequest("501 Not Implemented", "only the chunked transfer coding")
    return BadRequest("400 Bad Request", f"malformed request: {reason}")


class _Request:
    """One request, from its first byte until it is answered."""

    __slots__ = (
        "body",
        "chunk_open",
        "chunk_read",
        "chunked",
        "close_after",
        "environ",
        "expect",
        "fields",
        "head_bytes",
        "headers_done",
        "http10",
        "keep",
        "length",
        "reserved",
        "url",
    )

    def __init__(self) -> None:
        self.url = b""
        self.environ: dict[str, Any] = {}
        self.fields = 0  # header fields so far
        self.head_bytes = 0  # request line and headers (then trailers) so far
        self.headers_done = False
        self.http10 = False
        self.keep = True
        self.length = 0  # Content-Length (0 when chunked)
        self.chunked = False
        self.body: bytes | bytearray = b""
        self.chunk_open = False  # inside a chunk whose size line came in the current read
        self.chunk_read = 0  # bytes of that chunk so far
        self.expect = False  # a 100 Continue is owed before the body is read
        self.reserved = False  # the body budget was asked for
        self.close_after = False


class Connection:
    """One client connection: its socket, its parser, and the state between two readiness
    events. It is the parser's protocol: llhttp calls the ``on_*`` methods as it frames."""

    __slots__ = (
        "begun",
        "closing",
        "done",
        "draining",
        "ended",
        "environ",
        "events",
        "expires",
        "fd",
        "fresh",
        "limits",
        "linger",
        "message",
        "out",
        "parked",
        "parser",
        "partial",
        "reserved",
        "sock",
        "stalled",
        "want",
    )

    def __init__(self, sock: socket.socket, environ: dict[str, Any], expires: float, limits: _Limits) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.environ = environ  # what every request's WSGI environ on it starts from
        self.limits = limits
        self.parser: Any = httptools.HttpRequestParser(self)
        self.message: _Request | None = None  # the request being parsed
        self.done: collections.deque[_Request | BadRequest] = collections.deque()  # to answer
        self.ended = False  # nothing more is parsed (after a refusal or a last request)
        self.events = 0  # parser callbacks so far
        self.stalled = 0  # bytes read since the parser last made visible progress
        self.partial = 0  # bytes of the head line in progress
        self.begun = False  # a request began in the current read
        self.fresh = True  # no request has begun on it yet
        self.out: memoryview | None = None  # answer bytes the client has not taken yet
        self.closing = False  # close once ``out`` is sent
        # Half-close and drain instead: the client may still be sending what we will not read
        # (closing with unread bytes resets the connection, and the client loses the answer).
        self.linger = False
        self.draining = False
        self.expires = expires  # dropped by the supervisor when still armed after this
        self.reserved = 0  # bytes of the body budget held
        self.want = 0  # bytes of the body budget asked for, while parked
        self.parked = False  # waiting for body budget (not armed, no deadline)

    def close(self) -> None:
        self.parser = None  # it holds the bound callbacks: a reference cycle
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- feeding the parser --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data``; complete requests and refusals go to ``done``, in order."""
        if self.ended:
            return  # after the last request: read (and drained), never parsed
        events = self.events
        self.begun = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._end()  # an upgrade (or CONNECT) is answered as a plain request, then closed
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Stop):
                self._end()
            elif not self.ended:  # else: bytes after a request that closes the connection
                self._refuse(_parser_refusal(exc))
            return
        message = self.message
        try:
            if message is None:
                self.partial = 0  # llhttp begins a message at its first byte: none is open
            elif not message.headers_done:
                # In a head, the line in progress is what follows the last LF (llhttp
                # checked the lines before); llhttp buffers it without a callback.
                end = data.rfind(b"\n")
                if end >= 0:
                    self.partial = len(data) - end - 1
                elif self.begun:
                    self.partial = 0  # the request line, bounded by on_url
                else:
                    self.partial += len(data)
                if self.partial > self.limits.head:
                    raise BadRequest("431 Request Header Fields Too Large", "request head too large")
            if self.events == events:
                # An endless trailer line (or chunk extension): nothing llhttp tells of.
                self.stalled += len(data)
                if self.stalled > self.limits.head:
                    raise BadRequest("431 Request Header Fields Too Large", "request head too large")
            else:
                self.stalled = 0
            if message is not None and message.chunk_open:
                message.chunk_open = False
                self._check_chunk_size(message, data)
        except BadRequest as exc:
            self._refuse(exc)

    def _check_chunk_size(self, message: _Request, data: bytes) -> None:
        """Refuse a chunked body at once when the size of the chunk now arriving passes the
        limit (llhttp does not tell the size: it is on the line that ends where the chunk's
        data, all at the end of ``data``, starts; llhttp validated it as hex)."""
        end = len(data) - message.chunk_read
        if data[end - 2 : end] != b"\r\n":
            return
        line = data[data.rfind(b"\n", 0, end - 1) + 1 : end - 2].partition(b";")[0]
        try:
            size = int(line, 16)
        except ValueError:
            return  # a trailer line: this was the last chunk, or the line began in a past read
        if len(message.body) - message.chunk_read + size > self.limits.body:
            raise self._too_large()

    def _too_large(self) -> BadRequest:
        return BadRequest(
            "413 Payload Too Large",
            f"the request body is larger than the limit of {self.limits.body} bytes (ORCHESTRATE_MAX_REQUEST_BYTES)",
            "PAYLOAD_TOO_LARGE",
        )

    def _refuse(self, exc: BadRequest) -> None:
        message = self.message
        if message is not None and "PATH_INFO" in message.environ:
            exc.environ = message.environ
        else:
            exc.environ = environ = self.environ.copy()
            url = message.url if message is not None else b""
            environ["REQUEST_METHOD"] = self.parser.get_method().decode("ascii") if url else ""
            environ["PATH_INFO"] = url.partition(b"?")[0].decode("latin-1")
        self.done.append(exc)
        self._end()

    def _end(self) -> None:
        self.ended = True
        self.message = None

    # ---- llhttp's callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.events += 1
        self.fresh = False
        self.begun = True
        self.message = message = _Request()
        message.environ = self.environ.copy()

    def on_url(self, url: bytes) -> None:
        self.events += 1
        message = self.message
        assert message is not None
        message.url += url
        message.head_bytes += len(url)
        if len(message.url) + 16 > self.limits.line:  # with the method and the version
            raise BadRequest("414 URI Too Long", "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.events += 1
        message = self.message
        assert message is not None
        size = len(name) + len(value) + 4
        message.head_bytes += size
        message.fields += 1
        limits = self.limits
        # One test on the common path; which limit (or a trailer) is sorted out off it.
        if (
            message.headers_done
            or size > limits.field + 2
            or message.fields > limits.fields
            or message.head_bytes > limits.head
        ):
            if message.headers_done:  # a trailer: bounded like headers, then dropped
                if message.head_bytes > limits.head:
                    raise BadRequest("431 Request Header Fields Too Large", "trailers too large")
                return
            if size > limits.field + 2:
                raise BadRequest("431 Request Header Fields Too Large", "header too large")
            if message.fields > limits.fields:
                raise BadRequest("431 Request Header Fields Too Large", "too many headers")
            raise BadRequest("431 Request Header Fields Too Large", "headers too large")
        key = _ENVIRON_KEYS.get(name)
        if key is None:
            key = _environ_key(name)
        if not key:
            return  # as gunicorn: X_Foo would pass for X-Foo in the environ
        text = value.decode("latin-1").strip(" \t")
        if key in _FRAMING_KEYS:
            if key == "CONTENT_LENGTH":
                message.length = int(text)  # digits only, and only one: llhttp checked
            elif key == "HTTP_TRANSFER_ENCODING":
                # llhttp frames any coding list ending in chunked; we decode no other coding.
                if text.lower() != "chunked":
                    raise BadRequest("501 Not Implemented", "only the chunked transfer coding")
                message.chunked = True
            elif text.lower() != "100-continue":  # Expect
                raise BadRequest("417 Expectation Failed", "only 100-continue is supported")
            else:
                message.expect = True
        environ = message.environ
        if key in environ and key.startswith("HTTP_"):
            environ[key] += "," + text
        else:
            environ[key] = text

    def on_headers_complete(self) -> None:
        self.events += 1
        message = self.message
        assert message is not None
        message.headers_done = True
        message.head_bytes = 0  # trailers are counted from here
        parser = self.parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            if version == "0.9":  # a request line without a version
                raise BadRequest("400 Bad Request", "invalid request line")
            raise BadRequest("505 HTTP Version Not Supported", "only HTTP/1.0 and 1.1")
        message.http10 = http10 = version == "1.0"
        if http10 and message.chunked:  # how request smuggling starts (RFC 9112, 6.1)
            raise BadRequest("400 Bad Request", "Transfer-Encoding in HTTP/1.0")
        environ = message.environ
        method = parser.get_method()
        environ["REQUEST_METHOD"] = _METHODS.get(method) or method.decode("ascii")
        environ["SERVER_PROTOCOL"] = "HTTP/1.0" if http10 else "HTTP/1.1"
        target = _TARGETS.get(message.url)
        if target is None:
            target = _split_target(message.url)
        environ["RAW_URI"], environ["PATH_INFO"], environ["QUERY_STRING"] = target
        message.expect = message.expect and not http10 and (message.chunked or message.length > 0)
        if message.length > self.limits.body:
            # The application answers 413 from the headers; the body is never read.
            message.close_after = True
            message.keep = False
            message.expect = False
            self.done.append(message)
            raise _Stop

    def on_body(self, body: bytes) -> None:
        self.events += 1
        message = self.message
        assert message is not None
        if message.body:
            if isinstance(message.body, bytes):
                message.body = bytearray(message.body)
            message.body += body
        else:
            message.body = body
        if message.chunked:
            message.chunk_read += len(body)
            if len(message.body) > self.limits.body:
                raise self._too_large()

    def on_chunk_header(self) -> None:
        self.events += 1
        message = self.message
        assert message is not None
        message.chunk_open = True
        message.chunk_read = 0

    def on_chunk_complete(self) -> None:
        self.events += 1
        message = self.message
        assert message is not None
        message.chunk_open = False

    def on_message_complete(self) -> None:
        self.events += 1
        message = self.message
        assert message is not None
        parser = self.parser
        message.keep = parser.should_keep_alive() and not parser.should_upgrade()
        message.expect = False
        self.done.append(message)
        self.message = None
        if not message.keep:
            self.ended = True  # llhttp refuses what follows; it is not a request


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


class ScoringWorker(Worker):
    """See the module docstring. Linux only (epoll); ``scoring._gunicorn`` picks gthread
    elsewhere."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        server_cfg = getattr(self.app, "scoring_config", None)
        self.max_body = server_cfg.max_request_bytes if server_cfg else 100 * 1024 * 1024
        self.request_timeout = server_cfg.timeout if server_cfg else 0.0
        cfg = self.cfg
        self.nthreads = max(1, cfg.threads)
        self.keepalive = cfg.keepalive
        self.max_conns = cfg.worker_connections
        self.multiprocess = cfg.workers > 1
        # gunicorn's request limits, read as gunicorn reads them (0: its own maximum).
        line = min(cfg.limit_request_line, 8190) or 8190
        field = cfg.limit_request_field_size or 8190
        self.limits = _Limits(
            line=line,
            fields=min(cfg.limit_request_fields, 32768) or 32768,
            field=field,
            head=max(_MAX_HEAD, line + field + 8),
            body=self.max_body,
        )
        self.body_budget = self.nthreads * (self.max_body + 1)
        self.last_request = self.max_requests - 1  # max_requests: sys.maxsize when unset

    # ---- set-up ---------------------------------------------------------------------------

    def init_process(self) -> None:
        self.epoll = select.epoll()
        self.listeners: dict[int, tuple[socket.socket, tuple[str, str]]] = {}
        self.idle: dict[int, Connection] = {}  # armed connections, waiting for their client
        self.nconns = 0
        self.ready: collections.deque[tuple[int, int]] = collections.deque()
        self.accepting = False
        self.accept_again = 0.0  # after running out of file descriptors: when to try again
        self.stopping = False
        self.claims: dict[int, bool] = {}
        self.serial = itertools.count()
        # Per request thread: (claim key, start, environ, connection) while answering.
        self.busy: list[tuple[int, float, dict[str, Any], Connection] | None] = [None] * self.nthreads
        self.stuck: set[int] = set()  # threads still inside a request that was answered 504
        # When each thread started its current request (reading, answering, writing); 0: none.
        self.since = [0.0] * self.nthreads
        self.leader = 0
        self.lock = threading.Lock()
        self.accept_lock = threading.Lock()
        self.wake = [threading.Event() for _ in range(self.nthreads)]
        self.date = _Date()
        self.reserved = 0  # body budget in use (under ``lock``)
        self.parked: collections.deque[Connection] = collections.deque()
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
                if self.accept_again and now >= self.accept_again:
                    self.accept_again = 0.0
                    self._set_accepting(True)
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
        data = self._head(status, headers, len(body), close=True, http10=False) + body
        try:
            conn.sock.send(data)
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _close_expired(self, now: float) -> None:
        """Drop armed connections past their deadline: an idle keep-alive connection, a
        request head not complete in time, a body or an answer not moving."""
        for fd, conn in list(self.idle.items()):
            if conn.expires < now and self.idle.pop(fd, None) is not None:
                self._drop(conn)

    def _shutdown(self) -> None:
        self.stopping = True
        self._set_accepting(False)
        # Take what the kernel has queued for this worker, then close the listeners at once:
        # from then on the kernel gives new connections to the other servers on the port (the
        # next deployment's, with SO_REUSEPORT or an inherited socket) and moves any it queued
        # here meanwhile to theirs (tcp_migrate_req). Holding them open while draining left
        # connections queued on a socket nobody accepts from.
        listeners, self.listeners = self.listeners, {}
        for listener, name in listeners.values():
            self._accept(listener, name, last=True)
            listener.close()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline:
            # Idle keep-alive connections go now (a request already sent on one is answered).
            # A connection that has not sent its first request yet is not idle: its request
            # is on the way (a proxy connects before it forwards), so it gets until its head
            # deadline, as any new connection does.
            for fd, conn in list(self.idle.items()):
                if (
                    not conn.fresh
                    and not conn.done
                    and conn.message is None
                    and conn.out is None
                    and not _has_data(conn.sock)
                    and self.idle.pop(fd, None) is not None
                ):
                    self._drop(conn)
            if self.nconns <= 0:
                break
            time.sleep(_TICK)
            self._supervise(time.monotonic())
            self._close_expired(time.monotonic())

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
                conn = None
                try:
                    listener = self.listeners.get(fd)
                    if listener is not None:
                        self._accept(*listener)
                        continue
                    conn = self.idle.pop(fd, None)
                    if conn is not None:
                        self._on_ready(index, conn)
                except Exception:  # the loop must survive anything one connection does
                    self.log.exception("error in the connection loop")
                    if conn is not None:
                        self._drop(conn)
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

    def _accept(self, listener: socket.socket, name: tuple[str, str], *, last: bool = False) -> None:
        """Accept what ``listener`` has queued (``last``: also while stopping)."""
        while (self.accepting or last) and self.nconns < self.max_conns:
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (
                    errno.EMFILE,
                    errno.ENFILE,
                    errno.ENOBUFS,
                    errno.ENOMEM,
                ):
                    # The listener stays readable: polling it again at once would spin.
                    self.log.warning("cannot accept a connection (%s); pausing for 0.5 s", exc)
                    self.accept_again = time.monotonic() + 0.5
                    self._set_accepting(False)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EBADF):
                    return
                raise
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.nconns += 1
            conn = Connection(
                sock,
                self._connection_environ(name, addr),
                time.monotonic() + self.keepalive,
                self.limits,
            )
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
        if conn.fd < 0:
            return  # dropped already
        if conn.reserved:
            self._release(conn)
        try:
            self.epoll.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        conn.close()
        conn.fd = -1
        with self.lock:
            self.nconns -= 1
            resume = not self.stopping and not self.accepting and not self.accept_again and self.nconns < self.max_conns
        if resume:
            self._set_accepting(True)

    def _arm(self, conn: Connection, events: int) -> None:
        self.idle[conn.fd] = conn
        try:
            self.epoll.modify(conn.fd, events)
        except OSError:
            if self.idle.pop(conn.fd, None) is not None:
                self._drop(conn)

    # ---- the body budget -------------------------------------------------------------------

    def _reserve(self, conn: Connection, want: int) -> bool:
        """Hold ``want`` bytes of the body budget for ``conn``, or park it (not armed) until
        they are free; whether it holds them now."""
        with self.lock:
            if not self.parked and (not self.reserved or self.reserved + want <= self.body_budget):
                self.reserved += want
                conn.reserved = want
                return True
            conn.want = want
            conn.parked = True
            self.parked.append(conn)
            return False

    def _release(self, conn: Connection) -> None:
        """Give back ``conn``'s share of the budget; resume parked connections that fit."""
        resumed = []
        with self.lock:
            self.reserved -= conn.reserved
            conn.reserved = 0
            while self.parked:
                waiting = self.parked[0]
                if self.reserved and self.reserved + waiting.want > self.body_budget:
                    break
                self.parked.popleft()
                self.reserved += waiting.want
                waiting.reserved = waiting.want
                waiting.parked = False
                resumed.append(waiting)
        for waiting in resumed:
            try:
                self._send_continue(waiting)
            except OSError:
                self._drop(waiting)
                continue
            waiting.expires = time.monotonic() + _IO_TIMEOUT
            self._arm(waiting, _ONESHOT_IN)

    # ---- one connection's turn -------------------------------------------------------------

    # ---- one connection's turn -------------------------------------------------------------

    def _on_ready(self, index: int, conn: Connection) -> None:
        """Move ``conn`` along: send what its client can take, or read and answer every
        complete request in what was read; then arm it again, or close it."""
        sock = conn.sock
        try:
            if conn.draining:
                if sock.recv(_RECV):
                    self._arm(conn, _ONESHOT_IN)
                else:
                    self._drop(conn)
                return
            if conn.out is not None:
                if not self._flush(conn):
                    conn.expires = time.monotonic() + _IO_TIMEOUT
                    self._arm(conn, _ONESHOT_OUT)
                    return
                if conn.closing:
                    self._close(conn)
                    return
                data = b""  # answer what was read already before reading more
            else:
                data = sock.recv(_RECV)
                if not data:
                    self._drop(conn)
                    return
        except (BlockingIOError, InterruptedError):
            self._arm(conn, _ONESHOT_OUT if conn.out is not None else _ONESHOT_IN)
            return
        except OSError:
            self._drop(conn)
            return
        self.since[index] = time.monotonic()
        answered = False
        try:
            if data:
                conn.feed(data)
            answered = self._process(index, conn)
        except OSError:
            conn.closing = True
            conn.linger = False
            conn.out = None
        except Exception:  # a bug here must not kill the thread
            self.log.exception("error answering a request")
            conn.closing = True
            conn.linger = False
            conn.out = None
        self.since[index] = 0.0
        if conn.parked:
            return  # armed again once body budget is free
        if conn.out is not None:
            conn.expires = time.monotonic() + _IO_TIMEOUT
            self._arm(conn, _ONESHOT_OUT)
        elif conn.closing:
            self._close(conn)
        elif conn.ended and not conn.done:
            # The last request is answered; whatever the client still sends is not read.
            conn.closing = conn.linger = True
            self._close(conn)
        else:
            message = conn.message
            if message is not None and message.headers_done:
                conn.expires = time.monotonic() + _IO_TIMEOUT
            elif answered:
                conn.expires = time.monotonic() + self.keepalive
            self._arm(conn, _ONESHOT_IN)

    def _close(self, conn: Connection) -> None:
        """Close ``conn`` once its last answer is sent (draining it first if asked to)."""
        if not conn.linger:
            self._drop(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.draining = True
        conn.expires = time.monotonic() + _LINGER
        self._arm(conn, _ONESHOT_IN)

    def _process(self, index: int, conn: Connection) -> bool:
        """Answer the requests parsed on ``conn``, in order, until one's answer is not all
        sent; then see to the body still arriving. Whether any request was answered."""
        answered = False
        done = conn.done
        while done and not conn.closing and conn.out is None:
            item = done.popleft()
            if isinstance(item, BadRequest):
                self._send_error(conn, item)
                break
            self._answer(index, conn, item)
            answered = True
        message = conn.message
        if message is not None and message.headers_done and not done and not conn.closing and conn.out is None:
            self._await_body(conn, message)
        return answered

    def _await_body(self, conn: Connection, message: _Request) -> None:
        """Once per request whose body is still to come: take a share of the body budget for
        it (or park ``conn`` until there is one), then send the 100 Continue it may be owed."""
        if not message.reserved:
            message.reserved = True
            want = self.max_body + 1 if message.chunked else message.length
            if want > _RECV and not self._reserve(conn, want):
                return
        self._send_continue(conn)

    def _send_continue(self, conn: Connection) -> None:
        message = conn.message
        if message is not None and message.expect:
            message.expect = False
            if conn.sock.send(_CONTINUE) != len(_CONTINUE):
                raise OSError(errno.ENOBUFS, "the client does not read")

    def _answer(self, index: int, conn: Connection, req: _Request) -> None:
        """Run the application on ``req`` and send (or queue) its answer."""
        if conn.reserved:
            self._release(conn)
        environ = req.environ
        environ["wsgi.input"] = _Input(bytes(req.body))
        key = next(self.serial)
        if key >= self.last_request and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
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
            conn.closing = True
            return
        keep = req.keep and not req.close_after and self.alive and not self.stopping
        body_out = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        out = self._head(status, headers, len(body_out), close=not keep, http10=req.http10)
        if environ["REQUEST_METHOD"] != "HEAD" and not status.startswith(_NO_BODY_STATUS):
            out += body_out
        conn.closing = not keep
        conn.linger = req.close_after
        self._send(conn, out)

    def _call(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], list[bytes]]:
        result: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info and result:
                raise exc_info[1].with_traceback(exc_info[2])
            result[:] = [status, headers]
            return _no_write

        # PEP 3333 passes the headers as a list; gunicorn's stubs say any iterable.
        iterable = self.wsgi(environ, start_response)  # type: ignore[arg-type]
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
        length: int,
        *,
        close: bool,
        http10: bool,
    ) -> bytes:
        """The status line and headers; Content-Length is ``length`` unless the application
        set one (a HEAD answer's is the GET answer's), none for 1xx and 204."""
        lines = [f"HTTP/1.1 {status}\r\n"]
        has_length = False
        for name, value in headers:
            if not has_length and name.lower() == "content-length":
                has_length = True
            lines.append(f"{name}: {value}\r\n")
        if not has_length and not status.startswith(_NO_LENGTH_STATUS):
            lines.append(f"Content-Length: {length}\r\n")
        lines.append(self.date.line())
        if close:
            lines.append("Connection: close\r\n")
        elif http10:
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _send(self, conn: Connection, data: bytes) -> None:
        """Send ``data`` as far as the client takes it now; the rest waits in ``conn.out``."""
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            conn.out = memoryview(data)[sent:]

    def _flush(self, conn: Connection) -> bool:
        """Send more of ``conn.out``; whether all of it is sent."""
        out = conn.out
        assert out is not None
        sent = conn.sock.send(out)
        if sent < len(out):
            conn.out = out[sent:]
            return False
        conn.out = None
        return True

    def _send_error(self, conn: Connection, exc: BadRequest) -> None:
        """Answer a request this worker refuses (counted and logged like any other); the
        connection is closed after it."""
        conn.done.clear()
        conn.closing = True
        conn.linger = True
        if conn.reserved:
            self._release(conn)
        if self.observe is not None:
            self.observe.refused(exc.environ or dict(conn.environ), int(exc.status[:3]))
        body = _error_body(exc.error_code, exc.message)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ]
        try:
            self._send(
                conn,
                self._head(exc.status, headers, len(body), close=True, http10=False) + body,
            )
        except OSError:
            conn.out = None


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


def _environ_key(name: bytes) -> str:
    """The environ key of header ``name`` ("" for a name with an underscore, dropped as
    gunicorn drops it: X_Foo would pass for X-Foo), cached for the names seen first."""
    text = name.decode("latin-1")
    key = "" if "_" in text else text.upper().replace("-", "_")
    if key and key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = "HTTP_" + key
    if len(_ENVIRON_KEYS) < 512:
        _ENVIRON_KEYS[name] = key
    return key


def _split_target(url: bytes) -> tuple[str, str, str]:
    """RAW_URI, PATH_INFO and QUERY_STRING of a request target, cached for the targets seen
    first (a scoring server is asked for a handful of paths)."""
    if url[:1] == b"/" and b"#" not in url:
        path, _, query = url.partition(b"?")  # the origin form: llhttp checked it
    elif url == b"*":
        path, query = b"*", b""
    else:
        try:
            parts = httptools.parse_url(url)  # the absolute form, or a fragment
        except httptools.HttpParserInvalidURLError:
            raise BadRequest("400 Bad Request", "invalid request target") from None
        path, query = parts.path or b"/", parts.query or b""
        if not path.startswith(b"/"):
            raise BadRequest("400 Bad Request", "invalid request target")
    if b"%" in path:
        path = unquote_to_bytes(path)
    target = (url.decode("latin-1"), path.decode("latin-1"), query.decode("latin-1"))
    if len(_TARGETS) < 512:
        _TARGETS[url] = target
    return target


_ENVIRON_KEYS: dict[bytes, str] = {}
_TARGETS: dict[bytes, tuple[str, str, str]] = {}
_METHODS = {name.encode(): name for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
_FRAMING_KEYS = frozenset(("CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING", "HTTP_EXPECT"))


def _has_data(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False
