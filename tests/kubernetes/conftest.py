"""Shared by the modules here: the kubeconfig of the module's own ``fake`` API server (each
module starts its fake with the rollout timings its tests need)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.emulators.kubernetes import FakeApiServer


@pytest.fixture(scope="module")
def kubeconfig(fake: FakeApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(yaml.safe_dump(fake.kubeconfig()))
    return path
