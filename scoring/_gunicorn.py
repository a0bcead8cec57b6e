"""Running the app under gunicorn, in-process, with the model loaded before forking.

The model is loaded (and the app built) before gunicorn's arbiter exists, so a model that
cannot load stops the server before any socket is bound, and every worker forks with it in
memory. Workers are ``scoring._worker.ScoringWorker`` (keep-alive connections, ``threads``
requests at once, answered in the thread that read them); where there is no epoll (not
Linux), gunicorn's ``gthread`` with the shutdown fix below.
"""

from __future__ import annotations

import math
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from scoring._config import ServerConfig
from scoring._metrics import Metrics


class ThreadedScoringWorker(ThreadWorker):
    """gunicorn's gthread worker, minus a shutdown stall (the worker where there is no epoll).

    On SIGTERM, gunicorn 26's gthread worker waits for every open connection, blocking in
    its poller for the whole graceful timeout even when the only connections left are idle
    keep-alive ones (their 5 s expiry is checked only after the poll returns). One idle
    client connection then delays every shutdown, and every zero-downtime swap, by 30 s.
    Once shutting down, this closes idle keep-alive connections (no request is in flight on
    them) and polls in short steps; requests in flight still finish.
    """

    def wait_for_and_dispatch_events(self, timeout: float | None) -> None:
        if not self.alive:
            self._close_idle_connections()
            timeout = 0.2 if timeout is None else min(timeout, 0.2)
        return super().wait_for_and_dispatch_events(timeout)

    def _close_idle_connections(self) -> None:
        idle = getattr(self, "keepalived_conns", None)
        while idle:
            conn = idle.popleft()
            try:
                self.poller.unregister(conn.sock)
            except (OSError, KeyError, ValueError):
                pass
            self.nr_conns -= 1
            conn.close()


class ScoringServer(BaseApplication):
    """gunicorn application serving an already built WSGI app."""

    def __init__(
        self, app: Any, cfg: ServerConfig, metrics: Metrics, make_app: Callable[[], Any] | None = None
    ) -> None:
        # `app`, loaded before forking; or None and `make_app`, called in each worker.
        self._app = app
        self._make_app = make_app
        self._cfg = cfg
        self._metrics = metrics
        # Read by the worker (it enforces the body limit and the timeout itself).
        self.scoring_config = cfg
        super().__init__()

    def load_config(self) -> None:
        cfg = self._cfg
        binds = [f"{_host(cfg.host)}:{cfg.port}"]
        if cfg.public_fd is not None:
            # gunicorn serves only inherited sockets once it has any, so both come that way.
            binds = [f"fd://{fd}" for fd in (cfg.public_fd, cfg.private_fd) if fd is not None]
        elif cfg.private_port is not None:
            # Loopback, unless the server listens on every address (in a container, where the
            # docker target's health check reaches the private port from outside).
            private_host = _host(cfg.host) if cfg.host in ("0.0.0.0", "::") else "127.0.0.1"
            binds.append(f"{private_host}:{cfg.private_port}")
        metrics = self._metrics

        def pre_fork(server: Any, worker: Any) -> None:
            worker.scoring_slot = metrics.claim_slot()

        def post_fork(server: Any, worker: Any) -> None:
            metrics.use_slot(worker.scoring_slot)

        def child_exit(server: Any, worker: Any) -> None:
            metrics.release_slot(getattr(worker, "scoring_slot", 0))

        handoff_path = cfg.handoff_socket

        def when_ready(server: Any) -> None:
            if handoff_path:
                serve_handoff(handoff_path, server.LISTENERS[0].sock.fileno())

        def on_exit(server: Any) -> None:
            if handoff_path and os.path.exists(handoff_path):
                os.unlink(handoff_path)

        settings: dict[str, Any] = {
            "bind": binds,
            "workers": cfg.workers,
            "threads": cfg.threads,
            "worker_class": _worker_class(),
            "preload_app": self._app is not None,
            # gunicorn's own timeout kills a worker whose main loop stops heartbeating; request
            # deadlines are ours (504), so this only needs to catch a wedged process.
            "timeout": max(30, int(cfg.timeout) + 30),
            "graceful_timeout": max(1, math.ceil(cfg.graceful_timeout)),
            "keepalive": cfg.keepalive,
            "loglevel": cfg.log_level,
            "accesslog": None,
            "errorlog": "-",
            "reuse_port": cfg.reuse_port,
            "pidfile": cfg.pid_file,
            "proc_name": "scoring",
            "pre_fork": pre_fork,
            "post_fork": post_fork,
            "child_exit": child_exit,
            "when_ready": when_ready,
            "on_exit": on_exit,
            # No header-size surprises for big CSV/JSON bodies; body size is limited by the app.
            "limit_request_line": 8190,
            # gunicorn 26's control socket is one path per user: two servers (an old and a new
            # one sharing a port during a swap) would fight over it, and we do not use it.
            "control_socket_disable": True,
        }
        for key, value in settings.items():
            if key in self.cfg.settings:  # settings differ across gunicorn versions
                self.cfg.set(key, value)

    def load(self) -> Any:
        if self._app is None and self._make_app is not None:
            self._app = self._make_app()
        return self._app


def serve_handoff(path: str, listener_fd: int) -> None:
    """Hand the public listening socket to each process connecting to `path` (mode 0600).

    The next server on this address inherits the very same kernel socket, so connections
    queued on it when this server stops are accepted by the next one instead of reset."""
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous_umask = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(previous_umask)
    server.listen(4)

    def loop() -> None:
        while True:
            connection, _ = server.accept()
            with connection:
                socket.send_fds(connection, [b"L"], [listener_fd])

    threading.Thread(target=loop, name="socket-handoff", daemon=True).start()


def _worker_class() -> str:
    if hasattr(select, "epoll"):
        return "scoring._worker.ScoringWorker"
    if hasattr(ThreadWorker, "wait_for_and_dispatch_events"):
        return "scoring._gunicorn.ThreadedScoringWorker"
    return "gthread"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
