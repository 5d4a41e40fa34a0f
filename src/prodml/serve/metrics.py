"""Prometheus metrics of the server: one registry, names prefixed ``prodml_``.

The per-request series (requests, latency, rows, batch sizes, in-flight requests) are plain numbers that
the event loop adds to — a ``bisect`` and an increment, no lock, no label lookup — and that a collector
turns into Prometheus families when ``/metrics`` is scraped; prometheus_client's own metric objects cost
about 10 µs per request here, a tenth of a 1-row request. Rare events (errors, cache results, swaps, the
loaded version) keep prometheus_client's objects.

Every update happens on the server's event loop thread; a scrape from another thread reads numbers that
may be one request apart from each other, as any Prometheus scrape of a live server may.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["Histogram", "Metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)


class Histogram:
    """Bucket counts (not cumulative; the last bucket is +Inf) and the sum of the observed values."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: Prometheus' "le"
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(_le, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class Metrics(Collector):
    """What the data plane counts; ``render()`` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests: dict[tuple[str, int | str], int] = {}  # (protocol, status or gRPC code) → count
        self.latency: dict[str, Histogram] = {}  # protocol → seconds
        self.rows = 0
        self.batch_rows = Histogram(ROW_BUCKETS)
        self.inflight = 0
        self.request_log: Any = None  # the request log, whose dropped (and lost) counts are exposed
        self.cache = Counter("prodml_cache", "Cache lookups", ["result"], registry=r)
        self.errors = Counter("prodml_errors", "Errors by kind", ["kind"], registry=r)
        self.model = Gauge(
            "prodml_model_info", "The loaded model version (1 = serving)", ["model", "version"], registry=r
        )
        self.swaps = Counter("prodml_model_swaps", "Model versions swapped in", registry=r)
        r.register(self)

    def done(self, protocol: str, status: int | str, seconds: float) -> None:
        """One answered request."""
        key = (protocol, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(protocol)
        if histogram is None:
            histogram = self.latency[protocol] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("prodml_requests", "Inference requests", labels=["protocol", "code"])
        for (protocol, status), n in list(self.requests.items()):
            requests.add_metric([protocol, str(status)], n)
        yield requests
        latency = HistogramMetricFamily("prodml_request_seconds", "Request latency", labels=["protocol"])
        for protocol, h in list(self.latency.items()):
            latency.add_metric([protocol], h.cumulative(), h.total)
        yield latency
        yield CounterMetricFamily("prodml_rows", "Rows scored", value=self.rows)
        batch = HistogramMetricFamily("prodml_batch_rows", "Rows per runtime call")
        batch.add_metric([], self.batch_rows.cumulative(), self.batch_rows.total)
        yield batch
        yield GaugeMetricFamily("prodml_inflight_requests", "Requests being served", value=self.inflight)
        log = self.request_log
        if log is not None:
            yield CounterMetricFamily(
                "prodml_request_log_dropped_rows", "Rows the request log dropped (full)", value=log.dropped
            )
            if hasattr(log, "lost"):
                yield CounterMetricFamily(
                    "prodml_request_log_lost_requests",
                    "Logged requests the broker never acknowledged",
                    value=log.lost,
                )

    def render(self) -> bytes:
        return generate_latest(self.registry)
