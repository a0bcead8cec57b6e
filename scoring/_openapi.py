"""The server's OpenAPI 3.0 document, for both protocols, with the model's columns."""

from __future__ import annotations

from typing import Any

from scoring._config import ServerConfig
from scoring._model import LoadedModel
from scoring._schema import ColumnSpec
from scoring._version import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_V2_ERROR = {"$ref": "#/components/schemas/V2Error"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: int, v2: bool = False) -> dict[str, Any]:
    texts = {
        400: "The input does not fit the protocol or the model's signature.",
        404: "No such model.",
        413: "The body is larger than the limit.",
        415: "Unsupported Content-Type.",
        500: "The model raised while predicting.",
        503: "Not ready.",
        504: "The request took longer than the limit.",
    }
    return {str(c): {"description": texts[c], "content": _json_content(_V2_ERROR if v2 else _ERROR)} for c in codes}


def _value_schema(spec: ColumnSpec) -> dict[str, Any]:
    return {
        "double": {"type": "number"},
        "float": {"type": "number"},
        "long": {"type": "integer"},
        "integer": {"type": "integer"},
        "boolean": {"type": "boolean"},
        "string": {"type": "string"},
        "binary": {"type": "string", "format": "byte"},
        "datetime": {"type": "string", "format": "date-time"},
    }.get(spec.type, {})


def openapi_document(cfg: ServerConfig, model: LoadedModel) -> dict[str, Any]:
    """The document ``GET /openapi.json`` serves."""
    name = cfg.served_model_name
    columns = [s for s in (model.signature.inputs or ()) if isinstance(s, ColumnSpec) and s.name]
    record: dict[str, Any] = {"type": "object"}
    if columns:
        record["properties"] = {c.name: _value_schema(c) for c in columns}
    ping = {
        "200": {
            "description": "The model is loaded.",
            "content": {"application/json": {"schema": {"type": "string"}}},
        }
    }
    json_ok = {"description": "OK", "content": _json_content({"type": "object"})}
    invocation_body = {
        "type": "object",
        "description": "Exactly one of dataframe_split, dataframe_records, instances, inputs; optionally params.",
        "properties": {
            "dataframe_split": {
                "type": "object",
                "properties": {
                    "columns": {"type": "array", "items": {}},
                    "data": {"type": "array", "items": {"type": "array", "items": {}}},
                    "index": {"type": "array", "items": {}},
                },
                "required": ["data"],
            },
            "dataframe_records": {"type": "array", "items": record},
            "instances": {"type": "array", "items": {}},
            "inputs": {},
            "params": {"type": "object"},
        },
    }
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {
                "type": "string",
                "enum": [
                    "BOOL",
                    "UINT8",
                    "UINT16",
                    "UINT32",
                    "UINT64",
                    "INT8",
                    "INT16",
                    "INT32",
                    "INT64",
                    "FP16",
                    "FP32",
                    "FP64",
                    "BYTES",
                ],
            },
            "parameters": {"type": "object"},
            "data": {},
        },
    }
    model_path = {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "example": name,
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"orchestrate scoring server: {name}",
            "version": __version__,
            "description": "MLflow scoring protocol and Open Inference Protocol (V2) for one model.",
        },
        "paths": {
            "/ping": {"get": {"summary": "Liveness and readiness (MLflow, SageMaker).", "responses": ping}},
            "/health": {"get": {"summary": "Same as /ping.", "responses": ping}},
            "/version": {"get": {"summary": "Server and model versions.", "responses": {"200": json_ok}}},
            "/invocations": {
                "post": {
                    "summary": "Predict (MLflow scoring protocol).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": invocation_body},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Predictions.",
                            "content": _json_content(
                                {
                                    "type": "object",
                                    "required": ["predictions"],
                                    "properties": {"predictions": {}},
                                }
                            ),
                        },
                        **_errors(400, 413, 415, 500, 504),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics.",
                    "responses": {
                        "200": {
                            "description": "Text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {"get": {"summary": "This document.", "responses": {"200": json_ok}}},
            "/v2": {"get": {"summary": "Server metadata (V2).", "responses": {"200": json_ok}}},
            "/v2/health/live": {"get": {"summary": "Liveness (V2).", "responses": {"200": json_ok}}},
            "/v2/health/ready": {"get": {"summary": "Readiness (V2).", "responses": {"200": json_ok}}},
            "/v2/models/{model_name}": {
                "get": {
                    "summary": "Model metadata (V2), from the signature.",
                    "parameters": [model_path],
                    "responses": {"200": json_ok, **_errors(404, v2=True)},
                }
            },
            "/v2/models/{model_name}/ready": {
                "get": {
                    "summary": "Model readiness (V2).",
                    "parameters": [model_path],
                    "responses": {"200": json_ok, **_errors(404, v2=True)},
                }
            },
            "/v2/models/{model_name}/infer": {
                "post": {
                    "summary": "Predict (V2).",
                    "parameters": [model_path],
                    "requestBody": {
                        "required": True,
                        "content": _json_content(
                            {
                                "type": "object",
                                "required": ["inputs"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "parameters": {"type": "object"},
                                    "inputs": {"type": "array", "items": tensor},
                                    "outputs": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["name"],
                                            "properties": {"name": {"type": "string"}},
                                        },
                                    },
                                },
                            }
                        ),
                    },
                    "responses": {
                        "200": {
                            "description": "Output tensors.",
                            "content": _json_content(
                                {
                                    "type": "object",
                                    "required": ["model_name", "outputs"],
                                    "properties": {
                                        "model_name": {"type": "string"},
                                        "id": {"type": "string"},
                                        "outputs": {"type": "array", "items": tensor},
                                    },
                                }
                            ),
                        },
                        **_errors(400, 404, 413, 415, 500, 504, v2=True),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error_code", "message"],
                    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
                },
                "V2Error": {
                    "type": "object",
                    "required": ["error", "error_code", "message"],
                    "properties": {
                        "error": {"type": "string"},
                        "error_code": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            }
        },
    }
