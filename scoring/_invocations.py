"""The MLflow scoring protocol's ``POST /invocations``: request body to model input.

JSON bodies carry exactly one of ``dataframe_split``, ``dataframe_records``, ``instances``,
``inputs``, plus optional ``params``; CSV bodies are a table with a header row. Parsing is
JSON or CSV only: nothing in a request is unpickled or evaluated.
"""

from __future__ import annotations

import gc
import io
import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from scoring import _json
from scoring._errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from scoring._schema import Columns, Enforcer, Raw, Records, RequestData, Rows

JSON = "application/json"
CSV = "text/csv"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_FORMAT_SET = frozenset(FORMATS)
_SPLIT_KEYS = frozenset({"columns", "data", "index"})
_content_types: dict[str, str] = {}
_collector_lock = threading.Lock()
_decoders = 0  # requests inside ``no_cycle_collection`` now
_collector_paused = False  # whether ``no_cycle_collection`` turned the collector off


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Keep Python's cyclic garbage collector off while request bodies are decoded into model
    input (a counter: the collector comes back when the last decoding request leaves).

    A large body becomes millions of fresh dicts and lists, and the collector then walks all
    of them again and again, each walk holding the GIL, so ``/ping`` waited for it (issue 11's
    C10) and the decode took twice as long. Decoded JSON holds no reference cycles: reference
    counting frees it either way. A collector someone else turned off stays off."""
    global _decoders, _collector_paused
    with _collector_lock:
        if _decoders == 0 and gc.isenabled():
            gc.disable()
            _collector_paused = True
        _decoders += 1
    try:
        yield
    finally:
        with _collector_lock:
            _decoders -= 1
            if _decoders == 0 and _collector_paused:
                _collector_paused = False
                gc.enable()


def media_type(header: str | None) -> str:
    """``JSON`` or ``CSV`` for a Content-Type header; raises ``UnsupportedMediaType``."""
    if header is None or not header.strip():
        raise UnsupportedMediaType("the request has no Content-Type header: send application/json or text/csv")
    cached = _content_types.get(header)
    if cached is not None:
        return cached
    mime, *parameters = (part.strip() for part in header.split(";"))
    mime = mime.lower()
    if mime not in (JSON, CSV):
        raise UnsupportedMediaType(f"unsupported Content-Type {header[:100]!r}: send application/json or text/csv")
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        key = key.strip().lower()
        value = value.strip().strip('"').lower()
        if key != "charset":
            raise UnsupportedMediaType(f"unsupported Content-Type parameter {key[:50]!r}")
        if value not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(f"only UTF-8 bodies are supported, got charset {value!r}")
    if len(_content_types) < 64:  # a handful of spellings in practice; bound it anyway
        _content_types[header] = mime
    return mime


def parse_json(body: bytes) -> tuple[RequestData, Any]:
    """The data and the ``params`` of a JSON request body."""
    doc = _json.loads(body)
    if not isinstance(doc, dict):
        raise InvalidInput(
            "expected a JSON object with one of the keys " + ", ".join(FORMATS) + f"; got a JSON {_kind(doc)}"
        )
    found = [k for k in doc if k in _FORMAT_SET]
    if len(found) != 1:
        shown = ", ".join(repr(k)[:40] for k in list(doc)[:10])
        raise InvalidInput(
            "the request must have exactly one of the keys " + ", ".join(FORMATS) + f"; it has: {shown or 'no keys'}"
        )
    key = found[0]
    value = doc[key]
    params = doc.get("params")
    if key == "dataframe_split":
        if not isinstance(value, dict):
            raise InvalidInput(f"'dataframe_split' must be an object, got a JSON {_kind(value)}")
        if "data" not in value or not value.keys() <= _SPLIT_KEYS:
            raise InvalidInput(
                "'dataframe_split' must have 'data' and optionally 'columns' and 'index'; "
                f"it has {sorted(str(k)[:40] for k in value)}"
            )
        return Rows(value.get("columns"), value["data"]), params
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise InvalidInput(f"'dataframe_records' must be a list of records, got a JSON {_kind(value)}")
        return Records(value), params
    if key == "instances" and isinstance(value, list) and value and isinstance(value[0], dict):
        return Records(value), params
    return Raw(value), params


def parse_csv(body: bytes, enforcer: Enforcer) -> RequestData:
    """A CSV body as columns, typed as MLflow reads it (``pandas.read_csv``)."""
    try:
        import pandas as pd
    except ImportError:
        raise InvalidInput("CSV input needs pandas in the model's environment") from None
    dtypes = None
    if enforcer.columns is not None:
        dtypes = {c.name: str for c in enforcer.columns if c.type in ("string", "binary")}
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=dtypes)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise InvalidInput(f"request body is not valid CSV: {first}") from None
    if enforcer.columns is None and enforcer.tensors is None:
        return Columns(dict(frame))  # {column: Series}, as the enforcer reads it: a frame is no Mapping
    columns: dict[Any, Any] = {}
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype == object:
            columns[name] = [None if isinstance(v, float) and math.isnan(v) else v for v in values.tolist()]
        else:
            columns[name] = values
    return Columns(columns)


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def read_body(environ: dict[str, Any], max_bytes: int) -> bytes:
    """The request body; raises ``PayloadTooLarge`` over ``max_bytes``."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        if not length.isdigit():
            raise InvalidInput("the Content-Length header is not a number")
        size = int(length)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"the request body is {size} bytes; the limit is {max_bytes} (ORCHESTRATE_MAX_REQUEST_BYTES)"
            )
        return bytes(stream.read(size))
    body = bytes(stream.read(max_bytes + 1))  # chunked, or no body at all
    if len(body) > max_bytes:
        raise PayloadTooLarge(
            f"the request body is larger than the limit of {max_bytes} bytes (ORCHESTRATE_MAX_REQUEST_BYTES)"
        )
    return body
