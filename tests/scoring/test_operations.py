"""Ping, version, metrics, request ids, access logs, settings, and the package surface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import scoring
from scoring._config import DEFAULTS, load_config
from tests.scoring.conftest import IRIS_COLUMNS, REPO_ROOT

IRIS_PAYLOAD = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}


def test_ping_health_version(client: Any, iris_model: Path) -> None:
    c = client(iris_model)
    for path in ("/ping", "/health"):
        response = c.get(path)
        assert response.status_code == 200 and response.data == b"\n"
    version = c.get("/version").get_json()
    assert version["version"] == scoring.__version__
    assert version["model"]["name"] == "iris"
    assert version["model"]["loader"] == "native"
    assert version["model"]["mlflow_version"]


def test_mlflow_loader_is_available(client: Any, iris_model: Path, reference: Any) -> None:
    c = client(iris_model, loader="mlflow")
    assert c.get("/version").get_json()["model"]["loader"] == "mlflow"
    response = c.post("/invocations", json=IRIS_PAYLOAD)
    assert response.get_json() == {"predictions": [0]}


def test_request_id_generated_or_echoed(client: Any, iris_model: Path) -> None:
    c = client(iris_model)
    first = c.get("/ping").headers["X-Request-ID"]
    second = c.get("/ping").headers["X-Request-ID"]
    assert first != second and len(first) == 32
    assert (
        c.post("/invocations", json=IRIS_PAYLOAD, headers={"X-Request-ID": "r-1"}).headers[
            "X-Request-ID"
        ]
        == "r-1"
    )
    assert c.get("/nope", headers={"X-Request-ID": "r-2"}).headers["X-Request-ID"] == "r-2"
    assert c.get("/ping", headers={"X-Request-ID": "x" * 500}).headers["X-Request-ID"] != "x" * 500


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if (
            line.startswith(name + " ")
            or line.startswith(name + "{")
            and line.rsplit(" ", 1)[0] == name
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_counters_move(client: Any, iris_model: Path) -> None:
    c = client(iris_model, model_name="metrics-test")
    ok = 'scoring_requests_total{route="/invocations",status="200"}'
    bad = 'scoring_requests_total{route="/invocations",status="400"}'
    count = 'scoring_request_duration_seconds_count{route="/invocations"}'
    before = c.get("/metrics").get_data(as_text=True)
    c.post("/invocations", json=IRIS_PAYLOAD)
    c.post("/invocations", json=IRIS_PAYLOAD)
    c.post("/invocations", json={"inputs": [[1]]})
    c.post("/v2/models/metrics-test/infer", json={"inputs": []})
    response = c.get("/metrics")
    assert response.mimetype == "text/plain"
    after = response.get_data(as_text=True)
    assert _sample(after, ok) == _sample(before, ok) + 2
    assert _sample(after, bad) == _sample(before, bad) + 1
    assert _sample(after, count) == _sample(before, count) + 3
    assert 'scoring_requests_total{route="/v2/models/{name}/infer",status="400"}' in after
    assert 'scoring_request_duration_seconds_bucket{route="/invocations",le="+Inf"}' in after
    assert "scoring_requests_in_flight 1" in after  # the /metrics request itself
    assert 'scoring_model_load_seconds{model="metrics-test"}' in after
    assert "# TYPE scoring_request_duration_seconds histogram" in after


def test_access_log_lines(
    client: Any, iris_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = client(iris_model, access_log=True)
    capsys.readouterr()
    c.post("/invocations", json=IRIS_PAYLOAD, headers={"X-Request-ID": "log-1"})
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["request_id"] == "log-1"
    assert line["method"] == "POST" and line["path"] == "/invocations" and line["status"] == 200
    assert line["duration_ms"] > 0 and line["bytes_in"] > 0
    assert set(line) == {
        "time",
        "request_id",
        "method",
        "path",
        "status",
        "duration_ms",
        "remote",
        "bytes_in",
    }


def test_openapi_document(client: Any, iris_model: Path) -> None:
    doc = client(iris_model).get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert {"/invocations", "/ping", "/v2/models/{model_name}/infer", "/metrics"} <= set(
        doc["paths"]
    )
    records = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]
    assert set(records["schema"]["properties"]["dataframe_records"]["items"]["properties"]) == set(
        IRIS_COLUMNS
    )


# ---- settings ---------------------------------------------------------------------------


def test_config_precedence() -> None:
    env = {
        "PORT": "9001",
        "SAGEMAKER_BIND_TO_PORT": "9002",
        "ORCHESTRATE_THREADS": "7",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
        "ORCHESTRATE_ACCESS_LOG": "off",
    }
    cfg = load_config({}, env)
    assert (cfg.port, cfg.threads, cfg.workers, cfg.access_log) == (9002, 7, 3, False)
    assert load_config({"port": 9100}, env).port == 9100
    assert load_config({}, {"ORCHESTRATE_PORT": "9200", "PORT": "1"}).port == 9200
    assert load_config({}, {}).model_dir == DEFAULTS["model_dir"] == "/opt/ml/model"
    assert load_config({}, {}).workers >= 1


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"port": 0}, "port must be between"),
        ({"threads": 0}, "threads must be at least 1"),
        ({"timeout": -1}, "timeout must not be negative"),
        ({"loader": "magic"}, "loader must be one of"),
        ({"nope": 1}, "unknown scoring setting 'nope'"),
        ({"access_log": "maybe"}, "invalid value for access_log"),
    ],
)
def test_config_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(overrides, {})


def test_model_load_errors(missing_requirements_model: Path, tmp_path: Path) -> None:
    from scoring import ModelLoadError, create_app

    with pytest.raises(ModelLoadError) as info:
        create_app({"model_dir": str(missing_requirements_model), "loader": "native"})
    assert info.value.missing_module == "scoring_test_missing_pkg"
    assert "--pip-requirements-override scoring-test-missing-pkg" in str(info.value)
    with pytest.raises(ModelLoadError, match="no MLmodel file"):
        create_app({"model_dir": str(tmp_path)})


def test_exported_members_sorted_and_complete() -> None:
    assert scoring.__all__ == sorted(scoring.__all__)
    public = {
        n
        for n in vars(scoring)
        if not n.startswith("_") and n not in ("annotations", "TYPE_CHECKING", "Any", "Mapping")
    }
    assert public | {"__version__"} == set(scoring.__all__)
    assert scoring.SERVER_REQUIREMENTS and all(
        isinstance(r, str) for r in scoring.SERVER_REQUIREMENTS
    )


def test_import_is_light() -> None:
    code = (
        "import sys, scoring; heavy = {'flask', 'gunicorn', 'numpy', 'pandas', 'mlflow', "
        "'orchestrator', 'targets', 'boto3'} & {m.split('.')[0] for m in sys.modules}; print(sorted(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_no_orchestrator_or_cloud_imports_in_source() -> None:
    for path in (REPO_ROOT / "scoring").glob("*.py"):
        text = path.read_text()
        for banned in (
            "import orchestrator",
            "from orchestrator",
            "import targets",
            "from targets",
            "boto3",
            "azure",
            "kubernetes",
        ):
            assert banned not in text, (path.name, banned)


def test_array_input_only_when_equivalent(iris_model: Path, tmp_path: Path) -> None:
    """The 2-D array shortcut is on for a plain estimator, off for a pipeline that selects
    columns by name; both answer as MLflow does."""
    import warnings

    import mlflow.pyfunc
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from scoring._model import load_model

    assert load_model(str(iris_model)).enforcer.array_input
    X, y = load_iris(return_X_y=True, as_frame=True)
    pipe = make_pipeline(
        ColumnTransformer([("scale", StandardScaler(), IRIS_COLUMNS[::-1])]),
        LogisticRegression(max_iter=1000),
    ).fit(X, y)
    path = tmp_path / "pipeline"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(
            pipe,
            path,
            signature=infer_signature(X, pipe.predict(X)),
            skops_trusted_types=["sklearn.compose._column_transformer._RemainderColsList"],
        )
        expected = mlflow.pyfunc.load_model(str(path)).predict(X.head(5)).tolist()
    model = load_model(str(path))
    assert not model.enforcer.array_input
    app = scoring.create_app({"model": model, "model_dir": str(path), "access_log": False})
    try:
        frame = pd.DataFrame(X.head(5))
        response = app.test_client().post(
            "/invocations", json={"dataframe_split": frame.to_dict(orient="split")}
        )
        assert response.get_json() == {"predictions": expected}
    finally:
        app.extensions["scoring"]["runner"].shutdown()
