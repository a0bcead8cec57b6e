"""What a model's flavors ask of the process that serves it (read from ``MLmodel``'s ``flavors``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flavor_environment(flavors: Mapping[str, Any]) -> dict[str, str]:
    """Environment variables the model's flavor module reads when imported, from ``MLmodel``'s
    ``flavors``. Keras 3 picks its backend when imported, from ``KERAS_BACKEND`` (default
    tensorflow): MLflow records the backend a model was saved with but leaves setting it to the
    user, and a server started with a minimal environment would import the wrong one."""
    keras = flavors.get("keras")
    backend = keras.get("keras_backend") if isinstance(keras, Mapping) else None
    return {"KERAS_BACKEND": str(backend)} if backend else {}


#: Flavors whose libraries start threads when a model loads (JAX's and TensorFlow's pools): a
#: process forked after that can deadlock (its first prediction never returns), so the server
#: loads these models in each worker, after the fork, as `mlflow models serve` does.
_FORK_UNSAFE_FLAVORS = frozenset({"keras", "tensorflow"})


def loads_after_fork(flavors: Mapping[str, Any]) -> bool:
    """Whether a model of ``MLmodel``'s ``flavors`` must be loaded in each worker, not before forking."""
    return not _FORK_UNSAFE_FLAVORS.isdisjoint(flavors)
