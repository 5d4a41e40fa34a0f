"""Rollout metrics from a Prometheus server instead of each replica's ``/metrics``.

With ``rollout.prometheus_url`` set, the controller and the reports ask Prometheus for the sums over
every replica it scrapes (``sum by (version, …)`` of each ``prodml_variant_*`` / ``prodml_shadow_*``
series), so replicas need not be listed and may come and go (Kubernetes pods behind a ServiceMonitor).
``rollout.prometheus_selector`` (e.g. ``job="churn"``) keeps another deployment's series out when one
Prometheus scrapes several. The answer is a :class:`~prodml.rollout.analysis.Snapshot` like a direct
scrape, so the analysis is the same. Prometheus that cannot be read, or that has no series yet, is a
missing observation: the window fails, as with a replica that does not answer.

Example:
    >>> snapshot = query("http://127.0.0.1:9090", selector='job="churn"')  # doctest: +SKIP
    >>> snapshot.requests["2"]  # doctest: +SKIP
    {'200': 1532.0}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prodml.rollout.analysis import Snapshot

__all__ = ["SERIES", "query", "scraper"]

# each series the analysis reads, with the labels it is summed by
SERIES = {
    "prodml_variant_requests_total": ("version", "code"),
    "prodml_variant_request_seconds_bucket": ("version", "le"),
    "prodml_variant_prediction_scores_total": ("version", "bin"),
    "prodml_shadow_agreement_total": ("version", "result"),
    "prodml_shadow_dropped_total": ("version",),
}


def query(url: str, *, selector: str = "", timeout_s: float = 5.0) -> Snapshot:
    """Sum every replica's rollout series as Prometheus last scraped them; problems go to ``missing``."""
    import httpx

    snapshot = Snapshot()
    base = url.rstrip("/")
    for name, labels in SERIES.items():
        promql = f"sum by ({', '.join(labels)}) ({name}{{{selector}}})"
        try:
            response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=timeout_s)
            body = response.json()
            if body.get("status") != "success":
                raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
            for row in body["data"]["result"]:
                snapshot.add_sample(name, row["metric"], float(row["value"][1]))
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            snapshot.missing.append(f"Prometheus {base}: {promql} ({type(exc).__name__}: {exc})"[:300])
            return snapshot
    if not snapshot.requests:
        snapshot.missing.append(f"Prometheus {base}: no prodml_variant_requests_total{{{selector}}} yet")
    return snapshot


def scraper(url: str, selector: str = "") -> Callable[[Sequence[str]], Snapshot]:
    """A drop-in for :func:`~prodml.rollout.analysis.scrape` that asks Prometheus (replicas unused)."""
    return lambda replicas: query(url, selector=selector)
