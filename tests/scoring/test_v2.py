"""The Open Inference Protocol (KServe V2) routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.scoring.conftest import IRIS_COLUMNS

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def infer(client: Any, name: str, body: Any) -> Any:
    return client.post(f"/v2/models/{name}/infer", json=body)


def assert_v2_error(response: Any, status: int, code: str, fragment: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == body["message"]
    assert body["error_code"] == code
    assert fragment in body["error"]


def test_health_and_server_metadata(client: Any, iris_model: Path) -> None:
    c = client(iris_model)
    assert c.get("/v2/health/live").get_json() == {"live": True}
    assert c.get("/v2/health/ready").get_json() == {"ready": True}
    assert c.get("/v2").get_json()["name"] == "orchestrate-scoring"
    assert c.get("/v2/models/iris/ready").get_json() == {"name": "iris", "ready": True}


def test_model_metadata_from_signature(
    client: Any, iris_model: Path, named_tensor_model: Path
) -> None:
    meta = client(iris_model).get("/v2/models/iris").get_json()
    assert meta["name"] == "iris" and meta["platform"] == "mlflow"
    assert meta["inputs"] == [{"name": c, "datatype": "FP64", "shape": [-1]} for c in IRIS_COLUMNS]
    assert meta["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [-1]}]
    named = client(named_tensor_model).get("/v2/models/named_tensor").get_json()
    assert named["inputs"] == [
        {"name": "a", "datatype": "FP64", "shape": [-1, 2]},
        {"name": "b", "datatype": "INT64", "shape": [-1]},
    ]


def test_model_name_setting(client: Any, iris_model: Path) -> None:
    c = client(iris_model, model_name="flowers")
    assert c.get("/v2/models/flowers").status_code == 200
    assert_v2_error(c.get("/v2/models/iris"), 404, "RESOURCE_DOES_NOT_EXIST", "serves 'flowers'")


def test_infer_one_tensor_per_column(client: Any, iris_model: Path, reference: Any) -> None:
    inputs = [
        {"name": c, "shape": [2], "datatype": "FP64", "data": [r[i] for r in IRIS_ROWS]}
        for i, c in enumerate(IRIS_COLUMNS)
    ]
    response = infer(client(iris_model), "iris", {"id": "req-1", "inputs": inputs})
    assert response.status_code == 200, response.get_data(as_text=True)
    expected = reference(iris_model).predict(pd.DataFrame(IRIS_ROWS, columns=IRIS_COLUMNS))
    assert response.get_json() == {
        "model_name": "iris",
        "id": "req-1",
        "outputs": [
            {"name": "predictions", "datatype": "INT64", "shape": [2], "data": expected.tolist()}
        ],
    }


def test_infer_one_matrix_for_all_columns(client: Any, iris_model: Path, reference: Any) -> None:
    body = {
        "inputs": [
            {
                "name": "x",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": [v for row in IRIS_ROWS for v in row],
            }
        ]
    }
    response = infer(client(iris_model), "iris", body)
    assert response.status_code == 200, response.get_data(as_text=True)
    expected = reference(iris_model).predict(pd.DataFrame(IRIS_ROWS, columns=IRIS_COLUMNS))
    assert response.get_json()["outputs"][0]["data"] == expected.tolist()
    assert response.get_json()["id"] == response.headers["X-Request-ID"]


def test_infer_tensor_models(client: Any, tensor_model: Path, named_tensor_model: Path) -> None:
    body = {
        "inputs": [
            {
                "name": "t",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": [[1, 2, 3, 4], [-1, 0, 0, 0]],
            }
        ]
    }
    out = infer(client(tensor_model), "tensor", body).get_json()["outputs"]
    assert out == [{"name": "predictions", "datatype": "FP64", "shape": [2], "data": [10.0, None]}]
    body = {
        "inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 0.5, 2.0, 1.0]},
            {"name": "b", "shape": [2], "datatype": "INT64", "data": [3, 4]},
        ]
    }
    out = infer(client(named_tensor_model), "named_tensor", body).get_json()["outputs"]
    assert out[0]["data"] == [3.5, 9.0]


def test_infer_dataframe_output_and_params(client: Any, custom_model: Path) -> None:
    body = {
        "parameters": {"scale": 10.0, "content_type": "pd"},
        "inputs": [
            {"name": "x", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]},
            {"name": "n", "shape": [2], "datatype": "INT64", "data": [2, -3]},
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
            {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        ],
        "outputs": [{"name": "y"}, {"name": "label"}],
    }
    response = infer(client(custom_model), "custom", body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["outputs"] == [
        {"name": "y", "datatype": "FP64", "shape": [2], "data": [17.0, 22.0]},
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["A", "B"]},
    ]


V2_ERRORS = {
    "not an object": ([1], "must be a JSON object"),
    "no inputs": ({"inputs": []}, "non-empty 'inputs'"),
    "bad shape": (
        {"inputs": [{"name": "x", "shape": [-1], "datatype": "FP64", "data": []}]},
        "non-negative",
    ),
    "bad datatype": (
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]},
        "unknown datatype",
    ),
    "size mismatch": (
        {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2]}]},
        "needs 8 values, got 2",
    ),
    "wrong values": (
        {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": ["a"]}]},
        "must be INT64 values",
    ),
    "missing column": (
        {"inputs": [{"name": "sepal length (cm)", "shape": [1], "datatype": "FP64", "data": [1]}]},
        "missing required columns",
    ),
    "unknown output": (
        {
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "nope"}],
        },
        "unknown output 'nope'",
    ),
}


@pytest.mark.parametrize("body,fragment", V2_ERRORS.values(), ids=V2_ERRORS.keys())
def test_infer_errors(client: Any, iris_model: Path, body: Any, fragment: str) -> None:
    assert_v2_error(infer(client(iris_model), "iris", body), 400, "BAD_REQUEST", fragment)


def test_infer_other_errors(client: Any, iris_model: Path, custom_model: Path) -> None:
    c = client(iris_model)
    assert_v2_error(infer(c, "nope", {"inputs": []}), 404, "RESOURCE_DOES_NOT_EXIST", "not served")
    response = c.post(
        "/v2/models/iris/infer", data=b"abc", headers={"Content-Type": "application/octet-stream"}
    )
    assert_v2_error(response, 415, "UNSUPPORTED_MEDIA_TYPE", "application/json")
    fail = {
        "parameters": {"fail": True},
        "inputs": [
            {"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]},
            {"name": "n", "shape": [1], "datatype": "INT64", "data": [1]},
            {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["a"]},
            {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [True]},
        ],
    }
    assert_v2_error(
        infer(client(custom_model), "custom", fail), 500, "MODEL_ERROR", "asked to fail"
    )


def test_numpy_reference_equal(client: Any, forest_model: Path, reference: Any) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(3, 20)), columns=[f"f{i}" for i in range(20)])
    inputs = [
        {"name": c, "shape": [3], "datatype": "FP64", "data": frame[c].tolist()}
        for c in frame.columns
    ]
    out = infer(client(forest_model), "forest", {"inputs": inputs}).get_json()["outputs"][0]
    assert out["shape"] == [3, 2]
    np.testing.assert_allclose(
        np.array(out["data"]).reshape(3, 2), reference(forest_model).predict(frame)
    )
