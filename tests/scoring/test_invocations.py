"""POST /invocations: every input format, predictions equal to MLflow's, every error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.scoring.conftest import IRIS_COLUMNS

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def post(client: Any, body: Any, content_type: str | None = "application/json", **kw: Any) -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": content_type} if content_type else {}
    return client.post("/invocations", data=data, headers=headers, **kw)


def iris_frame() -> pd.DataFrame:
    return pd.DataFrame(IRIS_ROWS, columns=IRIS_COLUMNS)


def assert_error(response: Any, status: int, code: str, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error_code", "message"}
    assert body["error_code"] == code
    for fragment in fragments:
        assert fragment in body["message"]
    return body


# ---- every input format gives MLflow's predictions --------------------------------------

IRIS_FORMATS = {
    "dataframe_split": {"dataframe_split": {"columns": IRIS_COLUMNS, "data": IRIS_ROWS}},
    "dataframe_split reordered": {
        "dataframe_split": {
            "columns": IRIS_COLUMNS[::-1],
            "data": [row[::-1] for row in IRIS_ROWS],
        }
    },
    "dataframe_records": {"dataframe_records": [dict(zip(IRIS_COLUMNS, row)) for row in IRIS_ROWS]},
    "instances records": {"instances": [dict(zip(IRIS_COLUMNS, row)) for row in IRIS_ROWS]},
    "instances rows": {"instances": IRIS_ROWS},
    "inputs columns": {
        "inputs": {c: [r[i] for r in IRIS_ROWS] for i, c in enumerate(IRIS_COLUMNS)}
    },
    "inputs records": {"inputs": [dict(zip(IRIS_COLUMNS, row)) for row in IRIS_ROWS]},
}


@pytest.mark.parametrize("payload", IRIS_FORMATS.values(), ids=IRIS_FORMATS.keys())
def test_iris_formats_match_mlflow(
    client: Any, iris_model: Path, reference: Any, payload: Any
) -> None:
    response = post(client(iris_model), payload)
    assert response.status_code == 200, response.get_data(as_text=True)
    expected = reference(iris_model).predict(iris_frame()).tolist()
    assert response.get_json() == {"predictions": expected}
    assert "X-Ignored-Columns" not in response.headers


def test_charset_is_accepted(client: Any, iris_model: Path) -> None:
    response = post(
        client(iris_model), IRIS_FORMATS["dataframe_split"], "application/json; charset=utf-8"
    )
    assert response.status_code == 200


def test_csv_matches_mlflow(client: Any, iris_model: Path, reference: Any) -> None:
    body = iris_frame().to_csv(index=False)
    response = post(client(iris_model), body, "text/csv")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert (
        response.get_json()["predictions"] == reference(iris_model).predict(iris_frame()).tolist()
    )


def test_integers_are_accepted_for_double_columns(
    client: Any, iris_model: Path, reference: Any
) -> None:
    rows = [[5, 3, 1, 0]]
    response = post(
        client(iris_model), {"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}}
    )
    assert response.status_code == 200
    expected = reference(iris_model).predict(pd.DataFrame(rows, columns=IRIS_COLUMNS).astype(float))
    assert response.get_json()["predictions"] == expected.tolist()


def test_extra_columns_are_ignored_and_listed(
    client: Any, iris_model: Path, reference: Any
) -> None:
    payload = {
        "dataframe_split": {
            "columns": [*IRIS_COLUMNS, "extra"],
            "data": [[*r, 1] for r in IRIS_ROWS],
        }
    }
    response = post(client(iris_model), payload)
    assert response.status_code == 200
    assert json.loads(response.headers["X-Ignored-Columns"]) == ["extra"]
    assert (
        response.get_json()["predictions"] == reference(iris_model).predict(iris_frame()).tolist()
    )


def test_forest_without_signature_predict_proba(
    client: Any, forest_model: Path, reference: Any
) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(5, 20)), columns=[f"f{i}" for i in range(20)])
    response = post(client(forest_model), {"dataframe_split": frame.to_dict(orient="split")})
    assert response.status_code == 200, response.get_data(as_text=True)
    expected = reference(forest_model).predict(frame)
    np.testing.assert_allclose(np.array(response.get_json()["predictions"]), expected)
    records = post(client(forest_model), {"dataframe_records": frame.to_dict(orient="records")})
    np.testing.assert_allclose(np.array(records.get_json()["predictions"]), expected)


CUSTOM_ROWS = [[1.5, 2, "a", True], [2.5, -3, "b", False]]
CUSTOM_COLUMNS = ["x", "n", "label", "flag"]


def test_custom_model_with_params(client: Any, custom_model: Path, reference: Any) -> None:
    payload = {
        "dataframe_split": {"columns": CUSTOM_COLUMNS, "data": CUSTOM_ROWS},
        "params": {"scale": 2},
    }
    response = post(client(custom_model), payload)
    assert response.status_code == 200, response.get_data(as_text=True)
    frame = pd.DataFrame(CUSTOM_ROWS, columns=CUSTOM_COLUMNS)
    expected = reference(custom_model).predict(frame, params={"scale": 2.0})
    assert response.get_json() == {"predictions": expected.to_dict(orient="records")}
    assert response.get_json()["predictions"][0] == {
        "y": 5.0,
        "label": "A",
        "flag": False,
        "n_type": "int",
    }


def test_custom_model_defaults_params_and_csv(client: Any, custom_model: Path) -> None:
    body = "x,n,label,flag\n1.5,2,a,True\n2.5,-3,,False\n"
    response = post(client(custom_model), body, "text/csv")
    assert response.status_code == 200, response.get_data(as_text=True)
    predictions = response.get_json()["predictions"]
    assert predictions[0] == {"y": 3.5, "label": "A", "flag": False, "n_type": "int"}
    assert predictions[1]["label"] is None  # a missing string is null, not "nan"


def test_tensor_model(client: Any, tensor_model: Path, reference: Any) -> None:
    rows = [[1, 2, 3, 4], [-1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]]
    for payload in ({"inputs": rows}, {"instances": rows}):
        response = post(client(tensor_model), payload)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"predictions": [10.0, None, 2.0]}  # NaN -> null
    expected = reference(tensor_model).predict(np.array(rows, dtype=np.float32))
    assert np.isnan(expected[1]) and expected[0] == 10.0


def test_named_tensors(client: Any, named_tensor_model: Path) -> None:
    payload = {"inputs": {"a": [[1.0, 0.5], [2.0, 1.0]], "b": [3, 4]}}
    response = post(client(named_tensor_model), payload)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"predictions": [3.5, 9.0]}
    instances = {"instances": [{"a": [1.0, 0.5], "b": 3}, {"a": [2.0, 1.0], "b": 4}]}
    assert post(client(named_tensor_model), instances).get_json() == {"predictions": [3.5, 9.0]}


# ---- errors -----------------------------------------------------------------------------


def test_missing_content_type_is_415(client: Any, iris_model: Path) -> None:
    assert_error(
        post(client(iris_model), IRIS_FORMATS["inputs columns"], None),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "Content-Type",
    )


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/json; charset=latin-1", "application/json; format=x"],
)
def test_bad_content_type_is_415(client: Any, iris_model: Path, content_type: str) -> None:
    assert_error(
        post(client(iris_model), IRIS_FORMATS["inputs columns"], content_type),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )


BAD_INPUTS = {
    "not json": ("{nope", "not valid JSON"),
    "a list": ([1, 2], "JSON object"),
    "no format key": ({"data": []}, "exactly one of"),
    "two format keys": ({"inputs": [], "instances": []}, "exactly one of"),
    "split not object": ({"dataframe_split": [1]}, "'dataframe_split' must be an object"),
    "split extra key": (
        {"dataframe_split": {"data": [], "rows": 1}},
        "'dataframe_split' must have",
    ),
    "records not list": ({"dataframe_records": {"a": 1}}, "list of records"),
    "missing column": (
        {"dataframe_split": {"columns": IRIS_COLUMNS[:3], "data": [[1, 2, 3]]}},
        "missing required column: 'petal width (cm)' (double)",
    ),
    "wrong type": (
        {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[1, 2, 3, "wide"]]}},
        "column 'petal width (cm)' (double): expected a number, got 'wide'",
    ),
    "short row": (
        {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[1, 2, 3, 4], [1, 2]]}},
        "row 1 has 2 values, expected 4",
    ),
    "record missing column": (
        {"dataframe_records": [{"sepal length (cm)": 1}]},
        "missing required columns",
    ),
    "params not object": ({"inputs": IRIS_ROWS, "params": [1]}, "'params' must be an object"),
}


@pytest.mark.parametrize("body,fragment", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_400_naming_the_problem(
    client: Any, iris_model: Path, body: Any, fragment: str
) -> None:
    assert_error(post(client(iris_model), body), 400, "BAD_REQUEST", fragment)


def test_errors_do_not_echo_the_body(client: Any, iris_model: Path) -> None:
    secret = "x" * 5000
    body = assert_error(
        post(
            client(iris_model),
            {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[1, 2, 3, secret]]}},
        ),
        400,
        "BAD_REQUEST",
    )
    assert len(body["message"]) < 300


def test_custom_model_type_errors(client: Any, custom_model: Path) -> None:
    c = client(custom_model)
    row = {"x": 1.0, "n": 1.5, "label": "a", "flag": True}
    assert_error(
        post(c, {"dataframe_records": [row]}),
        400,
        "BAD_REQUEST",
        "column 'n' (long): expected an integer",
    )
    row = {"x": 1.0, "n": 1, "label": 3, "flag": True}
    assert_error(
        post(c, {"dataframe_records": [row]}), 400, "BAD_REQUEST", "column 'label' (string)"
    )
    row = {"x": 1.0, "n": 1, "label": "a", "flag": "maybe"}
    assert_error(
        post(c, {"dataframe_records": [row]}), 400, "BAD_REQUEST", "column 'flag' (boolean)"
    )
    good = {"dataframe_records": [{"x": 1.0, "n": 1, "label": "a", "flag": True}]}
    assert_error(
        post(c, {**good, "params": {"scale": "big"}}),
        400,
        "BAD_REQUEST",
        "param 'scale': expected double",
    )


def test_tensor_shape_errors(client: Any, tensor_model: Path, named_tensor_model: Path) -> None:
    assert_error(
        post(client(tensor_model), {"inputs": [[1, 2, 3]]}),
        400,
        "BAD_REQUEST",
        "shape [-1, 4]",
        "got shape [1, 3]",
    )
    assert_error(
        post(client(tensor_model), {"inputs": [[1, 2, 3, 4], [1]]}),
        400,
        "BAD_REQUEST",
        "rectangular",
    )
    assert_error(
        post(client(named_tensor_model), {"inputs": {"a": [[1.0, 2.0]]}}),
        400,
        "BAD_REQUEST",
        "missing input input 'b'",
    )


def test_model_exception_is_500_model_error(client: Any, custom_model: Path) -> None:
    payload = {
        "dataframe_records": [{"x": 1.0, "n": 1, "label": "a", "flag": True}],
        "params": {"fail": True},
    }
    assert_error(
        post(client(custom_model), payload), 500, "MODEL_ERROR", "RuntimeError: asked to fail"
    )


def test_model_error_without_signature(client: Any, forest_model: Path) -> None:
    # No signature: the input reaches the model, which rejects it; that is the model's error.
    assert_error(post(client(forest_model), {"inputs": [[1, 2]]}), 500, "MODEL_ERROR")


def test_timeout_is_504(client: Any, custom_model: Path) -> None:
    payload = {
        "dataframe_records": [{"x": 1.0, "n": 1, "label": "a", "flag": True}],
        "params": {"sleep": 1.0},
    }
    assert_error(post(client(custom_model, timeout=0.2), payload), 504, "REQUEST_TIMEOUT", "0.2 s")


def test_too_large_is_413(client: Any, iris_model: Path) -> None:
    body = json.dumps({"inputs": IRIS_ROWS * 100})
    assert_error(post(client(iris_model, max_request_bytes=1000), body), 413, "PAYLOAD_TOO_LARGE")


def test_unknown_route_and_method_are_json(client: Any, iris_model: Path) -> None:
    c = client(iris_model)
    assert_error(c.get("/nope"), 404, "RESOURCE_DOES_NOT_EXIST")
    response = assert_error(c.get("/invocations"), 405, "METHOD_NOT_ALLOWED")
    assert response["message"]


def test_ragged_rows_without_signature_are_400(client: Any, forest_model: Path) -> None:
    body = {"dataframe_split": {"data": [[1.0] * 20, [1.0] * 19]}}
    assert_error(post(client(forest_model), body), 400, "BAD_REQUEST", "different lengths")


def test_timeout_zero_means_no_limit(client: Any, custom_model: Path) -> None:
    payload = {
        "dataframe_records": [{"x": 1.0, "n": 1, "label": "a", "flag": True}],
        "params": {"sleep": 0.3},
    }
    response = post(client(custom_model, timeout=0), payload)
    assert response.status_code == 200, response.get_data(as_text=True)


# ---- a large body is decoded without the cyclic collector (issue 11's C10) ----------------


def _records_body(copies: int) -> bytes:
    return json.dumps({"dataframe_records": [dict(zip(IRIS_COLUMNS, r)) for r in IRIS_ROWS] * copies}).encode()


def test_the_collector_does_not_run_while_a_large_body_is_decoded(iris_model: Path) -> None:
    import gc

    from scoring._app import Scorer
    from scoring._invocations import JSON, parse_json
    from scoring._model import load_model

    scorer = Scorer(load_model(str(iris_model)))
    model_predict = scorer.model.predict
    events: list[str] = []

    def predict(data: Any, params: Any) -> Any:
        events.append("predict")
        return model_predict(data, params)

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            events.append(f"collection {info['generation']}")

    body = _records_body(60_000)
    scorer.model.predict = predict  # type: ignore[method-assign]
    gc.callbacks.append(on_collection)
    try:
        parse_json(body)  # what decoding alone does with the collector on
        collections_without_pause = len(events)
        events.clear()
        answer, _ = scorer.invocations(body, JSON)
    finally:
        gc.callbacks.remove(on_collection)
    assert collections_without_pause > 0
    assert events[0] == "predict", events[:5]  # nothing collected before the model is called
    assert gc.isenabled()
    assert len(json.loads(answer)["predictions"]) == 3 * 60_000


def test_the_collector_comes_back_when_the_last_decoding_request_leaves() -> None:
    import gc
    import threading

    from scoring._invocations import no_cycle_collection

    first_inside, second_inside, first_may_leave = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with no_cycle_collection():
            first_inside.set()
            first_may_leave.wait(10)
        seen["after the first left"] = gc.isenabled()
        second_inside.set()

    assert gc.isenabled()
    thread = threading.Thread(target=first)
    with no_cycle_collection():
        thread.start()
        assert first_inside.wait(10)
        first_may_leave.set()
        assert second_inside.wait(10)
        seen["inside"] = gc.isenabled()
    thread.join(10)
    assert seen == {"after the first left": False, "inside": False}
    assert gc.isenabled()

    gc.disable()  # a collector someone else turned off stays off
    try:
        with no_cycle_collection():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
