"""A stand-in model server for emulator tests: SageMaker's container contract, stdlib only.

`serve` listens on 8080 (or SAGEMAKER_BIND_TO_PORT); /ping answers 200; /invocations answers
one prediction (the image's STUB_VERSION) per input row. STUB_BROKEN=1 exits at start, as a
model that fails to load does; STUB_BAD_PREDICT=1 passes /ping but answers 500 to predictions. Built into tiny images by tests/sagemaker/conftest.py."""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def rows(body: bytes) -> int:
    document = json.loads(body)
    for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
        payload = document.get(key) if isinstance(document, dict) else None
        if isinstance(payload, dict):
            return len(payload.get("data") or [])
        if isinstance(payload, list):
            return len(payload)
    return 1


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"error_code": "NOT_FOUND", "message": self.path})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if os.environ.get("STUB_BAD_PREDICT") == "1":
            self._answer(500, {"error_code": "MODEL_ERROR", "message": "predict() raised: bad weights"})
            return
        try:
            count = rows(body)
        except ValueError as exc:
            self._answer(400, {"error_code": "BAD_REQUEST", "message": str(exc)})
            return
        self._answer(200, {"predictions": [os.environ.get("STUB_VERSION", "0")] * count})

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit(f"usage: serve (got {sys.argv[1:]})")
    if os.environ.get("STUB_BROKEN") == "1":
        sys.exit("model failed to load: STUB_BROKEN=1")
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or os.environ.get("PORT") or 8080)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
