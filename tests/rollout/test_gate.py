"""The shadow gate names every reason a shadow report does not pass."""

from __future__ import annotations

from prodml.rollout.analysis import Checks
from prodml.rollout.gate import shadow_problems


def _report(requests: int, errors: int, p99: float | None, psi: float | None) -> dict[str, object]:
    shadow = {"version": "2", "requests": requests, "server_errors": errors, "p99_ms": p99}
    return {"shadow": shadow, "primary": dict(shadow, version="1"), "prediction_psi": psi, "missing": []}


def test_a_passing_shadow_has_no_problems_and_a_failing_one_says_why() -> None:
    checks = Checks(max_error_rate=0.01, max_p99_ms=50, max_prediction_shift=0.1, min_requests=200)
    assert shadow_problems(_report(500, 2, 12.0, 0.02), checks) == []
    assert shadow_problems(_report(50, 0, 12.0, 0.02), checks) == ["50 mirrored requests, fewer than 200"]
    assert shadow_problems(_report(500, 50, 80.0, 0.3), checks) == [
        "server error rate 10.00% above 1.00%",
        "p99 80.0 ms above 50 ms",
        "prediction PSI 0.3 above 0.1",
    ]
