"""The canary analysis on scraped metrics: windows, error rates, p99, prediction shift, missing data."""

from __future__ import annotations

import numpy as np

from prodml.rollout.analysis import Checks, Snapshot, analyse


def _text(version: str, ok: int, errors: int, fast: int, scores: list[int]) -> str:
    lines = [
        f'prodml_variant_requests_total{{code="200",variant="v",version="{version}"}} {ok}',
        f'prodml_variant_requests_total{{code="500",variant="v",version="{version}"}} {errors}',
        f'prodml_variant_request_seconds_bucket{{le="0.01",variant="v",version="{version}"}} {fast}',
        f'prodml_variant_request_seconds_bucket{{le="0.1",variant="v",version="{version}"}} {ok + errors}',
        f'prodml_variant_request_seconds_bucket{{le="+Inf",variant="v",version="{version}"}} {ok + errors}',
    ]
    lines += [
        f'prodml_variant_prediction_scores_total{{bin="{b}",variant="v",version="{version}"}} {n}'
        for b, n in enumerate(scores)
    ]
    return "\n".join(lines) + "\n"


def _snapshot(*texts: str) -> Snapshot:
    snap = Snapshot()
    for text in texts:
        snap.add(text)
    return snap


def test_two_replicas_are_summed_and_a_window_is_a_difference() -> None:
    same = [10] * 20
    before = _snapshot(_text("1", 100, 0, 100, same), _text("2", 10, 0, 10, same))
    after = _snapshot(
        _text("1", 400, 0, 400, [40] * 20),
        _text("2", 300, 0, 300, [30] * 20),
        _text("2", 300, 0, 300, [30] * 20),  # a second replica
    )
    window = after.minus(before)
    assert window.requests["2"]["200"] == 590
    verdict = analyse(
        window,
        canary="2",
        primary="1",
        checks=Checks(min_requests=200, max_p99_ms=20, max_prediction_shift=0.1),
    )
    assert verdict.passed, verdict.reasons
    assert verdict.evidence["canary"]["requests"] == 590 and verdict.evidence["canary"]["p99_ms"] == 10


def test_errors_latency_and_shift_each_fail_a_window_with_the_numbers() -> None:
    primary = _text("1", 1000, 0, 1000, [50] * 20)
    canary = _text("2", 950, 50, 500, [0] * 10 + [100] * 10)
    verdict = analyse(
        _snapshot(primary, canary),
        canary="2",
        primary="1",
        checks=Checks(max_error_rate=0.01, max_p99_ms=20, max_prediction_shift=0.1),
    )
    assert not verdict.passed
    text = " | ".join(verdict.reasons)
    assert "error rate 5.00% is above 1.00%" in text
    assert "p99 100 ms is above 20 ms" in text
    assert "PSI" in text and verdict.evidence["prediction_psi"] > 0.1
    assert np.isclose(verdict.evidence["prediction_ks"], 0.5)


def test_too_few_or_missing_observations_never_pass() -> None:
    few = analyse(
        _snapshot(_text("1", 500, 0, 500, []), _text("2", 5, 0, 5, [])),
        canary="2",
        primary="1",
        checks=Checks(),
    )
    assert not few.passed and "fewer than 200" in few.reasons[0]
    none = analyse(Snapshot(missing=["http://r2 (ConnectError)"]), canary="2", primary="1", checks=Checks())
    assert not none.passed and "no metrics from http://r2" in none.reasons[0]
    shift = analyse(
        _snapshot(_text("1", 500, 0, 500, []), _text("2", 500, 0, 500, [])),
        canary="2",
        primary="1",
        checks=Checks(max_prediction_shift=0.1),
    )
    assert not shift.passed and "too few predictions" in shift.reasons[0]


def test_at_the_last_step_the_primary_answers_nothing_and_the_shift_check_does_not_fail_the_window() -> None:
    canary = _text("2", 500, 0, 500, [25] * 20)
    checks = Checks(min_requests=200, max_prediction_shift=0.1)
    verdict = analyse(_snapshot(canary), canary="2", primary="1", checks=checks)
    assert verdict.passed, verdict.reasons
    assert str(verdict.evidence["prediction_psi"]).startswith("n/a")
    few = analyse(_snapshot(_text("2", 50, 0, 50, [2] * 20)), canary="2", primary="1", checks=checks)
    assert not few.passed  # too few canary requests still fail it
