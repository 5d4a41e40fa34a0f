"""Property-based fuzzing of every operation in /openapi.json: no 5xx, and a good request after each.

Schemathesis generates the requests from the server's own OpenAPI document; hypothesis drives them
(schemathesis' pytest plugin predates pytest 9, so the operations are driven directly).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.serve.conftest import Served
from tests.servers import ServeProcess

EXAMPLES = 30


@pytest.mark.integration
def test_no_operation_answers_a_server_error(served: Served) -> None:
    with ServeProcess(served.root, served.env) as server, httpx.Client(timeout=10) as client:
        server.wait_ready()
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 15
        calls = 0
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
            )
            def check(case) -> None:  # type: ignore[no-untyped-def]
                nonlocal calls
                response = case.call(base_url=server.url, timeout=10)
                calls += 1
                assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
                assert "Traceback" not in response.text
                good = client.post(f"{server.url}/predict", json=served.rows[:1])
                assert good.status_code == 200

            check()
        assert calls >= len(operations) * 5
