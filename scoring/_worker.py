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
- ``SIGTERM`` (or ``max_requests`` answered): stop accepting, close idle keep-alive
  connections, let requests in flight finish (up to ``graceful_timeout``), answering them
  with ``Connection: close``.

Clients are untrusted, so a thread never waits on one: request heads, bodies and answers
move only when epoll says the socket is ready. A connection's state between two readiness
events lives on its ``Connection``: the bytes not yet parsed, a request waiting for the rest
of its body, an answer the client has not read yet (nothing more is read from a client that
does not read its answers). Each armed connection has a deadline: the whole request head
within ``keepalive`` seconds of the connection going idle (trickling bytes does not extend
it), and at most ``_IO_TIMEOUT`` seconds without progress while a body or an answer is in
transit. Bodies larger than one read are buffered only within a per-worker byte budget
(``threads`` x ``max_request_bytes``); a body beyond it waits, unread, for its turn.

Parsing is strict, so that no proxy in front can frame a request differently: no bare CR
or LF, no control characters, no obs-fold, one Content-Length (digits only) and never with
Transfer-Encoding, which must be ``chunked`` (HTTP/1.1 only), chunk sizes in hex only.
Such requests are answered 400 (or 414, 431, 501, 505) and the connection closed. gunicorn's
``limit_request_line``, ``limit_request_fields`` and ``limit_request_field_size`` apply.

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
_IO_TIMEOUT = 30.0  # a client making no progress this long mid-body or mid-answer is dropped
_MAX_HEAD = 65536  # request line and headers, in all (unless gunicorn's limits need more)
_RECV = 262144  # one read; a body larger than this needs a share of the body budget
_LINGER = 2.0  # after refusing a request: how long its unread bytes are drained, seconds

_IN = select.EPOLLIN if hasattr(select, "EPOLLIN") else 1
_ONESHOT = select.EPOLLONESHOT if hasattr(select, "EPOLLONESHOT") else 0
_ONESHOT_IN = _IN | _ONESHOT
_ONESHOT_OUT = (select.EPOLLOUT if hasattr(select, "EPOLLOUT") else 4) | _ONESHOT
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}").fullmatch
# Control characters other than HT, CR and LF (CR and LF are checked to come in pairs).
_CTL = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"
_CHUNK_LINE_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUS = ("1", "204", "304")
_NO_LENGTH_STATUS = ("1", "204")


class BadRequest(Exception):
    """A request this worker answers itself, then closes the connection."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Request:
    """A parsed request head: what framing its body has and how to answer it."""

    __slots__ = (
        "chunked",
        "close_after",
        "decoder",
        "environ",
        "expect",
        "http10",
        "keep",
        "length",
    )

    def __init__(
        self,
        environ: dict[str, Any],
        http10: bool,
        keep: bool,
        length: int,
        chunked: bool,
        expect: bool,
    ) -> None:
        self.environ = environ
        self.http10 = http10
        self.keep = keep
        self.length = length  # Content-Length (0 when chunked)
        self.chunked = chunked
        self.decoder: _Chunked | None = None  # while a chunked body is arriving
        self.expect = expect  # a 100 Continue is owed before the body is read
        self.close_after = False


class Connection:
    """One client connection: its socket and the state between two readiness events."""

    __slots__ = (
        "body",
        "buf",
        "closing",
        "draining",
        "environ",
        "expires",
        "fd",
        "linger",
        "out",
        "parked",
        "pending",
        "reserved",
        "sock",
        "want",
    )

    def __init__(self, sock: socket.socket, environ: dict[str, Any], expires: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.environ = environ  # what every request's WSGI environ on it starts from
        self.buf = b""  # read, not parsed yet
        self.pending: _Request | None = None  # a request whose body is still arriving
        self.body: bytearray | None = None  # its Content-Length body so far
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
        self.limit_line = min(cfg.limit_request_line, 8190) or 8190
        self.limit_fields = min(cfg.limit_request_fields, 32768) or 32768
        self.limit_field = cfg.limit_request_field_size or 8190
        self.max_head = max(_MAX_HEAD, self.limit_line + self.limit_field + 8)
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
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline:
            # Idle keep-alive connections go now (a request already sent on one is answered).
            for fd, conn in list(self.idle.items()):
                if (
                    not conn.buf
                    and conn.pending is None
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

    def _accept(self, listener: socket.socket, name: tuple[str, str]) -> None:
        while self.accepting and self.nconns < self.max_conns:
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
                pending = conn.pending
                if pending is None:
                    conn.buf = conn.buf + data if conn.buf else data
                elif pending.decoder is not None:
                    pending.decoder.feed(data)
                else:
                    conn.body += data  # type: ignore[operator]
            answered = self._process(index, conn)
        except BadRequest as exc:
            self._send_error(conn, exc)
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
        else:
            if conn.pending is not None:
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
        """Answer the complete requests buffered on ``conn``, in order, until one needs more
        bytes or its answer is not all sent; whether any was answered."""
        answered = False
        while not conn.closing and conn.out is None:
            req = conn.pending
            if req is not None:
                body = self._complete_body(conn, req)
                if body is None:
                    break
            else:
                buf = conn.buf
                if not buf:
                    break
                if buf[0] == 13 or buf[0] == 10:
                    # Empty lines before a request line are ignored (RFC 9112, 2.2).
                    conn.buf = buf = buf.lstrip(b"\r\n")
                    if not buf:
                        break
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self._check_partial_head(buf)
                    break
                req = self._parse(buf[:end], conn)
                body = self._start_body(conn, req, buf[end + 4 :])
                if body is None:
                    break
            self._answer(index, conn, req, body)
            answered = True
        return answered

    def _check_partial_head(self, buf: bytes) -> None:
        if len(buf) > self.limit_line and buf.find(b"\r\n", 0, self.limit_line + 2) < 0:
            raise BadRequest("414 URI Too Long", "request line too long")
        if len(buf) > self.max_head:
            raise BadRequest("431 Request Header Fields Too Large", "headers too large")

    def _start_body(self, conn: Connection, req: _Request, rest: bytes) -> bytes | None:
        """The body of ``req`` if ``rest`` holds all of it (``conn.buf`` then keeps what
        follows); else None, with ``conn`` waiting for the rest."""
        if req.chunked:
            decoder = _Chunked(self.max_body, self.limit_field, self.max_head)
            decoder.feed(rest)
            req.decoder = decoder
            conn.buf = b""
            conn.pending = req
            if decoder.done:
                return self._complete_body(conn, req)
            want = self.max_body + 1
        elif req.length > self.max_body:
            # The application answers 413 from the headers; the body is never read.
            conn.buf = b""
            req.close_after = True
            return b""
        elif len(rest) >= req.length:
            conn.buf = rest[req.length :]
            return rest[: req.length]
        else:
            conn.body = bytearray(rest)
            conn.buf = b""
            conn.pending = req
            want = req.length
        if want > _RECV and not self._reserve(conn, want):
            return None
        self._send_continue(conn)
        return None

    def _complete_body(self, conn: Connection, req: _Request) -> bytes | None:
        """The body of the request waiting on ``conn``, once all of it is here."""
        decoder = req.decoder
        if decoder is not None:
            if not decoder.done:
                return None
            body = bytes(decoder.body)
            if decoder.too_large:
                req.close_after = True  # the rest of the body is never read
            else:
                conn.buf = decoder.rest
        else:
            data = conn.body
            if data is None or len(data) < req.length:
                return None
            body = bytes(data[: req.length])
            conn.buf = bytes(data[req.length :])
            conn.body = None
        conn.pending = None
        if conn.reserved:
            self._release(conn)
        return body

    def _send_continue(self, conn: Connection) -> None:
        req = conn.pending
        if req is not None and req.expect:
            req.expect = False
            if conn.sock.send(_CONTINUE) != len(_CONTINUE):
                raise OSError(errno.ENOBUFS, "the client does not read")

    def _answer(self, index: int, conn: Connection, req: _Request, body: bytes) -> None:
        """Run the application on ``req`` and send (or queue) its answer."""
        environ = req.environ
        environ["wsgi.input"] = _Input(body)
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
        """Answer a request this worker rejects; the connection is closed after it."""
        conn.pending = None
        conn.body = None
        conn.buf = b""
        conn.closing = True
        conn.linger = True
        if conn.reserved:
            self._release(conn)
        body = _error_body("BAD_REQUEST", exc.message)
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

    # ---- parsing -----------------------------------------------------------------------------

    def _parse(self, head_bytes: bytes, conn: Connection) -> _Request:
        """The request whose line and headers are ``head_bytes``; raises ``BadRequest``."""
        # CR and LF only as line ends, no other control characters: a proxy that ends lines
        # at a bare LF (or drops NUL) would otherwise see other headers than this parser.
        crlf = head_bytes.count(b"\r\n")
        if (
            head_bytes.count(b"\r") != crlf
            or head_bytes.count(b"\n") != crlf
            or len(head_bytes.translate(None, _CTL)) != len(head_bytes)
        ):
            raise BadRequest("400 Bad Request", "invalid character in the request head")
        lines = head_bytes.decode("latin-1").split("\r\n")
        if len(lines[0]) > self.limit_line:
            raise BadRequest("414 URI Too Long", "request line too long")
        if len(lines) > self.limit_fields + 1:
            raise BadRequest("431 Request Header Fields Too Large", "too many headers")
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
        limit_field = self.limit_field
        for line in itertools.islice(lines, 1, None):
            if len(line) > limit_field:
                raise BadRequest("431 Request Header Fields Too Large", "header too large")
            name, sep, value = line.partition(":")
            key = _ENVIRON_KEYS.get(name) if sep else None  # names seen before are valid
            if key is None:
                # Also obs-fold (a line starting with a space) and "Name :" end up here.
                if not sep or not _TOKEN(name):
                    raise BadRequest("400 Bad Request", "invalid header line")
                if "_" in name:
                    continue  # as gunicorn: X_Foo would pass for X-Foo in the environ
                key = _environ_key(name)
            value = value.strip(" \t")
            if key == "CONTENT_LENGTH":
                # Digits only (no sign, no list, no non-ASCII digit), and all copies equal.
                if (
                    not (value.isascii() and value.isdigit())
                    or len(value) > 18
                    or (seen_length is not None and value != seen_length)
                ):
                    raise BadRequest("400 Bad Request", "invalid Content-Length")
                seen_length = value
                length = int(value)
            elif key == "HTTP_TRANSFER_ENCODING":
                if value.lower() != "chunked":
                    raise BadRequest("501 Not Implemented", "only chunked transfer coding")
                chunked = True
            elif key == "HTTP_CONNECTION":
                connection = connection + "," + value if connection else value
            elif key == "HTTP_EXPECT":
                if value.lower() != "100-continue":
                    raise BadRequest("417 Expectation Failed", "only 100-continue is supported")
                expect = not http10
            if key in environ and key.startswith("HTTP_"):
                environ[key] += "," + value
            else:
                environ[key] = value
        if chunked and (seen_length is not None or http10):
            # Either is how request smuggling starts (RFC 9112, 6.1 and 6.3).
            raise BadRequest("400 Bad Request", "Transfer-Encoding with Content-Length or HTTP/1.0")
        if connection:
            options = {option.strip().lower() for option in connection.split(",")}
            keep = "keep-alive" in options if http10 else "close" not in options
        else:
            keep = not http10
        return _Request(environ, http10, keep, length, chunked, expect and (chunked or length > 0))


class _Chunked:
    """A chunked request body, decoded as it arrives: hex sizes only (no sign, prefix or
    whitespace, at most 16 digits), extensions ignored, trailers read and dropped, at most
    ``limit + 1`` bytes kept (more means too large: decoding stops)."""

    __slots__ = (
        "body",
        "done",
        "limit",
        "line_limit",
        "raw",
        "remaining",
        "rest",
        "state",
        "too_large",
        "trailer",
        "trailer_limit",
    )

    _SIZE, _DATA, _CRLF, _TRAILER = range(4)

    def __init__(self, limit: int, line_limit: int, trailer_limit: int) -> None:
        self.limit = limit
        self.line_limit = line_limit
        self.trailer_limit = trailer_limit
        self.body = bytearray()
        self.raw = b""  # bytes received, not decoded yet
        self.state = self._SIZE
        self.remaining = 0  # of the current chunk's data
        self.trailer = 0  # trailer bytes so far
        self.done = False
        self.too_large = False
        self.rest = b""  # what followed the body (a pipelined request)

    def feed(self, data: bytes) -> None:
        """Decode ``data``; raises ``BadRequest`` at the first byte out of place."""
        buf = self.raw + data if self.raw else data
        pos = 0
        size = len(buf)
        while True:
            state = self.state
            if state == self._DATA:
                take = min(self.remaining, size - pos, self.limit + 1 - len(self.body))
                self.body += memoryview(buf)[pos : pos + take]
                pos += take
                self.remaining -= take
                if len(self.body) > self.limit:
                    self.too_large = self.done = True
                    pos = size
                    break
                if self.remaining:
                    break
                self.state = self._CRLF
            elif state == self._CRLF:
                if size - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise BadRequest("400 Bad Request", "invalid chunk")
                pos += 2
                self.state = self._SIZE
            else:
                end = buf.find(b"\r\n", pos, pos + self.line_limit + 2)
                if end < 0:
                    if size - pos > self.line_limit:
                        raise BadRequest("400 Bad Request", "chunk line too long")
                    break
                line = buf[pos:end]
                pos = end + 2
                if _CHUNK_LINE_CTL(line):
                    raise BadRequest("400 Bad Request", "invalid character in a chunk line")
                if state == self._SIZE:
                    digits = line.split(b";", 1)[0].rstrip(b" \t")
                    if not _HEX(digits):
                        raise BadRequest("400 Bad Request", "invalid chunk size")
                    self.remaining = int(digits, 16)
                    self.state = self._DATA if self.remaining else self._TRAILER
                elif not line:
                    self.done = True
                    self.rest = buf[pos:]
                    pos = size
                    break
                else:
                    self.trailer += len(line) + 2
                    if self.trailer > self.trailer_limit:
                        raise BadRequest("431 Request Header Fields Too Large", "trailers too large")
                    name, sep, _ = line.partition(b":")
                    if not sep or not _TOKEN(name.decode("latin-1")):
                        raise BadRequest("400 Bad Request", "invalid trailer line")
        self.raw = buf[pos:]


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
