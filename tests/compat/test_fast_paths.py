"""The scoring server's fast paths give exactly what its general paths give.

- Records of an all-double signature convert in one numpy call (``_uniform_records``): the
  same frame, the same ignored columns and the same errors as the column-by-column path.
- A scikit-learn ``Pipeline`` takes the enforced rows as a bare array when, and only when,
  its predictions are the DataFrame's.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scoring._errors import InvalidInput
from scoring._model import load_model
from scoring._schema import Enforcer, Records, parse_signature

COLUMNS = [f"c{i}" for i in range(13)]


def enforcer(types: list[str]) -> Enforcer:
    inputs = [{"type": t, "name": n, "required": True} for n, t in zip(COLUMNS, types)]
    return Enforcer(parse_signature({"signature": {"inputs": json.dumps(inputs)}}))


def column_path(enf: Enforcer, records: list[Any]) -> Any:
    """What the column-by-column path makes of ``records``: the frame or the error message."""
    enf._uniform_float = False
    try:
        enforced = enf.enforce(Records(records))
        return enforced.data, enforced.ignored
    except InvalidInput as exc:
        return str(exc)
    finally:
        enf._uniform_float = True


def fast_path(enf: Enforcer, records: list[Any]) -> Any:
    assert enf._uniform_float
    try:
        enforced = enf.enforce(Records(records))
        return enforced.data, enforced.ignored
    except InvalidInput as exc:
        return str(exc)


def row(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {name: float(i) + 0.5 for i, name in enumerate(COLUMNS)}
    record.update(changes)
    return record


def assert_fast_path_is_the_column_path(enf: Enforcer, records: list[Any]) -> pd.DataFrame | None:
    """The fast path gives the column path's frame, ignored columns or error; returns the frame
    (None when both refused the records)."""
    try:
        expected = column_path(enf, records)
    except OverflowError:  # the column path's own behaviour, kept: the fast path defers to it
        with pytest.raises(OverflowError):
            fast_path(enf, records)
        return None
    got = fast_path(enf, records)
    if isinstance(expected, str):
        assert got == expected
        return None
    frame, ignored = got
    assert ignored == expected[1]
    pd.testing.assert_frame_equal(frame, expected[0])
    return frame


CASES = {
    "floats": [row(), row(c0=-1e300, c12=3.25)],
    "ints and bools": [row(c0=7, c1=True, c2=False)],
    "numeric text": [row(c3="1.5", c4="-2")],
    "null": [row(c5=None)],
    "extra column": [row(extra="ignored", c0=1.0)],
    "columns in another order": [dict(reversed(list(row().items())))],
    "missing column": [row(), {k: v for k, v in row().items() if k != "c7"}],
    "text": [row(c8="eight")],
    "nested list": [row(c9=[1.0])],
    "object": [row(c10={"a": 1})],
    "huge integer": [row(c11=10**400)],
    "not a record": [row(), 5],
}


@pytest.mark.parametrize("case", list(CASES))
def test_uniform_records_convert_as_the_column_path_does(case: str) -> None:
    frame = assert_fast_path_is_the_column_path(enforcer(["double"] * 13), CASES[case])
    if frame is not None:
        assert frame.dtypes.unique().tolist() == [np.dtype("float64")]


def test_uniform_records_make_a_one_block_frame() -> None:
    frame = enforcer(["double"] * 13).enforce(Records([row(), row()])).data
    assert frame._mgr.nblocks == 1 and list(frame.columns) == COLUMNS


def test_other_signatures_keep_the_column_path() -> None:
    assert not enforcer(["float"] * 13)._uniform_float
    assert not enforcer(["double"] * 12 + ["long"])._uniform_float
    mixed = enforcer(["double"] * 12 + ["long"]).enforce(Records([row(c12=3)])).data
    assert mixed["c12"].dtype == np.dtype("int64") and math.isclose(mixed["c0"][0], 0.5)


def _save(tmp_path: Path, model: Any, frame: pd.DataFrame) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    path = tmp_path / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(model, str(path), signature=infer_signature(frame, model.predict(frame)))
    return path


def _wine() -> tuple[pd.DataFrame, Any]:
    from sklearn.datasets import load_wine

    return load_wine(return_X_y=True, as_frame=True)  # type: ignore[no-any-return]


def test_a_scaler_pipeline_takes_the_rows_as_an_array_with_the_same_predictions(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _wine()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    model = load_model(str(_save(tmp_path, pipeline, X)))
    assert model.enforcer.array_input, "the pipeline should take the enforced rows as an array"
    records = json.loads(X.to_json(orient="records"))
    enforced = model.enforcer.enforce(Records(records))
    assert isinstance(enforced.data, np.ndarray)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = model.predict(enforced.data, None)
    assert np.array_equal(got, pipeline.predict(X))
    assert hasattr(pipeline, "feature_names_in_"), "the loaded estimator itself is left as it was"


def test_a_pipeline_that_needs_column_names_keeps_the_dataframe(tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _wine()
    pipeline = Pipeline([
        ("columns", ColumnTransformer([("scale", StandardScaler(), list(X.columns))])),
        ("classify", LogisticRegression(max_iter=1000)),
    ]).fit(X, y)
    model = load_model(str(_save(tmp_path, pipeline, X)))
    assert not model.enforcer.array_input
    enforced = model.enforcer.enforce(Records(json.loads(X.head(5).to_json(orient="records"))))
    assert isinstance(enforced.data, pd.DataFrame)
    assert np.array_equal(model.predict(enforced.data, None), pipeline.predict(X.head(5)))


@pytest.mark.parametrize("case", ["floats", "null", "text", "huge integer", "missing column", "not a record"])
def test_uniform_records_past_one_slice_convert_as_the_column_path_does(case: str) -> None:
    """The fast path converts ``_SLICE`` rows per numpy call (so /ping is not kept waiting):
    a value it refuses in a later slice is found as in the first."""
    from scoring._schema import _SLICE

    assert_fast_path_is_the_column_path(enforcer(["double"] * 13), [row()] * (2 * _SLICE) + CASES[case])


def test_rows_past_one_slice_make_the_array_one_numpy_call_makes() -> None:
    from scoring._schema import _SLICE, _rows_array

    rows = [[float(i), i * 0.5] for i in range(2 * _SLICE + 3)]
    np.testing.assert_array_equal(_rows_array(np, rows, np.float64, 2), np.asarray(rows))
    ints = [[i, i + 1] for i in range(_SLICE)]
    assert _rows_array(np, ints, None, 2).dtype.kind == "i"
    assert _rows_array(np, ints + [[0.5, 1]], None, 2).dtype.kind == "f"  # then refused as not integers
    text = _rows_array(np, ints + [["a", 1]], None, 2)  # text in a later slice: not integers either
    assert text is None or text.dtype.kind not in "iu"
    assert _rows_array(np, rows + [[1.0]], np.float64, 2) is None  # a short row in a later slice
    assert _rows_array(np, rows, np.float64, 3) is None
    assert _rows_array(np, [], np.float64, 2) is None
