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

__version__ = "0.1.0"

#: What the server itself needs installed next to a model (the model brings the rest).
SERVER_REQUIREMENTS: tuple[str, ...] = ("flask>=3.0", "gunicorn>=22.0", "pyyaml>=6.0")


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

__all__ = ["ModelLoadError", "SERVER_REQUIREMENTS", "__version__", "create_app"]  # noqa: RUF022 - sorted()
