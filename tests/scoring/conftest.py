"""Fixtures for the scoring server tests: real MLflow models, trained once per session.

- ``iris_model``: a scikit-learn logistic regression with a column signature (4 doubles).
- ``forest_model``: a 20-tree random forest on 20 features, saved without a signature.
- ``custom_model``: a ``PythonModel`` loaded from ``code/`` with mixed column types and a
  params schema (``scale``, ``sleep``, ``fail``).
- ``tensor_model`` / ``named_tensor_model``: tensor signatures, unnamed and named.
- ``missing_requirements_model``: its loader imports a module that is not installed.
- ``client(model_dir, **config)``: a Flask test client for a model (apps cached per
  model and config).
- ``serve(model_dir, *args)``: a real ``python -m scoring serve`` on a free port, stopped
  after the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scoring-models")


@pytest.fixture(scope="session")
def iris_model(models_root: Path) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    path = models_root / "iris"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y = load_iris(return_X_y=True, as_frame=True)
        model = LogisticRegression(max_iter=1000).fit(X, y)
        mlflow.sklearn.save_model(
            model, path, signature=infer_signature(X, model.predict(X)), input_example=X.head(2)
        )
    return path


@pytest.fixture(scope="session")
def forest_model(models_root: Path) -> Path:
    import mlflow.sklearn
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    path = models_root / "forest"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y = make_classification(n_samples=300, n_features=20, random_state=0)
        frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)])
        model = RandomForestClassifier(n_estimators=20, random_state=0).fit(frame, y)
        mlflow.sklearn.save_model(
            model,
            path,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    return path


def _save_python_model(path: Path, python_model: Any, signature: Any) -> Path:
    import mlflow.pyfunc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(
            path,
            python_model=python_model,
            signature=signature,
            code_paths=[str(HERE / "models_src.py")],
            pip_requirements=["mlflow", "pandas", "numpy"],  # no slow inference
        )
    return path


@pytest.fixture(scope="session")
def custom_model(models_root: Path) -> Path:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    sys.path.insert(0, str(HERE))
    try:
        import models_src

        signature = ModelSignature(
            inputs=Schema(
                [
                    ColSpec("double", "x"),
                    ColSpec("long", "n"),
                    ColSpec("string", "label"),
                    ColSpec("boolean", "flag"),
                ]
            ),
            params=ParamSchema(
                [
                    ParamSpec("scale", "double", 1.0),
                    ParamSpec("sleep", "double", 0.0),
                    ParamSpec("fail", "boolean", False),
                ]
            ),
        )
        return _save_python_model(models_root / "custom", models_src.Custom(), signature)
    finally:
        sys.path.remove(str(HERE))
        sys.modules.pop("models_src", None)


@pytest.fixture(scope="session")
def tensor_model(models_root: Path) -> Path:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    sys.path.insert(0, str(HERE))
    try:
        import models_src

        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 4))]))
        return _save_python_model(models_root / "tensor", models_src.TensorSum(), signature)
    finally:
        sys.path.remove(str(HERE))
        sys.modules.pop("models_src", None)


@pytest.fixture(scope="session")
def named_tensor_model(models_root: Path) -> Path:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    sys.path.insert(0, str(HERE))
    try:
        import models_src

        signature = ModelSignature(
            inputs=Schema(
                [
                    TensorSpec(np.dtype("float64"), (-1, 2), "a"),
                    TensorSpec(np.dtype("int64"), (-1,), "b"),
                ]
            )
        )
        return _save_python_model(
            models_root / "named_tensor", models_src.NamedTensors(), signature
        )
    finally:
        sys.path.remove(str(HERE))
        sys.modules.pop("models_src", None)


@pytest.fixture(scope="session")
def missing_requirements_model(models_root: Path) -> Path:
    """A model whose loader needs ``scoring_test_missing_pkg``, which nobody installs."""
    path = models_root / "missing"
    (path / "code").mkdir(parents=True)
    (path / "code" / "needs_missing.py").write_text(
        "import scoring_test_missing_pkg\n\n\ndef _load_pyfunc(path):\n    return None\n"
    )
    (path / "MLmodel").write_text(
        "flavors:\n"
        "  python_function:\n"
        "    loader_module: needs_missing\n"
        "    code: code\n"
        "    python_version: 3.11.7\n"
    )
    (path / "requirements.txt").write_text("scoring-test-missing-pkg==1.0\n")
    return path


_apps: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}


@pytest.fixture(scope="session")
def _app_cache() -> Iterator[dict[Any, Any]]:
    yield _apps
    for app in _apps.values():
        app.extensions["scoring"]["runner"].shutdown()
    _apps.clear()


@pytest.fixture
def client(_app_cache: dict[Any, Any]) -> Callable[..., Any]:
    """``client(model_dir, **config)``: a test client of an app built once per config.
    Access logs are off unless asked for."""
    from scoring import create_app

    def make(model_dir: Path, **config: Any) -> Any:
        config = {"model_dir": str(model_dir), "access_log": False, **config}
        key = (str(model_dir), tuple(sorted(config.items())))
        if key not in _app_cache:
            _app_cache[key] = create_app(config)
        return _app_cache[key].test_client()

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``python -m scoring serve`` subprocess."""

    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 60.0, port: int | None = None) -> None:
        """Wait for ``/ping`` 200 on the server's port, or on ``port`` (a private port)."""
        url = f"http://127.0.0.1:{port}" if port else self.url
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(url + "/ping", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(command: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Server:
    """Run ``command`` (a server on ``port``) from the repository root, output to ``log``."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        )
    return Server(proc, port, log)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(model_dir, *args, env=None, wait=True)``: start a server on a free port."""
    servers: list[Server] = []

    def start(
        model_dir: Path | None,
        *args: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        port: int | None = None,
    ) -> Server:
        port = port or free_port()
        log = tmp_path / f"server-{len(servers)}.log"
        cmd = [sys.executable, "-m", "scoring", "serve"]
        if model_dir is not None:
            cmd.append(str(model_dir))
        cmd += ["--port", str(port), *args]
        server = start_server(cmd, port, log, env)
        servers.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def reference() -> Callable[[Path], Any]:
    """``reference(model_dir)``: the model loaded by MLflow itself, to compare predictions."""
    import mlflow.pyfunc

    cache: dict[Path, Any] = {}

    def load(path: Path) -> Any:
        if path not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[path] = mlflow.pyfunc.load_model(str(path))
        return cache[path]

    return load
