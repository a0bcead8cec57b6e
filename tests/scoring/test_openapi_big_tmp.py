"""schemathesis against /openapi.json: no request makes the server answer 500 unless the
model itself raised (MODEL_ERROR), and every answer is JSON where the document says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from scoring import create_app


@pytest.fixture(scope="module", params=["iris_model", "forest_model", "named_tensor_model"])
def api_schema(request: pytest.FixtureRequest) -> Any:
    model_dir: Path = request.getfixturevalue(request.param)
    app = create_app({"model_dir": str(model_dir), "access_log": False, "timeout": 10})
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    app.extensions["scoring"]["runner"].shutdown()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_unless_the_model_raised(case: Any) -> None:
    response = case.call()
    if response.status_code >= 500:
        body = response.json()
        assert body["error_code"] == "MODEL_ERROR", (response.status_code, response.text[:500])
    headers = {k.lower(): v for k, v in response.headers.items()}
    if response.status_code != 200 or case.path.startswith("/v2"):
        assert headers["content-type"][0].startswith("application/json")
    assert headers["x-request-id"][0]
