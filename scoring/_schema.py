"""Model signatures: read from ``MLmodel`` and enforced on request data.

A ``Signature`` is parsed once at load. ``Signature.enforcer()`` builds an ``Enforcer`` whose
converters are precomputed, so a request only pays for converting its own values. Errors are
``InvalidInput`` naming the column, tensor or parameter and the expected type, and quoting at
most a short excerpt of the offending value, never the request.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scoring._errors import InvalidInput

# MLflow's simple column types and the numpy dtype each becomes.
COLUMN_DTYPES: Mapping[str, str] = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "object",
    "binary": "object",
    "datetime": "datetime64[ns]",
}
_NUMERIC = ("double", "float", "long", "integer")


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    name: str | None
    type: str  # an MLflow type name; "array", "object", "map", "any" are complex
    required: bool = True

    @property
    def simple(self) -> bool:
        return self.type in COLUMN_DTYPES

    def describe(self) -> str:
        return f"'{self.name}' ({self.type})" if self.name is not None else f"({self.type})"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str | None
    dtype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        label = f"input '{self.name}'" if self.name is not None else "the input tensor"
        return f"{label} (dtype {self.dtype}, shape {list(self.shape)})"


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any
    shape: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class Signature:
    """The parsed ``signature`` of an MLmodel file; empty lists when absent."""

    inputs: tuple[ColumnSpec, ...] | tuple[TensorSpec, ...] | None
    outputs: tuple[ColumnSpec, ...] | tuple[TensorSpec, ...] | None
    params: tuple[ParamSpec, ...] | None
    from_type_hint: bool = False

    @property
    def is_tensor(self) -> bool:
        return bool(self.inputs) and isinstance(self.inputs[0], TensorSpec)  # type: ignore[index]

    @property
    def enforceable(self) -> bool:
        """True when this module can enforce the whole input schema itself."""
        if self.from_type_hint or not self.inputs:
            return False
        if self.is_tensor:
            return True
        columns: tuple[ColumnSpec, ...] = self.inputs  # type: ignore[assignment]
        return all(c.simple and c.name is not None for c in columns)


def _parse_specs(raw: Any) -> tuple[ColumnSpec, ...] | tuple[TensorSpec, ...] | None:
    if raw in (None, "", "null"):
        return None
    items = json.loads(raw) if isinstance(raw, str) else raw
    if not items:
        return None
    if all(item.get("type") == "tensor" for item in items):
        return tuple(
            TensorSpec(
                name=item.get("name"),
                dtype=str(item["tensor-spec"]["dtype"]),
                shape=tuple(int(d) for d in item["tensor-spec"]["shape"]),
            )
            for item in items
        )
    return tuple(
        ColumnSpec(
            name=item.get("name"),
            type=str(item.get("type", "any")),
            required=bool(item.get("required", True)),
        )
        for item in items
    )


def _parse_params(raw: Any) -> tuple[ParamSpec, ...] | None:
    if raw in (None, "", "null"):
        return None
    items = json.loads(raw) if isinstance(raw, str) else raw
    return tuple(
        ParamSpec(
            name=str(item["name"]),
            type=str(item["type"]),
            default=item.get("default"),
            shape=tuple(item["shape"]) if item.get("shape") is not None else None,
        )
        for item in items
    )


def parse_signature(mlmodel: Mapping[str, Any]) -> Signature:
    """The signature of a parsed MLmodel document."""
    raw = mlmodel.get("signature") or {}
    return Signature(
        inputs=_parse_specs(raw.get("inputs")),
        outputs=_parse_specs(raw.get("outputs")),
        params=_parse_params(raw.get("params")),
        from_type_hint=bool(mlmodel.get("is_signature_from_type_hint")) or bool(mlmodel.get("type_hint_from_example")),
    )


_SLICE = 32768  # rows per numpy call in _rows_array


def _rows_array(np: Any, rows: list[Any], dtype: Any, width: int) -> Any:
    """``np.asarray(rows, dtype)`` when that is a 2-D array of ``width`` columns, else None.

    Made ``_SLICE`` rows at a time: one numpy call over 800,000 rows holds the GIL for about
    0.2 s, and the server's other threads (``/ping`` among them) wait for it; between slices
    they run."""
    parts = []
    for start in range(0, len(rows), _SLICE):
        try:
            part = np.asarray(rows[start : start + _SLICE], dtype=dtype)
        except (ValueError, TypeError, OverflowError):
            return None
        if part.ndim != 2 or part.shape[1] != width:
            return None
        parts.append(part)
    if len(parts) <= 1:
        return parts[0] if parts else None
    try:
        return np.concatenate(parts)
    except (ValueError, TypeError):  # slices numpy typed apart (text and numbers, dtype=None)
        return None


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Request data, shaped by the request format before the signature applies to it.
@dataclasses.dataclass
class Rows:
    """Row-major values with optional column names (dataframe_split, lists of lists)."""

    columns: list[Any] | None
    rows: Any


@dataclasses.dataclass
class Records:
    """A list of ``{column: value}`` (dataframe_records, instances as objects)."""

    records: list[Any]


@dataclasses.dataclass
class Columns:
    """``{column: values}`` with one sequence per column (inputs as an object, CSV)."""

    columns: Mapping[str, Any]


@dataclasses.dataclass
class Raw:
    """A bare value (a tensor as nested lists), for tensor signatures or no signature."""

    value: Any


RequestData = Rows | Records | Columns | Raw


@dataclasses.dataclass
class Enforced:
    """What the model gets, plus the request's columns the signature does not know."""

    data: Any
    ignored: list[str]


class Enforcer:
    """Turns request data into model input according to a signature, or as MLflow does
    without one. Build once per model: ``Enforcer(signature)``."""

    def __init__(self, signature: Signature) -> None:
        import numpy as np

        self._np = np
        self.signature = signature
        self._pd: Any = None
        # Set by the model when it takes a 2-D array in signature column order as it takes
        # the DataFrame (see LoadedModel._enable_array_input); only with a uniform dtype.
        self.array_input = False
        self._uniform_dtype: Any = None
        self._uniform_float = False
        inputs = signature.inputs if signature.enforceable else None
        self.columns: tuple[ColumnSpec, ...] | None = None
        self.tensors: tuple[TensorSpec, ...] | None = None
        if inputs and isinstance(inputs[0], TensorSpec):
            self.tensors = inputs
        elif inputs:
            columns: tuple[ColumnSpec, ...] = inputs  # type: ignore[assignment]
            self.columns = columns
            import pandas as pd

            self._pd = pd
            self._names = [c.name for c in columns]
            self._converters: dict[Any, Callable[[Any], Any]] = {c.name: self._column_converter(c) for c in columns}
            types = {c.type for c in columns}
            only = next(iter(types)) if len(types) == 1 else None
            # Every column numeric of one type: rows convert in one numpy call.
            self._uniform_dtype = np.dtype(COLUMN_DTYPES[only]) if only in _NUMERIC else None
            self._uniform_int = self._uniform_dtype is not None and self._uniform_dtype.kind == "i"
            # Every column a double: records convert in one numpy call too (_uniform_records).
            self._uniform_float = self._uniform_dtype == np.float64

    # ---- column signatures -------------------------------------------------------------

    def _column_converter(self, spec: ColumnSpec) -> Callable[[Any], Any]:
        np = self._np
        dtype = np.dtype(COLUMN_DTYPES[spec.type])

        def fail(detail: str) -> InvalidInput:
            return InvalidInput(f"column {spec.describe()}: {detail}")

        if spec.type in ("double", "float"):

            def convert(values: Any) -> Any:
                try:
                    arr = np.asarray(values)
                    if arr.dtype.kind in "fiu":
                        return arr.astype(dtype, copy=False)
                    return np.asarray(values, dtype=dtype)
                except (ValueError, TypeError):
                    bad = _first_bad(values, lambda v: _is_number(v) or v is None)
                    raise fail(f"expected a number, got {_excerpt(bad)}") from None

        elif spec.type in ("long", "integer"):
            info = np.iinfo(dtype)

            def convert(values: Any) -> Any:
                arr = np.asarray(values)
                if arr.dtype.kind in "iu":
                    if arr.size and (arr.min() < info.min or arr.max() > info.max):
                        raise fail(f"value out of range for {spec.type}")
                    return arr.astype(dtype, copy=False)
                if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.floor(arr)):
                    return arr.astype(dtype)
                if arr.dtype.kind in "OUS":
                    # CSV text or mixed values: each must be an integer or integral text.
                    out = np.empty(len(arr), dtype=dtype)
                    for i, v in enumerate(arr.tolist()):
                        iv = _as_int(v)
                        if iv is None:
                            raise fail(f"expected an integer at row {i}, got {_excerpt(v)}")
                        out[i] = iv
                    return out
                bad = _first_bad(arr.tolist(), lambda v: _as_int(v) is not None)
                raise fail(f"expected an integer, got {_excerpt(bad)}")

        elif spec.type == "boolean":

            def convert(values: Any) -> Any:
                arr = np.asarray(values)
                if arr.dtype.kind == "b":
                    return arr
                out = []
                for i, v in enumerate(arr.tolist()):
                    if isinstance(v, bool):
                        out.append(v)
                    elif isinstance(v, str) and v.lower() in ("true", "false"):
                        out.append(v.lower() == "true")
                    else:
                        raise fail(f"expected true or false at row {i}, got {_excerpt(v)}")
                return np.asarray(out, dtype=bool)

        elif spec.type == "string":

            def convert(values: Any) -> Any:
                vals = values.tolist() if hasattr(values, "tolist") else list(values)
                for i, v in enumerate(vals):
                    if not (isinstance(v, str) or v is None):
                        raise fail(f"expected a string at row {i}, got {_excerpt(v)}")
                arr = np.empty(len(vals), dtype=object)
                arr[:] = vals
                return arr

        elif spec.type == "binary":

            def convert(values: Any) -> Any:
                vals = values.tolist() if hasattr(values, "tolist") else list(values)
                out = np.empty(len(vals), dtype=object)
                for i, v in enumerate(vals):
                    if isinstance(v, bytes):
                        out[i] = v
                    elif isinstance(v, str):
                        try:
                            out[i] = base64.b64decode(v, validate=True)
                        except ValueError:
                            raise fail(f"expected base64 text at row {i}") from None
                    else:
                        raise fail(f"expected base64 text at row {i}, got {_excerpt(v)}")
                return out

        else:  # datetime
            pd = self._pd

            def convert(values: Any) -> Any:
                try:
                    return pd.to_datetime(values).to_numpy(dtype="datetime64[ns]")
                except (ValueError, TypeError, OverflowError):
                    raise fail("expected an ISO 8601 date or time") from None

        return convert

    def _frame(self, columns: dict[Any, Any]) -> Any:
        if self.array_input and len(columns) == len(self._names):
            return self._np.column_stack([columns[n] for n in self._names])
        return self._pd.DataFrame(columns, copy=False)

    def _missing(self, present: Any) -> None:
        missing = [c for c in self.columns or () if c.required and c.name not in present]
        if missing:
            names = ", ".join(c.describe() for c in missing)
            raise InvalidInput(f"missing required column{'s' if len(missing) > 1 else ''}: {names}")

    def _from_columns(self, given: Mapping[Any, Any]) -> Enforced:
        self._missing(given)
        out: dict[Any, Any] = {}
        length = None
        for name in self._names:
            if name not in given:
                continue
            values = given[name]
            if not isinstance(values, (list, tuple)) and not hasattr(values, "dtype"):
                values = [values]
            arr = self._converters[name](values)
            if getattr(arr, "ndim", 1) != 1:
                raise InvalidInput(f"column '{name}': expected one value per row")
            if length is None:
                length = len(arr)
            elif len(arr) != length:
                raise InvalidInput(f"column '{name}' has {len(arr)} values, other columns have {length}")
            out[name] = arr
        ignored = [str(k) for k in given if k not in self._converters]
        return Enforced(self._frame(out), ignored)

    def _from_rows(self, columns: list[Any] | None, rows: Any) -> Enforced:
        np = self._np
        if not isinstance(rows, list):
            raise InvalidInput("'data' must be a list of rows")
        if columns is None:
            # Unnamed values match the signature's columns by position.
            columns = list(self._names)
        elif not isinstance(columns, list) or not all(isinstance(c, (str, int, float)) or c is None for c in columns):
            raise InvalidInput("'columns' must be a list of column names")
        width = len(columns)
        if self._uniform_dtype is not None and set(self._names) <= set(columns):
            arr = _rows_array(np, rows, None if self._uniform_int else self._uniform_dtype, width)
            if arr is not None and (not self._uniform_int or arr.dtype.kind in "iu"):
                index = [columns.index(n) for n in self._names]
                if index != list(range(width)):
                    arr = arr[:, index]
                arr = arr.astype(self._uniform_dtype, copy=False)
                ignored = [str(c) for c in columns if c not in self._converters]
                if self.array_input:
                    return Enforced(arr, ignored)
                frame = self._pd.DataFrame(arr, columns=self._names, copy=False)
                return Enforced(frame, ignored)
            if len(rows) == 0:
                return self._from_columns({n: [] for n in columns})
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = len(row) if isinstance(row, list) else "a non-list value"
                raise InvalidInput(f"row {i} has {got} values, expected {width} ({_names(columns)})")
        transposed = list(zip(*rows)) if rows else [() for _ in columns]
        return self._from_columns(dict(zip(columns, transposed)))

    def _from_records(self, records: list[Any]) -> Enforced:
        if not isinstance(records, list):
            raise InvalidInput("expected a list of records (objects)")
        keys: dict[Any, None] = {}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise InvalidInput(f"record {i} is not an object")
            keys.update(dict.fromkeys(rec))
        if records and self._uniform_float and keys.keys() >= self._converters.keys():
            enforced = self._uniform_records(records, keys)
            if enforced is not None:
                return enforced
        if records and all(isinstance(rec, dict) for rec in records):
            given = {k: [rec.get(k) for rec in records] for k in keys}
        else:
            given = {n: [] for n in self._names}
        return self._from_columns(given)

    def _uniform_records(self, records: list[Any], keys: Mapping[Any, None]) -> Enforced | None:
        """Records of a signature whose columns are all doubles, as one 2-D array made in one
        numpy call: a one-block DataFrame (or the array itself, with ``array_input``).

        Column by column, 13 columns cost 13 conversions and a 13-block DataFrame, which
        scikit-learn then copies into one array again. The values convert exactly as the
        column path converts them (numbers, bools, numeric text, None as NaN); None means some
        record lacks a column or holds a value numpy refuses, and the column path then runs
        and names it."""
        names = self._names
        try:
            rows = [[rec[n] for n in names] for rec in records]
        except (KeyError, TypeError):
            return None
        arr = _rows_array(self._np, rows, self._np.float64, len(names))
        if arr is None:
            return None
        ignored = [str(k) for k in keys if k not in self._converters]
        if self.array_input:
            return Enforced(arr, ignored)
        return Enforced(self._pd.DataFrame(arr, columns=names, copy=False), ignored)

    # ---- tensor signatures -------------------------------------------------------------

    def _tensor(self, spec: TensorSpec, value: Any) -> Any:
        np = self._np
        dtype = np.dtype(spec.dtype)
        try:
            arr = np.asarray(value)
            if arr.dtype == object:
                raise ValueError
            if dtype.kind in "iu" and arr.dtype.kind == "f" and arr.size and not np.all(arr == np.floor(arr)):
                raise InvalidInput(f"{spec.describe()}: expected integers")
            if dtype.kind in "iuf" and arr.dtype.kind not in "iufb":
                raise ValueError
            arr = arr.astype(dtype, copy=False)
        except (ValueError, TypeError):
            raise InvalidInput(f"{spec.describe()}: expected a rectangular array of {spec.dtype}") from None
        shape = spec.shape
        if arr.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, arr.shape)):
            raise InvalidInput(f"{spec.describe()}: got shape {list(arr.shape)}")
        return arr

    def _tensors(self, data: RequestData) -> Enforced:
        specs = self.tensors or ()
        if len(specs) == 1 and specs[0].name is None or (len(specs) == 1 and isinstance(data, (Raw, Rows))):
            spec = specs[0]
            if isinstance(data, Raw):
                value = data.value
                if isinstance(value, dict) and spec.name in value and len(value) == 1:
                    value = value[spec.name]
            elif isinstance(data, Rows):
                value = data.rows
            elif isinstance(data, Records):
                value = [list(r.values()) if isinstance(r, dict) else r for r in data.records]
            else:
                cols = list(data.columns.values())
                if len(cols) == 1 and len(spec.shape) == 1:
                    value = cols[0]
                else:
                    np = self._np
                    value = np.column_stack([np.asarray(c) for c in cols]) if cols else []
            return Enforced(self._tensor(spec, value), [])
        if isinstance(data, Records):
            for i, rec in enumerate(data.records):
                if not isinstance(rec, dict):
                    raise InvalidInput(f"instance {i} is not an object of named inputs")
            given: Mapping[Any, Any] = {
                s.name: [rec[s.name] for rec in data.records]
                for s in specs
                if all(s.name in rec for rec in data.records)
            }
            extra = {k for rec in data.records for k in rec} - {s.name for s in specs}
        elif isinstance(data, (Columns, Raw)) and isinstance(
            getattr(data, "columns", getattr(data, "value", None)), dict
        ):
            given = data.columns if isinstance(data, Columns) else data.value
            extra = set(given) - {s.name for s in specs}
        else:
            raise InvalidInput(
                f"this model takes named inputs: send an object {{name: values}} for {_names([s.name for s in specs])}"
            )
        missing = [s for s in specs if s.name not in given]
        if missing:
            raise InvalidInput("missing input " + ", ".join(s.describe() for s in missing))
        out = {s.name: self._tensor(s, given[s.name]) for s in specs}
        return Enforced(out, sorted(str(e) for e in extra))

    # ---- without a (usable) signature: as MLflow parses ----------------------------------

    def _as_mlflow(self, data: RequestData) -> Enforced:
        np = self._np
        if isinstance(data, (Rows, Records)):
            import pandas as pd

            if isinstance(data, Rows) and not (
                data.columns is None
                or isinstance(data.columns, list)
                and all(isinstance(c, (str, int, float)) or c is None for c in data.columns)
            ):
                raise InvalidInput("'columns' must be a list of column names")
            if isinstance(data, Rows) and isinstance(data.rows, list):
                # pandas pads ragged rows with NaN (deprecated; it will raise): refuse them now.
                widths = {len(r) for r in data.rows if isinstance(r, (list, dict))}
                if len(widths) > 1:
                    raise InvalidInput(f"rows have different lengths: {sorted(widths)[:5]}")
            try:
                if isinstance(data, Rows):
                    return Enforced(pd.DataFrame(data.rows, columns=data.columns), [])
                return Enforced(pd.DataFrame(data.records), [])
            except (ValueError, TypeError, LookupError, pd.errors.InvalidIndexError) as exc:
                # pandas on arbitrary JSON: these are its ways of saying "not a table"
                first = (str(exc).splitlines() or [""])[0][:200]
                raise InvalidInput(f"not a valid dataframe: {first}") from None
        if isinstance(data, Columns):
            import pandas as pd

            return Enforced(pd.DataFrame(dict(data.columns)), [])
        value = data.value
        try:
            if isinstance(value, dict):
                return Enforced({k: np.asarray(v) for k, v in value.items()}, [])
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                keys = list(value[0])
                return Enforced({k: np.asarray([v.get(k) for v in value]) for k in keys}, [])
            return Enforced(np.asarray(value), [])
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"not a valid tensor: {exc}") from None

    def enforce(self, data: RequestData) -> Enforced:
        """Model input for ``data``; raises ``InvalidInput`` naming what does not fit."""
        if self.columns is not None:
            if isinstance(data, Rows):
                return self._from_rows(data.columns, data.rows)
            if isinstance(data, Records):
                return self._from_records(data.records)
            if isinstance(data, Columns):
                return self._from_columns(data.columns)
            value = data.value
            if isinstance(value, dict):
                return self._from_columns(value)
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                return self._from_records(value)
            if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
                return self._from_rows(None, value)
            if isinstance(value, list) and len(self._names) == 1:
                return self._from_columns({self._names[0]: value})
            raise InvalidInput(f"expected rows, records or columns for the model's columns {_names(self._names)}")
        if self.tensors is not None:
            return self._tensors(data)
        return self._as_mlflow(data)

    # ---- params ------------------------------------------------------------------------

    def params(self, given: Any) -> dict[str, Any] | None:
        """``params`` converted by the params schema with defaults filled, as MLflow does:
        unknown names are ignored, and without a schema params are dropped."""
        specs = self.signature.params
        if given is not None and not isinstance(given, dict):
            raise InvalidInput("'params' must be an object")
        if not specs:
            return None
        given = given or {}
        out: dict[str, Any] = {}
        for spec in specs:
            if spec.name not in given:
                out[spec.name] = spec.default
                continue
            out[spec.name] = _param_value(spec, given[spec.name])
        return out


def _param_value(spec: ParamSpec, value: Any) -> Any:
    def one(v: Any) -> Any:
        t = spec.type
        if t in ("long", "integer") and isinstance(v, int) and not isinstance(v, bool):
            return v
        if t in ("double", "float") and _is_number(v):
            return float(v)
        if t == "boolean" and isinstance(v, bool):
            return v
        if t == "string" and isinstance(v, str):
            return v
        if t == "datetime" and isinstance(v, str):
            import datetime

            try:
                return datetime.datetime.fromisoformat(v)
            except ValueError:
                pass
        if t == "binary" and isinstance(v, str):
            return v
        raise InvalidInput(f"param '{spec.name}': expected {t}{' list' if spec.shape else ''}, got {_excerpt(v)}")

    if spec.shape:
        if not isinstance(value, list):
            raise InvalidInput(f"param '{spec.name}': expected a list of {spec.type}")
        return [one(v) for v in value]
    return one(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return None
    if hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu":
        return int(v)
    return None


def _first_bad(values: Sequence[Any] | Any, ok: Callable[[Any], bool]) -> Any:
    vals = values.tolist() if hasattr(values, "tolist") else values
    for v in vals:
        if isinstance(v, list):
            return v
        if not ok(v):
            return v
    return values


def _names(names: Sequence[Any]) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:10])
    return shown + (", ..." if len(names) > 10 else "")
