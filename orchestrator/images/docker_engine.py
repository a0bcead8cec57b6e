"""The Docker engine connection, and the one table that turns Docker SDK errors into ours.

Everything that talks to Docker (image builds, pushes, the `docker` target, and the cloud
targets that push images) connects through `connect()` and wraps its SDK calls in
`translated(...)`, so no `docker` or `requests` exception leaves orchestrate: each becomes the
most specific `TargetError`, chained with `from`. The `docker` package is imported here only
inside functions: importing this module costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, PermanentTargetError, RetryableTargetError, TargetError

if TYPE_CHECKING:
    import docker

START_HINT = (
    "start the engine (`sudo systemctl start docker`, or `sudo dockerd &`), or point DOCKER_HOST at "
    "one that runs; `bash scripts/test.sh` starts one for the test suite"
)

# SDK exception class name -> (our class, what it means). Looked up along the exception's
# MRO, most specific first; tests/docker/test_engine_errors.py checks every class in
# docker.errors has a row.
ERROR_TABLE: dict[str, tuple[type[TargetError], str]] = {
    "ImageNotFound": (PermanentTargetError, "image not found"),
    "NotFound": (PermanentTargetError, "not found"),
    "APIError": (PermanentTargetError, "the Docker engine refused the request"),  # by status below
    "BuildError": (PermanentTargetError, "the image build failed"),
    "ContainerError": (PermanentTargetError, "a container exited with an error"),
    "ImageLoadError": (PermanentTargetError, "the image could not be loaded"),
    "InvalidRepository": (PermanentTargetError, "invalid image repository name"),
    "InvalidArgument": (PermanentTargetError, "invalid argument to the Docker engine"),
    "InvalidVersion": (PermanentTargetError, "the Docker engine's API version is not supported"),
    "InvalidConfigFile": (PermanentTargetError, "the Docker client configuration is invalid"),
    "TLSParameterError": (PermanentTargetError, "the Docker TLS settings are invalid"),
    "NullResource": (PermanentTargetError, "a Docker resource id was empty"),
    "DeprecatedMethod": (PermanentTargetError, "a Docker SDK method is no longer supported"),
    "StreamParseError": (RetryableTargetError, "the Docker engine's answer could not be parsed"),
    "MissingContextParameter": (PermanentTargetError, "a Docker context setting is missing"),
    "ContextAlreadyExists": (PermanentTargetError, "the Docker context already exists"),
    "ContextException": (PermanentTargetError, "the Docker context is invalid"),
    "ContextNotFound": (PermanentTargetError, "the Docker context does not exist"),
    "DockerException": (PermanentTargetError, "the Docker engine cannot be used"),
    # The SDK talks HTTP through requests; these leave it unwrapped.
    "ConnectionError": (RetryableTargetError, "the connection to the Docker engine failed"),
    "Timeout": (RetryableTargetError, "the Docker engine did not answer in time"),
    "RequestException": (RetryableTargetError, "the request to the Docker engine failed"),
}


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _row(exc: BaseException) -> tuple[type[TargetError], str] | None:
    for klass in type(exc).__mro__:
        if klass.__name__ in ERROR_TABLE and klass.__module__.split(".")[0] in ("docker", "requests"):
            return ERROR_TABLE[klass.__name__]
    return None


def translate(exc: BaseException, doing: str, hint: str | None = None) -> TargetError | None:
    """Our error for an SDK exception raised while `doing` something, or None if not an SDK one."""
    row = _row(exc)
    if row is None:
        return None
    kind, meaning = row
    status = getattr(exc, "status_code", None)
    detail = _explanation(exc)
    if isinstance(status, int):
        if status >= 500 and "no such image" not in detail.lower():
            kind = RetryableTargetError
        elif status in (401, 403):
            kind, meaning = PermanentTargetError, "access denied"
        elif status == 409:
            kind, meaning = PermanentTargetError, "conflict"
        elif status == 429:
            kind, meaning = RetryableTargetError, "throttled"
    if type(exc).__name__ in ("ConnectionError", "DockerException") and _unreachable(detail):
        return PermanentTargetError(f"no Docker engine answers at {engine_address()} while {doing}", hint=START_HINT)
    return kind(f"{doing}: {meaning}: {detail}", hint=hint)


def _explanation(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip() or type(exc).__name__


def _unreachable(detail: str) -> bool:
    markers = (
        "Connection aborted",
        "Connection refused",
        "No such file or directory",
        "Error while fetching server API version",
        "Max retries exceeded",
    )
    return any(marker in detail for marker in markers)


@contextmanager
def translated(doing: str, hint: str | None = None) -> Iterator[None]:
    """Run SDK calls; a Docker or requests exception becomes our TargetError (chained)."""
    try:
        yield
    except Exception as exc:  # only SDK errors are translated; the rest re-raise unchanged
        ours = translate(exc, doing, hint)
        if ours is None:
            raise
        raise ours from exc


def connect(timeout: float = 120.0) -> docker.DockerClient:
    """A client for the engine DOCKER_HOST names (else the default socket), checked reachable."""
    try:
        import docker
    except ImportError:
        raise ConfigError("the Docker SDK is not installed", hint="pip install 'orchestrate[docker]'") from None
    with translated("connecting to the Docker engine"):
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    return client


def image_exists(client: Any, reference: str) -> bool:
    """Whether the engine has an image by this name or id."""
    import docker

    with translated(f"looking up image {reference}"):
        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
    return True
