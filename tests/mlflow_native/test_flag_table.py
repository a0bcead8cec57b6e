"""The commands of docs/mlflow.md's table, run with MLflow's flags and variables: serve and
predict as `mlflow models` takes them, deploy -m, and the Python API like `mlflow.models`."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from _executables import orchestrate_executable
from _mlflow_helpers import Cli, Registry, describe, free_port

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

V1_PREDICTIONS = [0, 1, 2, 2]
V2_PREDICTIONS = [0, 2, 2, 1]


def test_serve_with_mlflows_flags_and_variables(cli: Cli, registry: Registry, example_model: Path) -> None:
    port = free_port()
    # -m, -t, --no-conda as `mlflow models serve` takes them; the port from MLFLOW_PORT.
    server = subprocess.Popen(
        [orchestrate_executable(), "serve", "-m", f"models:/{registry.name}@champion", "-t", "30", "-w", "1",
         "--no-conda"], env={**os.environ, "ORCHESTRATE_HOME": str(cli.home), "MLFLOW_PORT": str(port)},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.communicate()[0]
                assert time.monotonic() < deadline, "serve never answered /ping"
                time.sleep(0.25)
        body = (example_model / "serving_input_example.json").read_bytes()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.loads(answer.read())["predictions"] == V1_PREDICTIONS
    finally:
        os.killpg(server.pid, 15)
        server.communicate(timeout=60)


def test_predict_with_mlflows_flags(cli: Cli, registry: Registry, example_model: Path, tmp_path: Path) -> None:
    body = (example_model / "serving_input_example.json").read_text()
    out = tmp_path / "out.json"
    # -i - (standard input), -o, -t json, --env-manager uv (the cached virtualenv), --install-mlflow.
    cli.ok("predict", "-m", f"runs:/{registry.run_id}/challenger", "-i", "-", "-o", str(out), "-t", "json",
           "--env-manager", "uv", "--install-mlflow", input_text=body)
    assert json.loads(out.read_text())["predictions"] == V2_PREDICTIONS
    conda = cli.run("predict", "-m", f"models:/{registry.name}/1", "-i", "-", "--env-manager", "conda",
                    input_text=body)
    assert conda.returncode == 2 and "conda" in conda.stderr and "Traceback" not in conda.stderr, describe(conda)
    both = cli.run("predict", "somewhere", "-m", f"models:/{registry.name}/1", "-i", "-", input_text=body)
    assert both.returncode == 2 and "two models given" in both.stderr, describe(both)


def test_deploy_m_then_status_list_delete(cli: Cli, registry: Registry) -> None:
    cli.ok("deploy", "-m", f"models:/{registry.name}/2", "--name", "flags", "--target", "noop")
    assert cli.json("status", "flags")["live"]["model_source"]["version"] == "2"
    assert any(row["endpoint"] == "flags" for row in cli.json("list"))
    assert "sagemaker" in cli.ok("targets").stdout
    cli.ok("delete", "flags", "--yes")
    cli.endpoints.discard("flags")


def test_python_api_predict_like_mlflow_models(registry: Registry, example_model: Path) -> None:
    import pandas as pd

    import orchestrator

    example = json.loads((example_model / "serving_input_example.json").read_text())
    frame = pd.DataFrame(**example["dataframe_split"])
    uri = f"models:/{registry.name}@champion"
    assert orchestrator.predict(uri, frame, env_manager="local") == V1_PREDICTIONS
    assert orchestrator.predict(uri, example, env_manager="local") == V1_PREDICTIONS
    assert orchestrator.predict(f"models:/{registry.name}/2", example_model / "serving_input_example.json",
                                env_manager="local") == V2_PREDICTIONS
    with pytest.raises(orchestrator.ConfigError, match="cannot be scored"):
        orchestrator.predict(uri, 42, env_manager="local")


def test_the_scoring_server_reads_mlflows_variables_after_its_own() -> None:
    """In a container: what `mlflow models serve` users set (MLFLOW_PORT, ...) is honoured, and
    orchestrate's and SageMaker's own variables still come first."""
    from scoring._config import load_config

    mlflow_only = load_config({}, {"MLFLOW_PORT": "9301", "MLFLOW_MODELS_WORKERS": "3",
                                   "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "17"})
    assert (mlflow_only.port, mlflow_only.workers, mlflow_only.timeout) == (9301, 3, 17.0)
    assert load_config({}, {"MLFLOW_WORKERS": "2"}).workers == 2
    both = load_config({}, {"MLFLOW_PORT": "9301", "SAGEMAKER_BIND_TO_PORT": "8080", "ORCHESTRATE_TIMEOUT": "5",
                            "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "17"})
    assert (both.port, both.timeout) == (8080, 5.0)
