"""Reading an MLflow model directory: its flavor, requirements, Python version, example and digest.

What a model directory may hold, so that the digest covers exactly what is snapshotted and
served, and nothing of the host outside the directory is ever read, copied or put in an image:

- regular files and directories;
- symbolic links whose target, fully resolved, is a regular file or directory inside the model:
  digested and copied as what they point at (a snapshot never holds a link). A link to a
  directory that contains it (`ln -s . loop`) is refused;
- nothing else: a link leading outside the model, a broken link, a FIFO, socket or device
  (`/dev/zero`) is refused with a ConfigError naming it, before anything is recorded.

The files orchestrate parses (MLmodel, requirements.txt, python_env.yaml, conda.yaml, the input
example) are read with a size bound, as UTF-8, and YAML without exponential work; the paths
MLmodel names (`model_path`, `data`, `code`, ...) must stay inside the directory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlparse

from ..errors import ConfigError, PermanentTargetError
from .reads import load_model_yaml, open_regular, read_bytes, read_model_text

# Files MLflow writes beside a model that serving never reads; they don't change the digest.
# registered_model_meta: MLflow writes it when a models:/ URI is downloaded (name, version), so
# one model version has one digest however it was addressed.
_IGNORED_NAMES = {"__pycache__", ".DS_Store", "registered_model_meta"}

# Bounds on the files orchestrate parses. MLflow writes them in kilobytes (a signature of
# thousands of columns stays under a megabyte); a bigger one is a mistake or an attack.
MLMODEL_MAX_BYTES = 8 << 20  # requirements.txt and the YAML files: model_reads.TEXT_FILE_MAX_BYTES
INPUT_EXAMPLE_MAX_BYTES = 16 << 20
# A directory of links to directories can multiply itself; real models have far fewer files.
MAX_FILES = 100_000

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    digest: str
    loader_module: str
    python_version: str | None
    requirements: tuple[str, ...]
    input_example: str | None  # file name inside the model directory


def resolve_model_uri(uri: str) -> Path:
    """A local directory for a model URI: a path or file://."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("",) or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    raise ConfigError(
        f"model URI scheme {parsed.scheme!r} is not supported yet ({uri})",
        hint="give a local directory or file:// path (download the model first, e.g. `mlflow artifacts download`)",
    )


def read_model(uri: str) -> ModelInfo:
    """Read and check a model directory; every problem is a ConfigError naming the file and fix."""
    path = resolve_model_uri(uri).expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"model path {path} does not exist", hint="pass the directory that holds MLmodel")
    if not path.is_dir():
        raise ConfigError(f"model path {path} is not a directory", hint="pass the directory that holds MLmodel")
    files = model_files(path)  # refuses links out of the model and special files before any read
    if not any(file.relative == "MLmodel" for file in files):
        raise ConfigError(
            f"{path} has no MLmodel file, so it is not an MLflow model directory",
            hint="save the model with mlflow.<flavor>.save_model(...) and pass that directory",
        )
    mlmodel_path = path / "MLmodel"
    mlmodel = load_model_yaml(mlmodel_path, limit=MLMODEL_MAX_BYTES)
    if not isinstance(mlmodel, dict):
        raise ConfigError(f"{mlmodel_path} must be a YAML mapping with a 'flavors' section")
    flavors = mlmodel.get("flavors")
    pyfunc = flavors.get("python_function") if isinstance(flavors, dict) else None
    if not isinstance(pyfunc, dict):
        found = ", ".join(sorted(map(str, flavors))) if isinstance(flavors, dict) and flavors else "none"
        raise ConfigError(
            f"{mlmodel_path} has no python_function flavor (flavors found: {found})",
            hint="orchestrate serves models through MLflow's python_function interface; "
            "save the model with a flavor that provides it",
        )
    loader_module = pyfunc.get("loader_module")
    if not isinstance(loader_module, str) or not loader_module:
        raise ConfigError(f"{mlmodel_path}: python_function flavor has no loader_module")
    if not _MODULE_NAME.match(loader_module):
        raise ConfigError(
            f"{mlmodel_path}: loader_module {loader_module!r} is not a Python module name",
            hint="MLflow writes a dotted module name such as mlflow.sklearn; save the model again with mlflow",
        )
    _check_paths_stay_inside(
        mlmodel_path, {"flavors": flavors, "saved_input_example_info": mlmodel.get("saved_input_example_info")}
    )
    input_example = _input_example(path)
    if input_example is not None:
        load_input_example(path, input_example)  # a broken example is bad input now, not a failed health check
    return ModelInfo(
        path=path,
        digest=_digest(files),
        loader_module=loader_module,
        python_version=_python_version(path, pyfunc),
        requirements=read_requirements(path),
        input_example=input_example,
    )


# A dotted Python module name: what `importlib.import_module` gets at serve time.
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# MLmodel keys (under `flavors` and `saved_input_example_info`) whose string values are paths
# relative to the model directory, which loaders join to it: os.path.join(model, "/etc/x") is
# /etc/x, and "../x" leaves it. (`uri` under a python_model's artifacts is where an artifact came
# from, not where it is; `model_config` is the user's own settings for predict: neither is checked.)
_NOT_MODEL_PATHS = frozenset({"model_config", "uri"})
_PATH_KEYS = frozenset(
    {
        "artifact_path",
        "code",
        "conda",
        "data",
        "env",
        "model_data",
        "model_path",
        "path",
        "pickled_model",
        "python_model",
        "saved_model_dir",
        "serving_input_path",
        "virtualenv",
    }
)


def _check_paths_stay_inside(mlmodel_path: Path, document: Any) -> None:
    """Refuse a path value in MLmodel that is absolute or climbs out of the model directory."""
    seen: set[int] = set()  # YAML aliases share nodes: visit each once

    def visit(node: Any, trail: str, is_path: bool) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in _NOT_MODEL_PATHS:
                    visit(value, f"{trail}.{key}" if trail else str(key), is_path or key in _PATH_KEYS)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                visit(value, f"{trail}[{index}]", is_path)
        elif isinstance(node, str) and is_path and _leaves_directory(node):
            raise ConfigError(
                f"{mlmodel_path}: {trail} is {node!r}, a path outside the model directory",
                hint="a model must hold the files it loads: copy the file into the model directory and "
                "name it by its relative path",
            )

    visit(document, "", False)


def _leaves_directory(value: str) -> bool:
    if value.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", value):
        return True
    depth = 0
    for part in re.split(r"[/\\]", value):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _python_version(path: Path, pyfunc: dict[str, Any]) -> str | None:
    env_file = path / "python_env.yaml"
    if env_file.is_file():
        env = load_model_yaml(env_file)
        if isinstance(env, dict) and env.get("python"):
            return str(env["python"])
    version = pyfunc.get("python_version")
    return str(version) if version else None


def read_requirements(path: Path) -> tuple[str, ...]:
    """The model's requirement lines, credentials masked (see `requirements.read_model_requirements`)."""
    from .requirements import read_model_requirements

    return read_model_requirements(path)


def _input_example(path: Path) -> str | None:
    for name in ("serving_input_example.json", "input_example.json"):
        if (path / name).is_file():
            return name
    return None


# -- the files of a model: walk, digest, snapshot ----------------------------------------------


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its path inside the model (digested and snapshotted under that
    name) and the regular file its bytes come from (a link's target, inside the model)."""

    relative: str
    source: Path


def model_files(root: Path) -> list[ModelFile]:
    """Every file of the model directory `root`, in digest order; a ConfigError for anything
    that must not be copied (a link leading outside, a special file, a loop, too many files)."""
    root = root.resolve()
    files: list[ModelFile] = []

    def walk(directory: Path, relative: PurePosixPath, ancestors: frozenset[Path]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as exc:
            raise ConfigError(f"cannot list {root / relative}: {exc.strerror}") from None
        for entry in entries:
            if entry.name in _IGNORED_NAMES:
                continue
            inner = relative / entry.name
            shown = root / inner  # the path as the user sees it, through any link
            source = Path(entry.path)
            try:
                if entry.is_symlink():
                    source = Path(os.path.realpath(entry.path))
                    if not source.is_relative_to(root):
                        raise ConfigError(
                            f"{shown} is a symbolic link to {source}, outside the model directory {root}",
                            hint="orchestrate copies nothing from outside the model: put the file itself "
                            "in the model directory instead of a link",
                        )
                mode = source.stat().st_mode if entry.is_symlink() else entry.stat(follow_symlinks=False).st_mode
            except OSError as exc:
                raise ConfigError(
                    f"{shown} is a symbolic link that leads nowhere ({exc.strerror})",
                    hint="remove the link or put the file it meant in its place",
                ) from None
            if stat.S_ISDIR(mode):
                if source in ancestors:
                    raise ConfigError(
                        f"{shown} is a symbolic link to {source}, which contains it: copying it would never end",
                        hint="remove the link",
                    )
                walk(source, inner, ancestors | {source})
            elif stat.S_ISREG(mode):
                files.append(ModelFile(inner.as_posix(), source))
                if len(files) > MAX_FILES:
                    raise ConfigError(
                        f"{root} holds more than {MAX_FILES} files; is it a model directory?",
                        hint="check the links to directories inside it",
                    )
            else:
                raise ConfigError(
                    f"{shown} is {_kind(mode)}{' (through a link)' if entry.is_symlink() else ''}, "
                    "not a regular file or directory",
                    hint="a model directory holds regular files only: remove it",
                )

    walk(root, PurePosixPath(), frozenset({root}))
    # The order Path objects sort in (part by part), which the digest has always used.
    files.sort(key=lambda file: file.relative.split("/"))
    return files


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a special file"


def digest(path: Path) -> str:
    """SHA-256 over every file's relative path and bytes, in sorted order (see `model_files`)."""
    return _digest(model_files(path))


def _digest(files: list[ModelFile]) -> str:
    sha = hashlib.sha256()
    for file in files:
        sha.update(os.fsencode(file.relative) + b"\0")
        with open_regular(file.source, follow=False) as handle:
            for chunk in _chunks(handle, file.source):
                sha.update(chunk)
        sha.update(b"\0")
    return sha.hexdigest()


def _chunks(handle: IO[bytes], file: Path) -> Iterator[bytes]:
    while chunk := read_bytes(handle, file, _CHUNK):
        yield chunk


def snapshot(info: ModelInfo, store_dir: Path) -> Path:
    """Copy the model to `store_dir/<digest>` once, so later edits of the source don't leak in.

    The copy holds exactly the digested files (a link inside the model becomes a copy of its
    target), readable by this user only (0700/0600). It is written under a hidden staging name
    and renamed into place, so `store_dir/<digest>` is whole or absent; a copy that fails
    (a full disk) removes what it wrote. A PermanentTargetError says why."""
    destination = store_dir / info.digest
    if destination.is_dir():
        return destination
    try:
        store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(store_dir.stat().st_mode) != 0o700:
            store_dir.chmod(0o700)  # snapshots made before they were private
        _remove_abandoned_staging(store_dir, info.digest)
        staging = Path(tempfile.mkdtemp(prefix=f".{info.digest}.{os.getpid()}.", dir=store_dir))
    except OSError as exc:
        raise _write_error(exc, store_dir) from None
    try:
        copied = _copy_files(model_files(info.path), staging, store_dir)
        if copied != info.digest:
            raise PermanentTargetError(
                f"the model at {info.path} changed while it was being copied (digest {copied[:12]}, "
                f"not {info.digest[:12]})",
                hint="deploy the model again once it no longer changes",
            )
        try:
            staging.rename(destination)
        except OSError as exc:
            if not destination.is_dir():
                raise _write_error(exc, store_dir) from None
            shutil.rmtree(staging, ignore_errors=True)  # another process won the race with the same content
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def _copy_files(files: list[ModelFile], staging: Path, store_dir: Path) -> str:
    """Copy `files` under `staging` (dirs 0700, files 0600, or 0700 when executable); the digest of what was copied."""
    sha = hashlib.sha256()
    for file in files:
        target = staging.joinpath(*file.relative.split("/"))
        sha.update(os.fsencode(file.relative) + b"\0")
        with open_regular(file.source, follow=False) as source:
            executable = os.fstat(source.fileno()).st_mode & stat.S_IXUSR
            try:
                for parent in reversed(target.relative_to(staging).parents[:-1]):
                    (staging / parent).mkdir(mode=0o700, exist_ok=True)
                descriptor = os.open(
                    target,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o700 if executable else 0o600,
                )
                with os.fdopen(descriptor, "wb") as copy:
                    for chunk in _chunks(source, file.source):
                        sha.update(chunk)
                        copy.write(chunk)
            except OSError as exc:
                raise _write_error(exc, store_dir) from None
        sha.update(b"\0")
    return sha.hexdigest()


def _write_error(exc: OSError, store_dir: Path) -> PermanentTargetError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PermanentTargetError(
            f"the disk holding {store_dir} is full (or over quota): the model snapshot could not be written, "
            "and its partial copy was removed",
            hint="free disk space there, or set ORCHESTRATE_HOME to a disk with room",
        )
    return PermanentTargetError(f"cannot write the model snapshot under {store_dir}: {exc.strerror or exc}")


def _remove_abandoned_staging(store_dir: Path, model_digest: str) -> None:
    """Staging copies of this model left by a process that was killed while copying."""
    from ..processes import pid_alive

    for leftover in store_dir.glob(f".{model_digest}.*"):
        pid = leftover.name.split(".")[2]
        if pid.isdecimal() and pid.isascii() and not pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def load_input_example(model_dir: Path, name: str) -> tuple[bytes, int | None]:
    """The example as a request body for /invocations, and its row count when known."""
    file = model_dir / name
    try:
        document = json.loads(read_model_text(file, limit=INPUT_EXAMPLE_MAX_BYTES))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and numbers Python will not parse
        raise ConfigError(
            f"{file} is not a JSON input example: {str(exc).splitlines()[0] if str(exc) else exc}",
            hint="remove it, or save the model again with mlflow and a valid input_example",
        ) from None
    if (
        name == "input_example.json"
        and isinstance(document, dict)
        and not ({"dataframe_split", "dataframe_records", "instances", "inputs"} & set(document))
    ):
        # MLflow's raw input_example for pandas input is a split-oriented frame.
        document = {"dataframe_split": document} if {"columns", "data"} <= set(document) else {"inputs": document}
    rows: int | None = None
    for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
        payload = document.get(key) if isinstance(document, dict) else None
        if key == "dataframe_split" and isinstance(payload, dict):
            rows = len(payload.get("data") or [])
        elif isinstance(payload, list):
            rows = len(payload)
        if payload is not None:
            break
    return json.dumps(document).encode(), rows


_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")


def check_endpoint_name(name: str) -> str:
    """Endpoint names follow SageMaker's rule so one name works on every target."""
    if not name or len(name) > 63 or not _NAME.fullmatch(name):  # fullmatch: `$` also matches before "\n"
        raise ConfigError(
            f"invalid endpoint name {name!r}",
            hint="use 1-63 letters, digits and hyphens, starting and ending with a letter or digit (e.g. churn-v2)",
        )
    if name.isdigit():  # `status 7` and `history 7` read 7 as a deployment id
        raise ConfigError(
            f"invalid endpoint name {name!r}: a name of digits only reads as a deployment id",
            hint=f"add a letter, e.g. --name model-{name}",
        )
    return name
