"""Model URIs: where a model comes from, resolved once into a content-addressed snapshot.

A model is given as a local path or `file://` URI, `s3://bucket/prefix` (boto3, the standard
credential chain; `MLFLOW_S3_ENDPOINT_URL`, else boto3's own `AWS_ENDPOINT_URL`), or any URI
MLflow resolves when it is installed (`pip install 'orchestrate[mlflow]'`): `runs:/RUN/PATH`,
`models:/NAME/VERSION`, `models:/NAME@ALIAS`, `models:/NAME/STAGE`, `models:/NAME/latest`,
`models:/m-…` (MLflow 3 logged models), `mlflow-artifacts:/…`, gs://, wasbs://, http(s)….
`MLFLOW_TRACKING_URI` and `MLFLOW_REGISTRY_URI` are read by MLflow itself, as it always does.

`resolve` asks the registry what a URI names *now* (an alias → its version), downloads that
pinned address into a staging directory (retrying transient faults; a failed try leaves
nothing behind), and snapshots it under ORCHESTRATE_HOME/models/<digest>. The `ModelSource` it
returns records the URI as given and what it resolved to; deployments keep it, so `resume`
and `rollback` use the snapshot and never ask the registry again. `materialize` is the stage
side: the recorded snapshot, or (on another machine) the pinned address fetched again and
checked against the recorded digest.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from .. import secret_values
from ..errors import ConfigError, PermanentTargetError
from . import mlmodel

MLFLOW_EXTRA_HINT = "install MLflow's client with `pip install 'orchestrate[mlflow]'` (brings mlflow-skinny)"
# Tries of a download that failed with a transient fault (connection refused or reset, 5xx).
DOWNLOAD_ATTEMPTS = 3
_RETRY_INITIAL_S = 0.5


@dataclass(frozen=True)
class ModelSource:
    """A model URI as given, and what it resolved to when the deployment was created."""

    uri: str
    kind: str  # path | s3 | runs | registered | logged_model | artifacts
    # An address that yields the same files every time (an alias replaced by its version).
    pinned_uri: str | None = None
    registered_name: str | None = None
    version: str | None = None
    alias: str | None = None
    stage: str | None = None
    run_id: str | None = None
    model_id: str | None = None
    artifact_source: str | None = None
    tracking_uri: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, uri: str) -> ModelSource:
        """The recorded source; a deployment made before sources were recorded had a path."""
        if not data:
            return cls(uri=uri, kind="path")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def version_key(self) -> tuple[str, str] | None:
        """(registered name, version) when the source is a registered version."""
        return (self.registered_name, self.version) if self.registered_name and self.version else None

    def summary(self) -> str:
        """One line for people: `models:/churn@champion → version 7 (run 3f2a1b2c…)`."""
        text = self.uri
        if self.kind == "registered" and self.version and (self.alias or self.stage or self.uri != self.pinned_uri):
            text += f" → version {self.version}"
        if self.run_id and self.kind != "runs":
            text += f" (run {self.run_id[:8]}…)"
        return text


@dataclass(frozen=True)
class ResolvedModel:
    info: mlmodel.ModelInfo  # read from the snapshot: info.path is under ORCHESTRATE_HOME/models
    source: ModelSource
    resolve_s: float  # asking the registry and downloading
    snapshot_s: float  # reading, digesting and copying into the snapshot store


def is_local(uri: str) -> bool:
    """A path or file:// URI (as opposed to something to download)."""
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def resolve(uri: str, snapshot_dir: Path, *, log: Callable[[str], None] | None = None) -> ResolvedModel:
    """Resolve a model URI into a snapshot under `snapshot_dir`; ConfigError (exit 2) naming the
    URI when it cannot be resolved, so nothing is recorded. `log` hears of retried downloads."""
    started = time.monotonic()
    if is_local(uri):
        info = mlmodel.read_model(uri)
        snapshot = mlmodel.snapshot(info, snapshot_dir)
        # Recorded as the absolute directory: a relative path or file:// means nothing to a worker.
        return ResolvedModel(
            replace(info, path=snapshot), ModelSource(uri=str(info.path), kind="path"), 0.0, time.monotonic() - started
        )
    try:
        source = _pin(uri)
    except _Transient as fault:
        raise ConfigError(
            f"cannot resolve model {uri}: {fault}",
            hint=fault.hint or "check that the server holding it is up and reachable",
        ) from None
    known = _known_snapshot(source, snapshot_dir)
    if known is not None:  # this immutable version was downloaded before: no second download
        return ResolvedModel(known, source, time.monotonic() - started, 0.0)
    with _download(source.pinned_uri or uri, snapshot_dir, shown=uri, log=log) as downloaded:
        downloaded_at = time.monotonic()
        info = _read_downloaded(downloaded, uri)
        snapshot = mlmodel.snapshot(info, snapshot_dir)
    _remember_snapshot(source, snapshot_dir, info.digest)
    return ResolvedModel(
        replace(info, path=snapshot), source, downloaded_at - started, time.monotonic() - downloaded_at
    )


# Sources whose pinned URI always names the same files (MLflow never changes a registered
# version's, a logged model's or a finished run's artifacts); s3:// and plain artifact paths
# can be overwritten, so they are always downloaded.
_IMMUTABLE_KINDS = frozenset({"registered", "logged_model", "runs"})
_INDEX = ".index"


def _index_file(source: ModelSource, snapshot_dir: Path) -> Path | None:
    if source.kind not in _IMMUTABLE_KINDS or not source.pinned_uri:
        return None
    key = hashlib.sha256(f"{source.tracking_uri}\0{source.pinned_uri}".encode()).hexdigest()
    return snapshot_dir / _INDEX / key


def _known_snapshot(source: ModelSource, snapshot_dir: Path) -> mlmodel.ModelInfo | None:
    """The snapshot an earlier download of this pinned URI made, re-read and checked."""
    index = _index_file(source, snapshot_dir)
    try:
        digest = index.read_text().strip() if index is not None else ""
    except OSError:
        return None
    if not digest or not (snapshot_dir / digest).is_dir():
        return None
    info = mlmodel.read_model(str(snapshot_dir / digest))
    return info if info.digest == digest else None


def _remember_snapshot(source: ModelSource, snapshot_dir: Path, digest: str) -> None:
    index = _index_file(source, snapshot_dir)
    if index is None:
        return
    index.parent.mkdir(mode=0o700, exist_ok=True)
    staged = index.with_name(f"{index.name}.{os.getpid()}")
    staged.write_text(digest)
    staged.replace(index)


def materialize(uri: str, digest: str, snapshot_dir: Path, recorded: Callable[[], ModelSource]) -> mlmodel.ModelInfo:
    """The model a deployment recorded, for its stages: its snapshot when this machine has it;
    else a local path read again, or the pinned address fetched again (a worker elsewhere),
    either checked against the recorded digest. Never resolves an alias again."""
    snapshot = snapshot_dir / digest
    if snapshot.is_dir():
        return mlmodel.read_model(str(snapshot))
    source = recorded()
    if source.kind == "path":
        info = mlmodel.read_model(source.uri)
        _check_digest(info, digest, source.uri)
        return replace(info, path=mlmodel.snapshot(info, snapshot_dir))
    with _download(source.pinned_uri or source.uri, snapshot_dir, shown=source.uri) as downloaded:
        info = _read_downloaded(downloaded, source.uri)
        _check_digest(info, digest, source.pinned_uri or source.uri)
        return replace(info, path=mlmodel.snapshot(info, snapshot_dir))


def _check_digest(info: mlmodel.ModelInfo, digest: str, shown: str) -> None:
    if info.digest != digest:
        raise PermanentTargetError(
            f"the model at {shown} is not the one recorded (digest {info.digest[:12]}, recorded {digest[:12]})",
            hint="deploy the changed model as a new deployment: `orchestrate deploy ...`",
        )


def local_model(uri: str, snapshot_dir: Path) -> mlmodel.ModelInfo:
    """A model directory on this machine, for commands that record nothing (serve, predict,
    build): a local one read where it is, anything else downloaded into the snapshot store."""
    if is_local(uri):
        return mlmodel.read_model(uri)
    return resolve(uri, snapshot_dir).info


# -- what a URI names ------------------------------------------------------------------------


def _pin(uri: str) -> ModelSource:
    """Ask the registry what `uri` names now; an address that keeps naming it."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"model URI {uri} names no bucket", hint="write s3://BUCKET/PREFIX")
        return ModelSource(uri=uri, kind="s3", pinned_uri=uri, artifact_source=uri)
    mlflow = _import_mlflow(uri)
    if scheme in ("http", "https"):
        return _pin_http(uri)
    tracking_uri = secret_values.mask_credentials(_tracking_uri())
    if scheme == "runs":
        run_id, _, path = (
            parsed.path.lstrip("/").partition("/")
            if not parsed.netloc
            else (parsed.netloc, "", parsed.path.lstrip("/"))
        )
        if not run_id or not path:
            raise ConfigError(
                f"model URI {uri} is not runs:/RUN_ID/PATH",
                hint="e.g. runs:/3f2a…/model, as `mlflow.<flavor>.log_model` prints",
            )
        with _mlflow_errors(uri):
            mlflow.MlflowClient().get_run(run_id)
        return ModelSource(uri=uri, kind="runs", pinned_uri=uri, run_id=run_id, tracking_uri=tracking_uri)
    if scheme == "models":
        return _pin_registered(uri, mlflow, tracking_uri)
    shown = secret_values.mask_credentials(uri)
    return ModelSource(
        uri=shown,
        kind="artifacts",
        pinned_uri=uri if uri == shown else None,
        artifact_source=shown,
        tracking_uri=tracking_uri,
    )


# MLflow reads http(s) URIs with its artifact proxy's client only (HttpArtifactRepository): the URI
# must be a tracking server's artifact route, the same files `mlflow-artifacts:/PATH` names.
_ARTIFACT_ROUTE = "/mlflow-artifacts/artifacts"


def _pin_http(uri: str) -> ModelSource:
    shown = secret_values.mask_credentials(uri)
    if _ARTIFACT_ROUTE not in urlparse(uri).path:
        raise ConfigError(
            f"model URI {shown} is not a tracking server's artifact route: MLflow downloads http(s) models "
            f"only from `mlflow server --serve-artifacts` (http://HOST:PORT/api/2.0{_ARTIFACT_ROUTE}/PATH)",
            hint="give that route, `mlflow-artifacts:/PATH`, or download the model and give its directory",
        )
    # The URI names its own server; MLFLOW_TRACKING_URI plays no part in reading it.
    return ModelSource(uri=shown, kind="artifacts", pinned_uri=uri if uri == shown else None, artifact_source=shown)


def _pin_registered(uri: str, mlflow: Any, tracking_uri: str | None) -> ModelSource:
    from mlflow.store.artifact.utils.models import _parse_model_uri

    with _mlflow_errors(uri):
        parsed = _parse_model_uri(uri)
        client = mlflow.MlflowClient()
        if parsed.model_id is not None:
            logged = client.get_logged_model(parsed.model_id)
            return ModelSource(
                uri=uri,
                kind="logged_model",
                pinned_uri=uri,
                model_id=logged.model_id,
                run_id=logged.source_run_id,
                artifact_source=logged.artifact_location,
                tracking_uri=tracking_uri,
            )
        name = parsed.name
        if parsed.version is not None:
            version = client.get_model_version(name, parsed.version)
        elif parsed.alias is not None:
            version = client.get_model_version_by_alias(name, parsed.alias)
        else:
            from mlflow.store.artifact.utils.models import _get_latest_model_version

            with warnings.catch_warnings():  # stages are deprecated in MLflow; the URI form stays
                warnings.simplefilter("ignore")
                number = _get_latest_model_version(client, name, parsed.stage)  # type: ignore[no-untyped-call]
            version = client.get_model_version(name, str(number))
    return ModelSource(
        uri=uri,
        kind="registered",
        pinned_uri=f"models:/{name}/{version.version}",
        registered_name=name,
        version=str(version.version),
        alias=parsed.alias,
        stage=parsed.stage,
        run_id=version.run_id or None,
        model_id=getattr(version, "model_id", None) or _logged_model_id(version.source),
        artifact_source=version.source,
        tracking_uri=tracking_uri,
    )


def _logged_model_id(source: str | None) -> str | None:
    """The MLflow 3 logged model a version's source names (`models:/m-…`), when the registry
    does not say it itself."""
    if source and source.startswith("models:/m-") and "/" not in source[len("models:/") :]:
        return source[len("models:/") :]
    return None


# -- downloading -----------------------------------------------------------------------------


@contextmanager
def _download(uri: str, snapshot_dir: Path, *, shown: str, log: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Download `uri` into a fresh staging directory beside the snapshots (so the snapshot is a
    copy on one file system) and yield the model directory in it; the staging directory is
    removed however this ends. Transient faults are retried, each try starting empty."""
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_downloads(snapshot_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{_DOWNLOAD_PREFIX}{os.getpid()}-", dir=snapshot_dir))
    try:
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            target = staging / f"try-{attempt}"
            target.mkdir()
            try:
                yield _download_once(uri, target, shown)
                return
            except _Transient as fault:
                shutil.rmtree(target, ignore_errors=True)
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise ConfigError(
                        f"could not download model {shown} after {attempt} tries: {fault}",
                        hint=fault.hint or "check that the server holding it is up and reachable, then deploy again",
                    ) from None
                wait_s = _RETRY_INITIAL_S * 2 ** (attempt - 1)
                if log is not None:
                    log(f"download of model {shown} failed ({fault}); trying again in {wait_s:.1f} s")
                time.sleep(wait_s)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_DOWNLOAD_PREFIX = ".download-"


def _remove_abandoned_downloads(snapshot_dir: Path) -> None:
    """Staging directories of downloads whose process died (killed mid-download)."""
    from ..processes import pid_alive

    for staging in snapshot_dir.glob(f"{_DOWNLOAD_PREFIX}*"):
        pid = staging.name[len(_DOWNLOAD_PREFIX) :].split("-", 1)[0]
        if pid.isdecimal() and not pid_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


class _Transient(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def _download_once(uri: str, target: Path, shown: str) -> Path:
    if urlparse(uri).scheme.lower() == "s3":
        _download_s3(uri, target, shown)
        return target
    mlflow = _import_mlflow(shown)
    with _mlflow_errors(shown):
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
    path = Path(local)
    if not path.is_dir():
        raise ConfigError(
            f"model URI {shown} names a file, not a model directory", hint="give the directory that holds MLmodel"
        )
    return path


def _download_s3(uri: str, target: Path, shown: str) -> None:
    try:
        import boto3
        import botocore.exceptions as boto_errors
    except ImportError:
        raise ConfigError(f"model URI {shown} needs boto3", hint="`pip install 'orchestrate[aws]'`") from None
    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None  # else boto3 reads AWS_ENDPOINT_URL
    try:
        client = boto3.client("s3", endpoint_url=endpoint)
        found = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = PurePosixPath(item["Key"][len(prefix) :])
                if item["Key"].endswith("/") or not relative.parts:
                    continue  # a "folder" placeholder object
                if ".." in relative.parts or relative.is_absolute():
                    raise ConfigError(f"{shown}: object key {item['Key']!r} leaves the model prefix")
                destination = target.joinpath(*relative.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, item["Key"], str(destination))
                found += 1
    except boto_errors.NoCredentialsError:
        raise ConfigError(
            f"no AWS credentials to read model {shown}",
            hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        ) from None
    except (
        boto_errors.EndpointConnectionError,
        boto_errors.ConnectionClosedError,
        boto_errors.ReadTimeoutError,
        boto_errors.ConnectTimeoutError,
    ) as exc:
        raise _Transient(str(exc)) from None
    except boto_errors.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"):
            raise _Transient(f"{code}: {exc}") from None
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "403"):
            raise ConfigError(
                f"S3 refused the credentials for model {shown} ({code})",
                hint="check the AWS credentials and the bucket policy",
            ) from None
        raise ConfigError(
            f"cannot read model {shown}: {code or exc}", hint="check the bucket and prefix (`aws s3 ls " + uri + "`)"
        ) from None
    if not found:
        raise ConfigError(f"model URI {shown} holds no objects", hint="check the bucket and prefix")


def _read_downloaded(path: Path, uri: str) -> mlmodel.ModelInfo:
    try:
        return mlmodel.read_model(str(path))
    except ConfigError as exc:  # name the URI the user gave, not our staging directory
        message = exc.message.replace(str(path), uri)
        raise ConfigError(f"model {uri}: {message}" if uri not in message else message, hint=exc.hint) from None


# -- MLflow ----------------------------------------------------------------------------------


def _import_mlflow(uri: str) -> Any:
    try:
        import mlflow
        import mlflow.artifacts
    except ImportError:
        raise ConfigError(f"model URI {uri} needs MLflow to resolve", hint=MLFLOW_EXTRA_HINT) from None
    # MLflow sends these to the server; no message of ours may repeat them.
    for name in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        if os.environ.get(name):
            secret_values.remember(os.environ[name])
    return mlflow


# What a failed MLflow call means. MLflow raises MlflowException with an error code, or (its
# artifact proxy's client) requests' HTTPError; either way the HTTP status decides.
_UNAUTHENTICATED, _DENIED, _MISSING, _TRANSIENT = "unauthenticated", "denied", "missing", "transient"
# MLflow error codes that mean "that does not exist" or "that request is wrong": the user fixes the URI.
_PERMANENT_CODES = frozenset(
    {
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_PARAMETER_VALUE",
        "NOT_FOUND",
        "BAD_REQUEST",
        "INVALID_STATE",
        "ENDPOINT_NOT_FOUND",
        "FEATURE_DISABLED",
    }
)
# "401 Client Error" (requests) or "failed with error code 401 != 200" (MLflow's REST client).
_HTTP_STATUS = re.compile(r"\b([45]\d\d) (?:Client|Server) Error\b|\berror code ([45]\d\d) != ")


def _classify(exc: Exception) -> str:
    from mlflow.exceptions import MlflowException

    code = (getattr(exc, "error_code", "") or "") if isinstance(exc, MlflowException) else ""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None) if response is not None else None
    if status is None and (found := _HTTP_STATUS.search(str(exc))):
        status = int(found[1] or found[2])
    if code == "UNAUTHENTICATED" or status == 401:
        return _UNAUTHENTICATED
    if code == "PERMISSION_DENIED" or status == 403:
        return _DENIED
    if code in _PERMANENT_CODES or (status is not None and 400 <= status < 500 and status not in (408, 429)):
        return _MISSING
    return _TRANSIENT


def _server_of(uri: str) -> str:
    """The server that answers for `uri`, for messages: an http(s) URI's own origin, the registry
    for `models:/`, the tracking server otherwise."""
    import mlflow

    parsed = urlparse(uri)
    if parsed.scheme.lower() in ("http", "https"):
        server = f"{parsed.scheme}://{parsed.netloc}"
    elif parsed.scheme.lower() == "models":
        server = str(mlflow.get_registry_uri())
    else:
        server = _tracking_uri()
    return secret_values.mask_credentials(server)


def _who() -> str:
    """Whose credentials MLflow sent (never the password or token itself)."""
    if user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return f"user {user!r}"
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return "the holder of MLFLOW_TRACKING_TOKEN"
    return "anonymous: MLFLOW_TRACKING_USERNAME is not set"


_CREDENTIALS_HINT = (
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) to an account of that server"
)


@contextmanager
def _mlflow_errors(uri: str) -> Iterator[None]:
    """MLflow's exceptions as ours: refused credentials and missing things are ConfigError naming
    the URI and the server, faults of the connection are _Transient (retried while downloading;
    an error naming the URI otherwise)."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, requests.HTTPError) as exc:
        meaning, text, server = _classify(exc), _describe(exc), _server_of(uri)
        if meaning == _UNAUTHENTICATED:
            raise ConfigError(
                f"the MLflow server {server} refused the credentials for model {uri} ({_who()}): {text}",
                hint=_CREDENTIALS_HINT,
            ) from None
        if meaning == _DENIED:
            raise ConfigError(
                f"the MLflow server {server} does not let {uri} be read ({_who()}): {text}",
                hint="ask its admin for READ permission on it, or use another account "
                "(MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)",
            ) from None
        if meaning == _MISSING:
            what = (
                "the name, version, alias or run id (`mlflow models` / the MLflow UI)"
                if urlparse(uri).scheme.lower() in ("models", "runs")
                else "the artifact path (the MLflow UI)"
            )
            raise ConfigError(
                f"model {uri} cannot be resolved: {text}", hint=f"check {what} and the server ({server})"
            ) from None
        raise _Transient(text, hint=_up_hint(uri, server)) from None
    except ImportError as exc:  # a scheme whose client library is missing (gs:// → google-cloud-storage)
        raise ConfigError(
            f"model URI {uri} needs the Python package {exc.name or exc}",
            hint=f"`pip install {exc.name}`" if exc.name else None,
        ) from None
    except OSError as exc:  # requests' ConnectionError is an OSError
        raise _Transient(_describe(exc), hint=_up_hint(uri, _server_of(uri))) from None


def _up_hint(uri: str, server: str) -> str:
    if urlparse(uri).scheme.lower() in ("http", "https"):
        return f"is the MLflow server at {server} up?"
    return f"is the MLflow server at {server} up? (MLFLOW_TRACKING_URI chooses it)"


def _tracking_uri() -> str:
    import mlflow

    return str(mlflow.get_tracking_uri())


def _describe(exc: Exception, limit: int = 400) -> str:
    """An MLflow error in one line, secrets masked: its first line, and the first failure under
    it when that line only announces a list ("The following failures occurred …:")."""
    full = str(getattr(exc, "message", None) or exc)
    lines = [line.strip() for line in full.strip().splitlines() if line.strip() and not line.strip().startswith("#")]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines or [""])[0]
    text = secret_values.scrub(text)
    return text if len(text) <= limit else text[:limit] + "…"


# -- registry feedback (-C registry_tags=true) -------------------------------------------------

# One tag per endpoint on the model version it serves: the MLflow UI lists where a version runs.
REGISTRY_TAG_PREFIX = "orchestrate.endpoint."


def tag_version(source: ModelSource, endpoint: str, where: dict[str, Any]) -> str | None:
    """Tag the registered version `source` resolved to as serving on `endpoint`; a warning
    (never an exception) when it cannot be done, None when done or not a registered version."""
    import json

    if source.version_key() is None:
        return None
    return _registry_call(
        source,
        lambda client: client.set_model_version_tag(
            source.registered_name, source.version, REGISTRY_TAG_PREFIX + endpoint, json.dumps(where, sort_keys=True)
        ),
        f"tag {source.registered_name} version {source.version} as serving on {endpoint}",
    )


def untag_version(source: ModelSource, endpoint: str) -> str | None:
    """Remove `endpoint`'s tag from the version `source` resolved to; a warning when it cannot."""
    if source.version_key() is None:
        return None
    return _registry_call(
        source,
        lambda client: client.delete_model_version_tag(
            source.registered_name, source.version, REGISTRY_TAG_PREFIX + endpoint
        ),
        f"remove the {endpoint} tag of {source.registered_name} version {source.version}",
    )


def _registry_call(source: ModelSource, call: Callable[[Any], object], what: str) -> str | None:
    try:
        mlflow = _import_mlflow(source.uri)
        call(mlflow.MlflowClient())
    except Exception as exc:  # noqa: BLE001 - registry feedback must never fail a deployment
        return _tag_warning(exc, what, source)
    return None


def _tag_warning(exc: Exception, what: str, source: ModelSource) -> str:
    """Why a tag could not be written, and what to do, in one line without secrets."""
    text = _describe(exc)
    try:
        meaning, server = _classify(exc), _server_of(source.uri)
    except ImportError:  # MLflow itself is missing: the text says so
        return f"could not {what}: {text}"
    fix = "or turn registry feedback off with -C registry_tags=false"
    if meaning == _UNAUTHENTICATED:
        return (
            f"could not {what}: the model registry {server} refused the credentials ({_who()}): {text}; "
            f"{_CREDENTIALS_HINT}, {fix}"
        )
    if meaning == _DENIED:
        return (
            f"could not {what}: the model registry {server} does not let {_who()} edit registered model "
            f"{source.registered_name}: {text}; tags need EDIT permission on it: grant it, {fix}"
        )
    return f"could not {what} in the model registry {server}: {text}"


def recorded_source(store: Any, deployment_id: int) -> ModelSource:
    """The model source deployment `deployment_id` recorded when it was created."""
    from ..store.tables import Deployment

    with store.read() as session:
        deployment = session.get_one(Deployment, deployment_id)
        return ModelSource.from_dict(deployment.model_source, deployment.model_uri)
