"""Schemathesis over the live Serve app's OpenAPI: every operation with generated
requests (valid and invalid), a bounded number each. No 500; a 503 carries
``Retry-After``; every error is the JSON envelope without internals; responses match
their documented schema, status codes and media types.

``positive_data_acceptance`` is left out on purpose: a schema-valid ``binary`` field is
not a valid image, so a 400 for it is the right answer, not a failure. The operations
run in one test (schemathesis' pytest plugin cannot take a session fixture's URL
here); each failure is collected with its operation and reported together.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_error_contract import check_contract

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
EXAMPLES = 25  # per operation: 25 operations, each example a real request


@schemathesis.check
def error_contract(ctx: Any, response: Any, case: Any) -> bool:
    """The platform's contract (tests/integration/test_error_contract.py)."""
    headers = [(name, value) for name, values in response.headers.items() for value in values]
    check_contract(httpx.Response(response.status_code, headers=headers,
                                  content=response.content,
                                  request=httpx.Request(case.method, case.path)))  # fmt: skip
    return True


CHECKS = [error_contract, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]  # fmt: skip


def fuzz(schema: Any, call: Any) -> list[str]:
    """Run every operation of ``schema``; the failures, one line each."""
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    for operation in operations:

        @given(operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case: Any) -> None:
            call(case)

        try:
            run()
        except (Exception, BaseExceptionGroup) as error:  # collected, reported together
            failures.append(f"{operation.label}: {str(error)[:1500]}")
    return failures


def test_every_operation_keeps_the_contract(serve_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{serve_url}/openapi.json")
    failures = fuzz(schema, lambda case: case.call_and_validate(
        base_url=serve_url, timeout=120, checks=CHECKS))  # fmt: skip
    assert not failures, "\n\n".join(failures)
