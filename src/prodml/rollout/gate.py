"""The shadow gate: a canary may be required to have passed as a shadow first (``--require-shadow``)."""

from __future__ import annotations

from typing import Any

from prodml.rollout.analysis import Checks

__all__ = ["shadow_problems"]


def shadow_problems(report: dict[str, Any], checks: Checks) -> list[str]:
    """Why a shadow report (``analysis.shadow_report``) does not pass ``checks``; empty when it passes:
    enough mirrored requests, few enough server errors, p99 and prediction shift within their limits."""
    shadow = report["shadow"]
    problems = []
    if report.get("missing"):
        problems.append(f"replicas not read: {', '.join(report['missing'])}")
    if shadow["requests"] < checks.min_requests:
        problems.append(f"{shadow['requests']} mirrored requests, fewer than {checks.min_requests}")
    elif shadow["server_errors"] / shadow["requests"] > checks.max_error_rate:
        problems.append(
            f"server error rate {shadow['server_errors'] / shadow['requests']:.2%} above "
            f"{checks.max_error_rate:.2%}"
        )
    p99 = shadow.get("p99_ms")
    if checks.max_p99_ms is not None and p99 is not None and p99 > checks.max_p99_ms:
        problems.append(f"p99 {p99} ms above {checks.max_p99_ms} ms")
    shift = report.get("prediction_psi")
    if checks.max_prediction_shift is not None and shift is not None and shift > checks.max_prediction_shift:
        problems.append(f"prediction PSI {shift} above {checks.max_prediction_shift}")
    return problems
