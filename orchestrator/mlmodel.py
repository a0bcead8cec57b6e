"""Reading an MLflow model directory: its flavor, requirements, Python version, example and digest."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from .errors import ConfigError

# Files MLflow writes beside a model that serving never reads; they don't change the digest.
_IGNORED_NAMES = {"__pycache__", ".DS_Store"}


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
    if parsed.scheme in ("", ) or (len(parsed.scheme) == 1 and os.name == "nt"):
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
    mlmodel_path = path / "MLmodel"
    if not mlmodel_path.is_file():
        raise ConfigError(
            f"{path} has no MLmodel file, so it is not an MLflow model directory",
            hint="save the model with mlflow.<flavor>.save_model(...) and pass that directory",
        )
    try:
        mlmodel = yaml.safe_load(mlmodel_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{mlmodel_path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(mlmodel, dict):
        raise ConfigError(f"{mlmodel_path} must be a YAML mapping with a 'flavors' section")
    flavors = mlmodel.get("flavors")
    pyfunc = flavors.get("python_function") if isinstance(flavors, dict) else None
    if not isinstance(pyfunc, dict):
        found = ", ".join(sorted(flavors)) if isinstance(flavors, dict) and flavors else "none"
        raise ConfigError(
            f"{mlmodel_path} has no python_function flavor (flavors found: {found})",
            hint="orchestrate serves models through MLflow's python_function interface; "
            "save the model with a flavor that provides it",
        )
    loader_module = pyfunc.get("loader_module")
    if not isinstance(loader_module, str) or not loader_module:
        raise ConfigError(f"{mlmodel_path}: python_function flavor has no loader_module")
    return ModelInfo(
        path=path,
        digest=digest(path),
        loader_module=loader_module,
        python_version=_python_version(path, pyfunc),
        requirements=read_requirements(path),
        input_example=_input_example(path),
    )


def _python_version(path: Path, pyfunc: dict[str, Any]) -> str | None:
    env_file = path / "python_env.yaml"
    if env_file.is_file():
        try:
            env = yaml.safe_load(env_file.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{env_file} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if isinstance(env, dict) and env.get("python"):
            return str(env["python"])
    version = pyfunc.get("python_version")
    return str(version) if version else None


def read_requirements(path: Path) -> tuple[str, ...]:
    """requirements.txt lines without comments, blanks or pip options we cannot honour."""
    requirements_file = path / "requirements.txt"
    if not requirements_file.is_file():
        raise ConfigError(
            f"{path} has no requirements.txt",
            hint="save the model with mlflow (it writes requirements.txt) or add one listing its packages",
        )
    requirements = []
    for number, line in enumerate(requirements_file.read_text().splitlines(), 1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-") and not line.startswith(("--extra-index-url", "--index-url", "-i ")):
            raise ConfigError(
                f"{requirements_file}:{number}: pip option {line.split()[0]!r} is not supported",
                hint="list packages one per line (name==version)",
            )
        requirements.append(line)
    return tuple(requirements)


def _input_example(path: Path) -> str | None:
    for name in ("serving_input_example.json", "input_example.json"):
        if (path / name).is_file():
            return name
    return None


def digest(path: Path) -> str:
    """SHA-256 over every file's relative path and bytes, in sorted order."""
    sha = hashlib.sha256()
    for file in sorted(_files(path)):
        relative = file.relative_to(path).as_posix()
        sha.update(relative.encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
        sha.update(b"\0")
    return sha.hexdigest()


def _files(path: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if d not in _IGNORED_NAMES]
        files.extend(Path(root) / name for name in names if name not in _IGNORED_NAMES)
    return files


def snapshot(info: ModelInfo, store_dir: Path) -> Path:
    """Copy the model to `store_dir/<digest>` once, so later edits of the source don't leak in."""
    destination = store_dir / info.digest
    if destination.is_dir():
        return destination
    store_dir.mkdir(parents=True, exist_ok=True)
    staging = store_dir / f".{info.digest}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(info.path, staging, ignore=shutil.ignore_patterns(*_IGNORED_NAMES))
    try:
        staging.rename(destination)
    except OSError:  # another process won the race with the same content
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def load_input_example(model_dir: Path, name: str) -> tuple[bytes, int | None]:
    """The example as a request body for /invocations, and its row count when known."""
    document = json.loads((model_dir / name).read_text())
    if name == "input_example.json" and isinstance(document, dict) and not (
        {"dataframe_split", "dataframe_records", "instances", "inputs"} & set(document)
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
    if not name or len(name) > 63 or not _NAME.match(name):
        raise ConfigError(
            f"invalid endpoint name {name!r}",
            hint="use 1-63 letters, digits and hyphens, starting and ending with a letter or digit "
            "(e.g. churn-v2)",
        )
    return name
