"""`orchestrate predict MODEL` offline and `orchestrate serve MODEL`, as with `mlflow models`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _orchestrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.mark.parametrize("env_manager", ["virtualenv", "local"])
def test_predict_offline_json_and_csv(example_model: Path, tmp_path: Path, env_manager: str) -> None:
    result = _orchestrate("predict", str(example_model), "-i", str(example_model / "serving_input_example.json"),
                          "--env-manager", env_manager)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"predictions": [0, 1, 2, 2]}

    frame = json.loads((example_model / "serving_input_example.json").read_text())["dataframe_split"]
    csv = tmp_path / "rows.csv"
    csv.write_text(",".join(frame["columns"]) + "\n" + "\n".join(",".join(map(str, row)) for row in frame["data"]))
    answer = tmp_path / "answer.json"
    result = _orchestrate("predict", str(example_model), "-i", str(csv), "-o", str(answer),
                          "--env-manager", env_manager)
    assert result.returncode == 0, result.stderr
    assert json.loads(answer.read_text()) == {"predictions": [0, 1, 2, 2]}


def test_predict_offline_bad_input_exits_2_naming_the_problem(example_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    result = _orchestrate("predict", str(example_model), "-i", str(bad), "--env-manager", "local")
    assert result.returncode == 2
    assert "exactly one of the keys" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def model_missing_a_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pyfunc model whose code imports `six`, which its requirements.txt forgets."""
    code = tmp_path_factory.mktemp("code") / "uses_six.py"
    code.write_text(textwrap.dedent("""
        import six
        import mlflow.pyfunc

        class Echo(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                return [six.text_type(len(model_input))]
    """))
    sys.path.insert(0, str(code.parent))
    try:
        path = tmp_path_factory.mktemp("models") / "needs-six"
        with warnings.catch_warnings():  # MLflow's advice on type hints, irrelevant here
            warnings.simplefilter("ignore")
            import mlflow.pyfunc
            import uses_six

            mlflow.pyfunc.save_model(str(path), python_model=uses_six.Echo(), code_paths=[str(code)],
                                     pip_requirements=["mlflow==3.17.2", "cloudpickle", "pandas", "numpy"])
    finally:
        sys.path.remove(str(code.parent))
        sys.modules.pop("uses_six", None)
    (path / "input.json").write_text(json.dumps({"inputs": [[1], [2]]}))
    return path


def test_missing_module_names_it_and_the_override_fixes_it(model_missing_a_module: Path) -> None:
    failed = _orchestrate("predict", str(model_missing_a_module), "-i", str(model_missing_a_module / "input.json"))
    assert failed.returncode == 1
    assert "six" in failed.stderr and "--pip-requirements-override" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr

    fixed = _orchestrate("predict", str(model_missing_a_module), "-i", str(model_missing_a_module / "input.json"),
                         "--pip-requirements-override", "six")
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout) == {"predictions": ["2"]}
    assert "six" not in (model_missing_a_module / "requirements.txt").read_text()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_in_the_foreground_until_sigterm(example_model: Path) -> None:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "orchestrator", "serve", str(example_model), "-p", str(port),
                               "-h", "127.0.0.1", "-w", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**os.environ})
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "orchestrate serve never answered /ping"
                time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=(example_model / "serving_input_example.json").read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"predictions": [0, 1, 2, 2]}
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        if server.stdout:
            server.stdout.close()
