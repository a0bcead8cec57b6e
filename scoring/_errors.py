"""Errors of the scoring server and the HTTP answer each one becomes.

ScoringError                 (status, error_code; answered as JSON)
├── InvalidInput             400 BAD_REQUEST         the client sent something wrong
├── NotFound                 404 RESOURCE_DOES_NOT_EXIST
├── PayloadTooLarge          413 PAYLOAD_TOO_LARGE
├── UnsupportedMediaType     415 UNSUPPORTED_MEDIA_TYPE
├── ModelError               500 MODEL_ERROR         the model raised while predicting
├── NotReady                 503 NOT_READY
└── RequestTimeout           504 REQUEST_TIMEOUT
ModelLoadError               the server cannot start: the model does not load
"""

from __future__ import annotations


class ScoringError(Exception):
    """An error answered to the client as ``{"error_code": ..., "message": ...}``."""

    status = 500
    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ScoringError):
    status = 400
    error_code = "BAD_REQUEST"


class NotFound(ScoringError):
    status = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"


class PayloadTooLarge(ScoringError):
    status = 413
    error_code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ScoringError):
    status = 415
    error_code = "UNSUPPORTED_MEDIA_TYPE"


class ModelError(ScoringError):
    status = 500
    error_code = "MODEL_ERROR"


class NotReady(ScoringError):
    status = 503
    error_code = "NOT_READY"


class RequestTimeout(ScoringError):
    status = 504
    error_code = "REQUEST_TIMEOUT"


class ModelLoadError(Exception):
    """The model cannot be loaded; ``str()`` is a one-line reason with the fix when known."""

    def __init__(self, message: str, missing_module: str | None = None) -> None:
        super().__init__(message)
        self.missing_module = missing_module
