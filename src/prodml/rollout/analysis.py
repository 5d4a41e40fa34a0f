"""Canary analysis: what the replicas' ``/metrics`` say about each variant over one window.

:func:`scrape` reads every replica's ``prodml_variant_*`` series and sums them (so the decision holds
with N replicas); the difference of two scrapes is one window. :func:`analyse` checks the canary in that
window: its error rate (5xx / gRPC server errors), its p99 latency (from the histogram buckets), and its
prediction scores against the primary's over the same window (PSI and KS with the drift kernels of
``prodml.export.drift``). A replica that cannot be read, or a canary with fewer than ``min_requests``
requests, fails the window: missing observations never pass.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prodml.export.drift import ks, psi

__all__ = ["Checks", "Snapshot", "Verdict", "analyse", "scrape", "shadow_report"]

SERVER_ERRORS = {"INTERNAL", "UNAVAILABLE", "UNKNOWN", "DATA_LOSS", "DEADLINE_EXCEEDED", "UNIMPLEMENTED"}
BINS = 20


@dataclass(frozen=True)
class Checks:
    """The thresholds of one analysis (``rollout`` settings, or the canary command's options)."""

    max_error_rate: float = 0.01
    max_p99_ms: float | None = None
    max_prediction_shift: float | None = None
    min_requests: int = 200
    max_metric_drop: float | None = None
    """The most the canary's task metric may trail the primary's once feedback labels exist."""
    metric: str | None = None
    """That metric: ``accuracy`` (binary classifiers) or ``error`` (mean absolute error, regressors)."""
    min_labels: int = 100


@dataclass
class Snapshot:
    """Summed counters of every replica, per version: requests by code, latency buckets, score bins."""

    requests: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    buckets: dict[str, dict[float, float]] = field(default_factory=lambda: defaultdict(dict))
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # replicas that could not be read
    agreement: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    dropped: dict[str, float] = field(default_factory=dict)

    def add(self, text: str) -> None:
        """Add one replica's ``/metrics`` text."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.add_sample(s.name, s.labels, s.value)

    def add_sample(self, name: str, labels: dict[str, str], value: float) -> None:
        """Add one sample (from a replica's text or a Prometheus query) to the sums it belongs to."""
        version = labels.get("version")
        if version is None:
            return
        if name == "prodml_variant_requests_total":
            codes = self.requests[version]
            codes[labels["code"]] = codes.get(labels["code"], 0.0) + value
        elif name == "prodml_variant_request_seconds_bucket":
            le = float(labels["le"])
            self.buckets[version][le] = self.buckets[version].get(le, 0.0) + value
        elif name == "prodml_shadow_agreement_total":
            got = self.agreement[version]
            got[labels["result"]] = got.get(labels["result"], 0.0) + value
        elif name == "prodml_shadow_dropped_total":
            self.dropped[version] = self.dropped.get(version, 0.0) + value
        elif name == "prodml_variant_prediction_scores_total":
            bins = self.scores.setdefault(version, np.zeros(BINS))
            bins[int(labels["bin"])] += value

    def minus(self, before: Snapshot) -> Snapshot:
        """This snapshot less an earlier one: one window (a replica restarted meanwhile counts from 0)."""

        def less(now: float, then: float) -> float:
            return now - then if now >= then else now

        out = Snapshot(missing=sorted(set(self.missing) | set(before.missing)))
        for version, codes in self.requests.items():
            old = before.requests.get(version, {})
            out.requests[version] = {c: less(v, old.get(c, 0.0)) for c, v in codes.items()}
        for version, buckets in self.buckets.items():
            old_b = before.buckets.get(version, {})
            out.buckets[version] = {le: less(v, old_b.get(le, 0.0)) for le, v in buckets.items()}
        for version, bins in self.scores.items():
            old_s = before.scores.get(version, np.zeros(BINS))
            out.scores[version] = np.where(bins >= old_s, bins - old_s, bins)
        return out


def scrape(replicas: Sequence[str], *, timeout_s: float = 5.0) -> Snapshot:
    """Read and sum ``/metrics`` of every replica; those that do not answer are listed in ``missing``."""
    import httpx

    snapshot = Snapshot()
    for base in replicas:
        try:
            response = httpx.get(f"{base.rstrip('/')}/metrics", timeout=timeout_s)
            response.raise_for_status()
            snapshot.add(response.text)
        except (httpx.HTTPError, ValueError) as exc:
            snapshot.missing.append(f"{base} ({type(exc).__name__})")
    return snapshot


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str]
    evidence: dict[str, Any]
    harmful: bool = False
    """A threshold was crossed on what was observed (not merely too little observed): what an A/B
    guardrail stops a test for."""


def _p99_ms(buckets: dict[float, float]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile (cumulative ``le`` buckets)."""
    if not buckets:
        return None
    total = buckets.get(math.inf, max(buckets.values()))
    if total <= 0:
        return None
    for le in sorted(buckets):
        if buckets[le] >= 0.99 * total:
            return le * 1000
    return None


def _errors(codes: dict[str, float]) -> tuple[float, float]:
    total = sum(codes.values())
    bad = sum(v for c, v in codes.items() if (c.isdigit() and int(c) >= 500) or c in SERVER_ERRORS)
    return total, bad


def analyse(window: Snapshot, *, canary: str, primary: str, checks: Checks) -> Verdict:
    """Whether the canary version passes ``checks`` in ``window``; every reason it does not, and the
    numbers either way."""
    reasons: list[str] = []
    harm: list[str] = []
    evidence: dict[str, Any] = {}
    if window.missing:
        reasons.append("no metrics from " + ", ".join(window.missing))
    for role, version in (("canary", canary), ("primary", primary)):
        total, bad = _errors(window.requests.get(version, {}))
        evidence[role] = {
            "version": version,
            "requests": int(total),
            "server_errors": int(bad),
            "error_rate": round(bad / total, 6) if total else None,
            "p99_ms": _p99_ms(window.buckets.get(version, {})),
        }
    c = evidence["canary"]
    if c["requests"] < checks.min_requests:
        reasons.append(f"the canary answered {c['requests']} requests, fewer than {checks.min_requests}")
    if c["error_rate"] is not None and c["error_rate"] > checks.max_error_rate:
        harm.append(f"canary error rate {c['error_rate']:.2%} is above {checks.max_error_rate:.2%}")
    if checks.max_p99_ms is not None:
        if c["p99_ms"] is None:
            reasons.append("no canary latency observed")
        elif c["p99_ms"] > checks.max_p99_ms:
            harm.append(f"canary p99 {c['p99_ms']:g} ms is above {checks.max_p99_ms:g} ms")
    if checks.max_prediction_shift is not None:
        ref, cur = window.scores.get(primary), window.scores.get(canary)
        enough = ref is not None and cur is not None and ref.sum() >= checks.min_requests and cur.sum() > 0
        if evidence["primary"]["requests"] == 0 and c["requests"] >= checks.min_requests:
            # the canary takes every request (the last step): nothing to compare with in this window;
            # the earlier steps compared them
            evidence["prediction_psi"] = "n/a: the primary answered no request in this window"
        elif not enough:
            reasons.append("too few predictions of both variants to compare (or not a classifier)")
        else:
            assert ref is not None and cur is not None
            shift = float(psi(ref[None, :], cur[None, :])[0])
            evidence["prediction_psi"] = round(shift, 6)
            evidence["prediction_ks"] = round(float(ks(ref[None, :], cur[None, :])[0]), 6)
            if shift > checks.max_prediction_shift:
                harm.append(
                    f"canary predictions shifted: PSI {shift:.3f} vs the primary is above "
                    f"{checks.max_prediction_shift:g}"
                )
    reasons += harm
    return Verdict(not reasons, reasons, evidence, harmful=bool(harm))


def shadow_report(snapshot: Snapshot, *, shadow: str, primary: str) -> dict[str, Any]:
    """How the shadow compares with the primary over everything the replicas counted: requests, server
    errors, p99, agreement of the predicted labels, prediction shift (PSI, KS) and requests dropped."""
    report: dict[str, Any] = {}
    for role, version in (("shadow", shadow), ("primary", primary)):
        total, bad = _errors(snapshot.requests.get(version, {}))
        report[role] = {
            "version": version,
            "requests": int(total),
            "server_errors": int(bad),
            "p99_ms": _p99_ms(snapshot.buckets.get(version, {})),
        }
    agree = snapshot.agreement.get(shadow, {})
    rows = agree.get("agree", 0.0) + agree.get("disagree", 0.0)
    report["agreement"] = round(agree.get("agree", 0.0) / rows, 6) if rows else None
    report["dropped"] = int(snapshot.dropped.get(shadow, 0.0))
    ref, cur = snapshot.scores.get(primary), snapshot.scores.get(shadow)
    if ref is not None and cur is not None and ref.sum() > 0 and cur.sum() > 0:
        report["prediction_psi"] = round(float(psi(ref[None, :], cur[None, :])[0]), 6)
        report["prediction_ks"] = round(float(ks(ref[None, :], cur[None, :])[0]), 6)
    report["missing"] = snapshot.missing
    return report
