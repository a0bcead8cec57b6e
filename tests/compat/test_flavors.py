"""Flavor compatibility: every model `mlflow models serve` serves, orchestrate serves alike.

For each model of ``make_models.MODELS`` (saved by MLflow itself at test time), a
differential test: the same requests (good ones in each input format the model takes, and
bad ones) to ``mlflow models serve --env-manager local`` and to ``orchestrate serve`` (in the
model's own virtualenv) get the same status codes and the same predictions; then
``orchestrate predict MODEL`` in that environment and a ``--target local`` deployment answer
as MLflow does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from _executables import orchestrate_executable
from compat_servers import (
    Answer,
    free_port,
    load_requests,
    predictions,
    same,
    send,
    send_all,
    start_server,
)

# The first test of a requirement set builds its environment (uv, from the registry).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

# The models of make_models.MODELS this suite runs (all of them).
MODEL_NAMES = [
    "pyfunc_plain",
    "pyfunc_artifacts_code",
    "pyfunc_tensor",
    "pyfunc_strings",
    "pyfunc_no_signature",
    "sklearn_pickle",
    "sklearn_cloudpickle",
    "sklearn_skops",
    "sklearn_pipeline_columns",
    "xgboost",
    "lightgbm",
    "statsmodels",
    "onnx",
    "keras",
]


def orchestrate(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([orchestrate_executable(), *args], check=False, stdin=subprocess.DEVNULL,
                          capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def assert_answers_match(ours: dict[str, Answer], theirs: dict[str, Answer]) -> None:
    assert sorted(ours) == sorted(theirs)
    for name, expected in theirs.items():
        got = ours[name]
        assert got.status == expected.status, (
            f"request {name!r}: orchestrate answered {got.status} {got.body!r}, "
            f"mlflow {expected.status} {expected.body!r}"
        )
        if expected.status == 200:
            same(predictions(got), predictions(expected), f"{name}: predictions")
        else:  # the message is ours; its shape is MLflow's
            assert isinstance(got.body, dict) and got.body.get("error_code") and got.body.get("message"), got


def good_requests(model: Path) -> list[dict[str, str]]:
    return [r for r in load_requests(model) if not r["name"].startswith("bad:")]


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_orchestrate_serve_answers_as_mlflow_serve(
    model_name: str, compat_model: Callable[[str], Path],
    mlflow_answers: Callable[[str], dict[str, Answer]], tmp_path: Path,
) -> None:
    model = compat_model(model_name)
    theirs = mlflow_answers(model_name)
    assert any(r.status == 200 for r in theirs.values()), f"mlflow served nothing: {theirs}"
    assert any(r.status != 200 for r in theirs.values()), "the requests have no bad one"
    port = free_port()
    server = start_server(
        "orchestrate serve",
        [orchestrate_executable(), "serve", str(model), "-p", str(port), "-h", "127.0.0.1", "-w", "1"],
        port, tmp_path / "orchestrate.log",
    )
    try:
        ours = send_all(server.url, model)
    finally:
        server.stop()
    assert_answers_match(ours, theirs)


def test_plain_pyfunc_is_served_without_scikit_learn(compat_model: Callable[[str], Path],
                                                     tmp_path: Path) -> None:
    """The issue's model: MLflow writes only mlflow and cloudpickle; its environment has no
    scikit-learn to bring numpy and pandas in by chance, and it is served all the same."""
    model = compat_model("pyfunc_plain")
    pinned = [line.split("==")[0] for line in (model / "requirements.txt").read_text().split()]
    assert pinned == ["mlflow", "cloudpickle"], pinned
    port = free_port()
    server = start_server(
        "orchestrate serve",
        [orchestrate_executable(), "serve", str(model), "-p", str(port), "-h", "127.0.0.1", "-w", "1"],
        port, tmp_path / "orchestrate.log",
    )
    try:
        python = psutil.Process(server.process.pid).cmdline()[0]  # serve execs the env's python
        request = good_requests(model)[0]
        answer = send(server.url, request)
    finally:
        server.stop()
    assert answer.status == 200, answer
    probe = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('sklearn') is None)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "True", f"{python} has scikit-learn"
    assert Path(python).parent.parent != Path(sys.prefix), "served from the test interpreter, not its env"


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_orchestrate_predict_agrees_with_mlflow(
    model_name: str, compat_model: Callable[[str], Path],
    mlflow_answers: Callable[[str], dict[str, Answer]], tmp_path: Path,
) -> None:
    model = compat_model(model_name)
    theirs = mlflow_answers(model_name)
    request = next(r for r in good_requests(model) if r["content_type"] == "application/json")
    given = tmp_path / "input.json"
    given.write_text(request["body"])
    result = orchestrate("predict", str(model), "-i", str(given))
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    same(json.loads(result.stdout)["predictions"], predictions(theirs[request["name"]]))


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_local_target_deploys_and_answers_as_mlflow(
    model_name: str, compat_model: Callable[[str], Path],
    mlflow_answers: Callable[[str], dict[str, Answer]],
) -> None:
    model = compat_model(model_name)
    theirs = mlflow_answers(model_name)
    endpoint = "compat-" + model_name.replace("_", "-")
    deployed = orchestrate("deploy", str(model), "--name", endpoint, "--target", "local")
    try:
        assert deployed.returncode == 0, f"exit {deployed.returncode}\n{deployed.stdout}\n{deployed.stderr}"
        status = orchestrate("status", endpoint, "--json")
        assert status.returncode == 0, status.stderr
        url = json.loads(status.stdout)["url"]
        assert url.startswith("http://127.0.0.1:"), url
        good = {r["name"] for r in good_requests(model)}
        ours = {name: answer for name, answer in send_all(url, model).items() if name in good}
        assert_answers_match(ours, {name: theirs[name] for name in good})
    finally:
        deleted = orchestrate("delete", endpoint, "--yes", timeout=120)
        assert deleted.returncode == 0, deleted.stderr
