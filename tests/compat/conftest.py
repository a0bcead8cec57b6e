"""Fixtures for the flavor compatibility suite: models MLflow saves at test time, and servers.

- ``compat_model(name)``: the directory of suite model ``name`` (see ``make_models.MODELS``),
  saved by ``make_models.py`` in a subprocess when a test first asks for it.
- ``mlflow_answers(name)``: how ``mlflow models serve --env-manager local`` answers the
  model's ``compat_requests.json`` (one server per model and session, stopped at once).
- ``Server``/``start_server``: a server process on a free port, waited on until ``/ping``.

Model environments come from the session's shared ``ORCHESTRATE_ENVS_DIR`` (tests/conftest.py):
one virtualenv per requirement set, built by the first test that needs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from compat_servers import Answer, free_port, mlflow_serve_command, send_all, start_server

HERE = Path(__file__).resolve().parent
MAKE_MODELS = HERE / "make_models.py"

# What a user of `mlflow models serve` must set for a model: MLflow records the Keras backend
# a model was saved with but does not set it (Keras then imports tensorflow). orchestrate is
# given no such variable: it reads the backend from MLmodel.
MLFLOW_SERVE_ENVIRONMENT: dict[str, dict[str, str]] = {"keras": {"KERAS_BACKEND": "jax"}}


def mlflow_serve_environment(name: str) -> dict[str, str]:
    """`mlflow models serve` runs `uvicorn` from PATH: the test interpreter's, as in an
    activated virtualenv (not another Python's, without the suite's packages)."""
    bin_dir = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            **MLFLOW_SERVE_ENVIRONMENT.get(name, {})}


@pytest.fixture(autouse=True)
def _no_keras_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """orchestrate must find the Keras backend in MLmodel, not in the deployer's shell."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)


@pytest.fixture(scope="session")
def compat_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``compat_model(name)``: the model saved by ``make_models.py NAME``, once per session.

    One model per subprocess, saved when a test first asks for it: MLflow's requirements
    inference loads the model in a subprocess of its own (5-15 s a model), so saving them all
    up front would put minutes into one fixture."""
    out = tmp_path_factory.mktemp("compat-models")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATE_", "AWS_", "AZURE_"))}

    def get(name: str) -> Path:
        path = out / name
        if not (path / "compat_requests.json").is_file():
            result = subprocess.run([sys.executable, str(MAKE_MODELS), str(out), name], check=False, env=env,
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                pytest.fail(f"make_models.py {name} failed ({result.returncode}):\n{result.stderr[-6000:]}")
        return path

    return get


@pytest.fixture(scope="session")
def _mlflow_answer_cache() -> dict[str, dict[str, Answer]]:
    return {}


@pytest.fixture
def mlflow_answers(_mlflow_answer_cache: dict[str, dict[str, Answer]], compat_model: Callable[[str], Path],
                   tmp_path: Path) -> Iterator[Callable[[str], dict[str, Answer]]]:
    """How `mlflow models serve --env-manager local` answers a model's requests; its server is
    started and stopped within the test that first asks (so no process outlives a test)."""

    def answers(name: str) -> dict[str, Answer]:
        if name not in _mlflow_answer_cache:
            model = compat_model(name)
            port = free_port()
            server = start_server("mlflow models serve", mlflow_serve_command(model, port), port,
                                  tmp_path / f"mlflow-{name}.log",
                                  env=mlflow_serve_environment(name))
            try:
                _mlflow_answer_cache[name] = send_all(server.url, model)
            finally:
                server.stop()
        return _mlflow_answer_cache[name]

    yield answers
