"""Addresses a server of this machine listens on: checked before anything is recorded (the local
and docker targets, `orchestrate serve`), and free ports for private health-check listeners."""

from __future__ import annotations

import errno
import socket

from .errors import ConfigError


def check_listen_address(host: str, port: int, *, option: str = "-C host=...") -> None:
    """Raise a ConfigError saying which is wrong when a server could not listen on host:port:
    a host that is no IPv4 address of this machine, a port in use, or one that needs root.
    Port 0 checks the host alone."""
    if not host.strip():  # bind() reads '' as every interface, which nobody means by leaving it empty
        raise ConfigError(
            "the host to listen on is empty",
            hint=f"give an address of this machine with {option}, e.g. 127.0.0.1 or 0.0.0.0",
        )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ConfigError(
            f"cannot listen on host {host!r}: it is not an IPv4 address or a name this machine resolves ({reason})",
            hint=f"give an address of this machine with {option}, e.g. 127.0.0.1 or 0.0.0.0",
        ) from None
    except OverflowError:
        raise ConfigError(f"port {port} is not a port (0-65535)") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use by another program",
                hint="choose another port, or stop the program that holds it",
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"port {port} on {host} needs root privileges", hint="choose a port from 1024 up"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                f"cannot listen on host {host!r}: it is not an address of this machine",
                hint=f"give an address of this machine with {option}, e.g. 127.0.0.1 or 0.0.0.0",
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def free_port(host: str) -> int:
    """A port of `host` nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
