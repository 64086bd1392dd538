"""Schema-driven fuzzing: schemathesis generates valid and invalid requests for every operation of
the served OpenAPI spec; none may get a 5xx (503 "not ready" cannot occur: the model is loaded)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error


@pytest.fixture
def api_schema(make_app):
    # a small row limit keeps generated batches cheap; the limit itself is part of the spec
    return schemathesis.openapi.from_wsgi("/openapi.json", make_app(max_batch_rows=20))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case):
    case.call_and_validate(checks=[not_a_server_error])
