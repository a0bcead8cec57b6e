"""The Open Inference Protocol (KServe V2) REST routes."""

from __future__ import annotations

from typing import Any


def register_v2_routes(app: Any, cfg: Any, model: Any, scorer: Any, runner: Any) -> None:
    """Add the V2 routes to ``app``."""
