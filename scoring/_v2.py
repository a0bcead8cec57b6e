"""The Open Inference Protocol (KServe V2) REST routes, over the same model.

Requests carry named tensors ``{"name", "shape", "datatype", "data"}``; they become the
model's input as the signature says (named or unnamed tensors, or one tensor per column, or
one 2-D tensor whose columns are the signature's columns). Predictions go back as tensors:
one per DataFrame column or dict key, else one. Errors are ``{"error": ...}`` as the protocol
says, plus this server's ``error_code`` and ``message``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, request

from scoring import _json
from scoring._config import ServerConfig
from scoring._errors import InvalidInput, ModelError, NotFound, ScoringError, UnsupportedMediaType
from scoring._invocations import no_cycle_collection, read_body
from scoring._model import LoadedModel
from scoring._schema import Columns, ColumnSpec, Raw, RequestData, Rows, TensorSpec
from scoring._version import __version__

V2_DATATYPES: Mapping[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
_NUMPY_TO_V2 = {v: k for k, v in V2_DATATYPES.items() if k != "BYTES"}
_COLUMN_TO_V2 = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
# Request parameters that describe the request rather than being model params.
_PROTOCOL_PARAMETERS = frozenset({"content_type", "headers", "binary_data_output"})


def v2_error_body(exc: ScoringError) -> bytes:
    return _json.dumps({"error": exc.message, "error_code": exc.error_code, "message": exc.message})


def v2_error(exc: ScoringError) -> Response:
    return Response(v2_error_body(exc), status=exc.status, mimetype="application/json")


def _spec_metadata(spec: Any, default_name: str) -> dict[str, Any]:
    if isinstance(spec, TensorSpec):
        import numpy as np

        dtype = np.dtype(spec.dtype)
        datatype = _NUMPY_TO_V2.get(dtype.name, "BYTES")
        return {"name": spec.name or default_name, "datatype": datatype, "shape": list(spec.shape)}
    assert isinstance(spec, ColumnSpec)
    return {
        "name": spec.name if spec.name is not None else default_name,
        "datatype": _COLUMN_TO_V2.get(spec.type, "BYTES"),
        "shape": [-1],
    }


def model_metadata(name: str, model: LoadedModel) -> dict[str, Any]:
    """The ``GET /v2/models/{name}`` document, from the signature."""
    sig = model.signature
    outputs = sig.outputs or ()
    return {
        "name": name,
        "versions": [],
        "platform": "mlflow",
        "inputs": [_spec_metadata(s, f"input-{i}") for i, s in enumerate(sig.inputs or ())],
        "outputs": [
            _spec_metadata(s, "predictions" if len(outputs) == 1 else f"output-{i}") for i, s in enumerate(outputs)
        ],
    }


class V2Codec:
    """Tensors in, tensors out, for one model."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.enforcer = model.enforcer
        outputs = model.signature.outputs or ()
        self.output_name = outputs[0].name if len(outputs) == 1 and outputs[0].name else "predictions"

    def _tensor(self, i: int, item: Any) -> tuple[str, Any]:
        import numpy as np

        if not isinstance(item, dict):
            raise InvalidInput(f"inputs[{i}] must be an object with name, shape, datatype, data")
        name = item.get("name")
        shape = item.get("shape")
        datatype = item.get("datatype")
        if not isinstance(name, str):
            raise InvalidInput(f"inputs[{i}] needs a string 'name'")
        label = f"input '{name[:60]}'"
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise InvalidInput(f"{label}: 'shape' must be a list of non-negative integers")
        if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
            raise InvalidInput(
                f"{label}: unknown datatype {str(datatype)[:20]!r}; use one of {', '.join(V2_DATATYPES)}"
            )
        if "data" not in item:
            raise InvalidInput(f"{label}: 'data' is missing")
        data = item["data"]
        try:
            if datatype == "BYTES":
                arr = np.asarray(data, dtype=object)
                if any(not isinstance(v, str) for v in arr.ravel().tolist()):
                    raise ValueError
            else:
                raw = np.asarray(data)
                if raw.dtype == object or raw.dtype.kind not in "biuf":
                    raise ValueError
                dtype = np.dtype(V2_DATATYPES[datatype])
                if dtype.kind in "iu" and raw.dtype.kind == "f":
                    raise ValueError
                if dtype.kind == "b" and raw.dtype.kind != "b":
                    raise ValueError
                arr = raw.astype(dtype, copy=False)
        except (ValueError, TypeError, OverflowError):
            raise InvalidInput(f"{label}: 'data' must be {datatype} values") from None
        size = 1
        for d in shape:
            size *= d
        if arr.size != size:
            raise InvalidInput(f"{label}: shape {shape} needs {size} values, got {arr.size}")
        return name, arr.reshape(shape)

    def request_data(self, doc: Any) -> tuple[RequestData, dict[str, Any] | None, list[str] | None]:
        if not isinstance(doc, dict):
            raise InvalidInput("the inference request must be a JSON object")
        inputs = doc.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInput("the inference request needs a non-empty 'inputs' list")
        tensors = dict(self._tensor(i, item) for i, item in enumerate(inputs))
        parameters = doc.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be an object")
        params = {k: v for k, v in (parameters or {}).items() if k not in _PROTOCOL_PARAMETERS}
        wanted = None
        if doc.get("outputs") is not None:
            outputs = doc["outputs"]
            if not isinstance(outputs, list) or not all(
                isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
            ):
                raise InvalidInput("'outputs' must be a list of objects with a 'name'")
            wanted = [o["name"] for o in outputs]
        return self._model_data(tensors), params or None, wanted

    def _model_data(self, tensors: dict[str, Any]) -> RequestData:
        enforcer = self.enforcer
        if enforcer.tensors is not None:
            specs = enforcer.tensors
            if len(specs) == 1 and (specs[0].name is None or specs[0].name not in tensors):
                if len(tensors) != 1:
                    raise InvalidInput("this model takes one input tensor")
                return Raw(next(iter(tensors.values())))
            return Raw(tensors)
        if enforcer.columns is not None:
            names = [c.name for c in enforcer.columns]
            if len(tensors) == 1:
                ((name, arr),) = tensors.items()
                if name not in names and arr.ndim == 2:
                    return Rows(None, arr.tolist())
            columns = {}
            for name, arr in tensors.items():
                if arr.ndim == 2 and arr.shape[1] == 1:
                    arr = arr[:, 0]
                if arr.ndim != 1:
                    raise InvalidInput(
                        f"input '{name[:60]}': a column needs shape [n] or [n, 1], got {list(arr.shape)}"
                    )
                columns[name] = arr
            return Columns(columns)
        if len(tensors) == 1:
            return Raw(next(iter(tensors.values())))
        return Columns(tensors)

    def outputs(self, predictions: Any, wanted: list[str] | None) -> list[dict[str, Any]]:
        named = self._named_outputs(predictions)
        if wanted is not None:
            unknown = [w for w in wanted if w not in named]
            if unknown:
                raise InvalidInput(f"unknown output {unknown[0][:60]!r}; the model has {', '.join(named)}")
            named = {w: named[w] for w in wanted}
        return [self._output_tensor(name, value) for name, value in named.items()]

    def _named_outputs(self, predictions: Any) -> dict[str, Any]:
        kind = type(predictions).__name__
        module = type(predictions).__module__
        if module.startswith("pandas") and kind == "DataFrame":
            return {str(c): predictions[c].to_numpy() for c in predictions.columns}
        if module.startswith("pandas") and kind == "Series":
            return {str(predictions.name or self.output_name): predictions.to_numpy()}
        if isinstance(predictions, dict):
            return {str(k): v for k, v in predictions.items()}
        return {self.output_name: predictions}

    def _output_tensor(self, name: str, value: Any) -> dict[str, Any]:
        import numpy as np

        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype.kind in "biuf":
            datatype = _NUMPY_TO_V2.get(arr.dtype.name, "FP64")
            data = arr.ravel().tolist()
        else:
            datatype = "BYTES"
            data = (
                _json.jsonable_predictions(arr.ravel())
                if arr.dtype.kind in "MmS"
                else [v if isinstance(v, str) or v is None else str(v) for v in arr.ravel().tolist()]
            )
        return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}


def register_v2_routes(app: Flask, cfg: ServerConfig, model: LoadedModel, scorer: Any, runner: Any) -> None:
    """Add the V2 routes to ``app``."""
    name = cfg.served_model_name
    codec = V2Codec(model)
    server_body = _json.dumps({"name": "orchestrate-scoring", "version": __version__, "extensions": []})
    metadata_body = _json.dumps(model_metadata(name, model))
    live_body = _json.dumps({"live": True})
    ready_body = _json.dumps({"ready": True})
    model_ready_body = _json.dumps({"name": name, "ready": True})
    max_bytes = cfg.max_request_bytes

    def ok(body: bytes) -> Response:
        return Response(body, mimetype="application/json")

    def check_name(requested: str) -> None:
        if requested != name:
            raise NotFound(f"model '{requested[:100]}' is not served here; this server serves '{name}'")

    @app.get("/v2")
    def v2_server() -> Response:
        return ok(server_body)

    @app.get("/v2/health/live")
    def v2_live() -> Response:
        return ok(live_body)

    @app.get("/v2/health/ready")
    def v2_ready() -> Response:
        return ok(ready_body)

    @app.get("/v2/models/<path:model_name>/ready")
    def v2_model_ready(model_name: str) -> Response:
        try:
            check_name(model_name)
        except ScoringError as exc:
            return v2_error(exc)
        return ok(model_ready_body)

    @app.get("/v2/models/<path:model_name>")
    def v2_model(model_name: str) -> Response:
        try:
            check_name(model_name)
        except ScoringError as exc:
            return v2_error(exc)
        return ok(metadata_body)

    def infer(body: bytes, request_id: str) -> bytes:
        with no_cycle_collection():
            doc = _json.loads(body)
            data, params, wanted = codec.request_data(doc)
            enforced = codec.enforcer.enforce(data)
            given_id = doc.get("id")
            del doc, data  # freed now, by reference counting, not walked by the collector later
        predictions = scorer.predict(enforced.data, codec.enforcer.params(params))
        try:
            outputs = codec.outputs(predictions, wanted)
        except InvalidInput:
            raise
        except (TypeError, ValueError) as exc:
            raise ModelError(f"the model's output cannot be written as tensors: {exc}") from None
        answer: dict[str, Any] = {"model_name": name, "outputs": outputs}
        answer["id"] = given_id if isinstance(given_id, str) else request_id
        return _json.dumps(answer)

    @app.post("/v2/models/<path:model_name>/infer")
    def v2_infer(model_name: str) -> Response:
        try:
            check_name(model_name)
            content_type = request.environ.get("CONTENT_TYPE") or "application/json"
            if content_type.split(";")[0].strip().lower() != "application/json":
                raise UnsupportedMediaType(f"unsupported Content-Type {content_type[:100]!r}: send application/json")
            body = read_body(request.environ, max_bytes)
            out = runner.run(infer, body, request.environ["scoring.request_id"])
        except ScoringError as exc:
            return v2_error(exc)
        return ok(out)
