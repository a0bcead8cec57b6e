"""Bounded reads of the files of a model directory: regular files only, size-capped UTF-8, YAML
without exponential work. Below both `mlmodel` (the directory) and `requirements` (its
requirement files), so neither imports the other to read a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Any

import yaml

from ..errors import ConfigError

TEXT_FILE_MAX_BYTES = 1 << 20  # requirements.txt, python_env.yaml, conda.yaml


def load_model_yaml(file: Path, *, limit: int = TEXT_FILE_MAX_BYTES) -> Any:
    """A YAML file of the model, read with a size bound; a ConfigError when it is not YAML."""
    text = read_model_text(file, limit=limit)
    try:
        # The pure-Python safe loader: its nesting is bounded by the recursion limit (libyaml's is not).
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(
            f"{file} is nested too deeply to be a model file",
            hint="MLflow writes a few levels; save the model again with mlflow",
        ) from None


def read_model_text(file: Path, *, limit: int = TEXT_FILE_MAX_BYTES) -> str:
    """A UTF-8 text file of the model, at most `limit` bytes; a ConfigError otherwise."""
    with open_regular(file) as handle:
        data = read_bytes(handle, file, limit + 1)
    if len(data) > limit:
        raise ConfigError(
            f"{file} is larger than {size_text(limit)}, more than a model file of this kind ever needs",
            hint="check it is the file MLflow wrote; save the model again with mlflow",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file} is not UTF-8 text (undecodable byte at offset {exc.start}); is it a binary file?",
            hint="save the model again with mlflow",
        ) from None


def open_regular(file: Path, *, follow: bool = True) -> IO[bytes]:
    """Open a file for reading only if it is a regular file (never blocks on a FIFO or device).
    `follow=False` for a `ModelFile.source`, a resolved path: a link put in its place after the
    walk is not followed out of the model."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        descriptor = os.open(file, flags)
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ConfigError(f"{file} is not a regular file", hint="a model directory holds regular files only")
    return os.fdopen(descriptor, "rb")


def read_bytes(handle: IO[bytes], file: Path, size: int) -> bytes:
    try:
        return handle.read(size)
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None


def size_text(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
