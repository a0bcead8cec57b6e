"""The shared scoring server every target runs: an MLflow-compatible model server.

Importing this package is cheap (no Flask, no model, no I/O); the orchestrator reads
``__version__`` and ``SERVER_REQUIREMENTS`` from it to build model environments and images.
``create_app`` builds the Flask application; ``python -m scoring serve`` runs it under gunicorn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

from scoring._flavors import flavor_environment, loads_after_fork
from scoring._version import __version__

#: What the server itself needs installed next to a model (the model brings the rest).
#: orjson parses request bodies ~6x faster than the standard library (65 us of a 100-row
#: request); the server still works without it (``scoring._json``). httptools is llhttp, the
#: parser that frames every request (``scoring._worker``); it has wheels for CPython 3.9-3.13
#: on manylinux x86_64 and aarch64.
SERVER_REQUIREMENTS: tuple[str, ...] = (
    "flask>=3.0",
    "gunicorn>=22.0",
    "httptools>=0.9",
    "orjson>=3.9",
    "pyyaml>=6.0",
)

_SERVING_IMPORTS = (
    "flask",
    "werkzeug",
    "gunicorn.app.base",
    "gunicorn.workers.gthread",
    "gunicorn.glogging",
    "httptools",
    "orjson",
    "numpy",
    "pandas",
    "yaml",
)


def serving_imports(loader_module: str) -> tuple[str, ...]:
    """The modules the server imports to serve a model whose ``python_function`` flavor names
    ``loader_module`` (image builds import them once, so their byte code is in the image).

    ``mlflow.sklearn`` models are loaded without mlflow (``scoring._model``): skops (which
    imports every scikit-learn estimator) or pickle. Any other flavor goes through mlflow.
    """
    if loader_module == "mlflow.sklearn":
        return (*_SERVING_IMPORTS, "skops.io", "cloudpickle", "sklearn")
    return (*_SERVING_IMPORTS, "mlflow.pyfunc", *([loader_module] if loader_module else []))


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the scoring Flask application and load its model.

    ``config`` overrides defaults and ``ORCHESTRATE_*`` environment variables; its keys are
    the field names of ``scoring._config.ServerConfig`` (``model_dir``, ``timeout``...), plus
    ``model``: an already loaded ``scoring._model.LoadedModel`` to serve instead of loading.

    Raises ``ModelLoadError`` when the model cannot be loaded and ``ValueError`` on bad config.
    """
    from scoring._app import create_app as _create_app

    return _create_app(config)


from scoring._errors import ModelLoadError

__all__ = [  # noqa: RUF022 -- plain sorted(), as tests/core/test_imports.py checks
    "ModelLoadError",
    "SERVER_REQUIREMENTS",
    "__version__",
    "create_app",
    "flavor_environment",
    "loads_after_fork",
    "serving_imports",
]
