"""JSON in and out: request bodies, and predictions serialised as MLflow serves them.

orjson is used when importable (it is not a requirement); the standard library otherwise.
Predictions follow MLflow's ``_get_jsonable_obj``: arrays become lists, a DataFrame becomes
records, a Series becomes records of its one column. Unlike MLflow, NaN and infinities become
``null`` (MLflow writes the invalid JSON token ``NaN``) and datetime64 arrays become ISO text
(MLflow writes integers).
"""

from __future__ import annotations

import base64
import datetime
import json
import math
from typing import Any

from scoring._errors import InvalidInput

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]


def loads(body: bytes) -> Any:
    """Parse a request body; raises ``InvalidInput`` with the parser's position."""
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError:
            pass  # the standard library's message is clearer; it also reads NaN like MLflow
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise InvalidInput("request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("request body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer past Python's 4,300-digit conversion limit
        raise InvalidInput(f"request body holds a value that cannot be read: {exc}") from None


def _default(o: Any) -> Any:
    if hasattr(o, "dtype") and hasattr(o, "tolist"):  # numpy arrays and scalars
        if getattr(o, "ndim", 0):
            return _array_jsonable(o)
        if o.dtype.kind == "M":
            import numpy as np

            return str(np.datetime_as_string(o))
        return o.item() if hasattr(o, "item") else o.tolist()
    if isinstance(o, (bytes, bytearray)):
        return base64.b64encode(bytes(o)).decode("ascii")
    if isinstance(o, (datetime.datetime, datetime.date, datetime.time)):
        return o.isoformat()
    if hasattr(o, "isoformat"):  # pandas Timestamp
        return o.isoformat()
    if hasattr(o, "to_dict") and hasattr(o, "columns"):
        return o.to_dict(orient="records")
    if hasattr(o, "model_dump"):  # pydantic models, as MLflow's encoder does
        return o.model_dump()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if o is getattr(o, "NA", None) or type(o).__name__ in ("NAType", "NaTType"):
        return None
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _array_jsonable(arr: Any) -> Any:
    kind = arr.dtype.kind
    if kind == "M":
        import numpy as np

        return np.datetime_as_string(arr).tolist()
    if kind == "m":
        return arr.astype("timedelta64[ns]").astype("int64").tolist()
    if kind == "S":
        return [base64.b64encode(x).decode("ascii") for x in arr.ravel().tolist()]
    return arr.tolist()


def jsonable_predictions(predictions: Any) -> Any:
    """Predictions as MLflow's ``_get_jsonable_obj(..., pandas_orient="records")`` makes them."""
    # pandas first: a Series also has a dtype and an ndim, but MLflow answers it as records
    # (`[{"0": 1.5}, ...]`, statsmodels' predictions), not as a flat list.
    module = type(predictions).__module__
    if module.startswith("pandas"):
        name = type(predictions).__name__
        if name == "DataFrame":
            return predictions.to_dict(orient="records")
        if name == "Series":
            return predictions.to_frame().to_dict(orient="records")
    if hasattr(predictions, "dtype") and hasattr(predictions, "ndim") and predictions.ndim:
        return _array_jsonable(predictions)
    return predictions


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(obj: Any) -> bytes:
    """``obj`` as compact JSON bytes; NaN and infinities as ``null``."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj, default=_default, option=_orjson.OPT_NON_STR_KEYS | _orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            pass  # e.g. non-contiguous arrays: the standard path below handles them
    try:
        text = json.dumps(obj, default=_default, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(
            _finite(json.loads(json.dumps(obj, default=_default))),
            allow_nan=False,
            separators=(",", ":"),
        )
    return text.encode()


def predictions_body(predictions: Any) -> bytes:
    """The ``{"predictions": ...}`` response body."""
    return b'{"predictions":' + dumps(jsonable_predictions(predictions)) + b"}"
