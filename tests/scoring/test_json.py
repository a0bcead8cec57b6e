"""``scoring._json`` gives the same bytes with orjson and with the standard library."""

from __future__ import annotations

import datetime
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scoring import _json
from scoring._errors import InvalidInput

CASES: list[Any] = [
    np.array([1.5, math.nan, math.inf, -2.0]),
    np.array([[1, 2], [3, 4]], dtype=np.int64),
    np.array(["2024-01-02T03:04:05"], dtype="datetime64[s]"),
    pd.DataFrame({"a": [1.0, math.nan], "b": ["x", "y"]}),
    pd.Series([1, 2], name="y"),
    [b"\x00\xff", datetime.date(2024, 1, 2), {"k": np.float32(0.5)}],
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_standard_library_fallback_writes_the_same(
    case: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _json.predictions_body(CASES[case])
    monkeypatch.setattr(_json, "_orjson", None)
    assert _json.loads(_json.predictions_body(CASES[case])) == _json.loads(fast)


def test_standard_library_fallback_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"inputs": [[1, 2.5, null]], "params": {"s": "\\u00e9"}}'
    fast = _json.loads(body)
    monkeypatch.setattr(_json, "_orjson", None)
    assert _json.loads(body) == fast
    with pytest.raises(InvalidInput, match="not valid JSON"):
        _json.loads(b"{")


@pytest.mark.parametrize("predictions", [
    pd.Series([0.5, -1.25]),  # statsmodels' OLS results: an unnamed Series
    pd.Series([1, 2], name="y"),
    pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}),
    np.array([[1.0, 2.0], [3.0, 4.0]]),
])
def test_predictions_are_shaped_as_mlflow_shapes_them(predictions: Any) -> None:
    """A Series has a dtype and an ndim like an array, but MLflow answers it as records."""
    import io

    from mlflow.pyfunc.scoring_server import predictions_to_json

    theirs = io.StringIO()
    predictions_to_json(predictions, theirs)
    assert _json.loads(_json.predictions_body(predictions)) == _json.loads(theirs.getvalue().encode())
