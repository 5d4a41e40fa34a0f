"""Prometheus metrics of the server: one registry, names prefixed ``prodml_``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)


class Metrics:
    """Counters, histograms and gauges the data plane updates; ``render()`` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("prodml_requests", "Inference requests", ["protocol", "code"], registry=r)
        self.latency = Histogram(
            "prodml_request_seconds", "Request latency", ["protocol"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.rows = Counter("prodml_rows", "Rows scored", registry=r)
        self.batch_rows = Histogram(
            "prodml_batch_rows", "Rows per runtime call", buckets=ROW_BUCKETS, registry=r
        )
        self.cache = Counter("prodml_cache", "Cache lookups", ["result"], registry=r)
        self.errors = Counter("prodml_errors", "Errors by kind", ["kind"], registry=r)
        self.model = Gauge(
            "prodml_model_info", "The loaded model version (1 = serving)", ["model", "version"], registry=r
        )
        self.swaps = Counter("prodml_model_swaps", "Model versions swapped in", registry=r)
        self.inflight = Gauge("prodml_inflight_requests", "Requests being served", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
