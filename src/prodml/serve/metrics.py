"""Prometheus metrics of the server: one registry, names prefixed ``prodml_``.

With several worker processes, ``prodml serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before anything imports
prometheus_client (its multiprocess mode): every worker writes its values there, and whichever worker a
scrape reaches renders the sum of all of them — one consistent view. The ``process_*`` series are those
of the worker that answers.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)

__all__ = ["Metrics", "shared_values"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)


def shared_values() -> bool:
    """Whether prometheus_client keeps values in ``PROMETHEUS_MULTIPROC_DIR``'s files (the variable was set
    before it loaded, as ``prodml serve --workers N`` does). The variable alone does not say so: a library
    loaded later may set it (Feast's MLflow plugin does, when the registry client loads), and values kept
    in memory would then vanish from /metrics."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    """What the data plane counts; ``render()`` is the /metrics body. Others may add collectors to
    ``registry`` (drift gauges, the stream worker's series)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        own: CollectorRegistry | None = r
        if shared_values():
            multiprocess.MultiProcessCollector(r)  # type: ignore[no-untyped-call]  # every worker, summed
            own = None
        ProcessCollector(registry=r)
        self.requests = Counter("prodml_requests", "Inference requests", ["protocol", "code"], registry=own)
        self.latency = Histogram(
            "prodml_request_seconds", "Request latency", ["protocol"], buckets=LATENCY_BUCKETS, registry=own
        )
        self.rows = Counter("prodml_rows", "Rows scored", registry=own)
        self.batch_rows = Histogram(
            "prodml_batch_rows", "Rows per runtime call", buckets=ROW_BUCKETS, registry=own
        )
        self.inflight = Gauge(
            "prodml_inflight_requests", "Requests being served", registry=own, multiprocess_mode="livesum"
        )
        self.cache = Counter("prodml_cache", "Cache lookups", ["result"], registry=own)
        self.errors = Counter("prodml_errors", "Errors by kind", ["kind"], registry=own)
        self.out_of_range = Counter(
            "prodml_out_of_range_values",
            "Values outside the training range, by input",
            ["input"],
            registry=own,
        )
        self.model = Gauge(
            "prodml_model_info",
            "The loaded model version (1 = serving)",
            ["model", "version"],
            registry=own,
            multiprocess_mode="livemax",
        )
        self.swaps = Counter("prodml_model_swaps", "Model versions swapped in", registry=own)
        # per variant of the deployment spec (the rollout controller's analysis reads these)
        self.variant_requests = Counter(
            "prodml_variant_requests", "Requests by variant", ["variant", "version", "code"], registry=own
        )
        self.variant_latency = Histogram(
            "prodml_variant_request_seconds",
            "Request latency by variant",
            ["variant", "version"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.shadow_dropped = Counter(
            "prodml_shadow_dropped",
            "Requests not mirrored: the shadow queue was full",
            ["version"],
            registry=own,
        )
        self.shadow_agreement = Counter(
            "prodml_shadow_agreement",
            "Shadow rows by agreement with the primary",
            ["version", "result"],
            registry=own,
        )
        self.variant_scores = Counter(
            "prodml_variant_prediction_scores",
            "Predicted scores by variant, in 20 bins of [0, 1]",
            ["variant", "version", "bin"],
            registry=own,
        )
        self.log_dropped = Counter(
            "prodml_request_log_dropped_rows", "Rows the request log dropped (full)", registry=own
        )
        self.log_lost = Counter(
            "prodml_request_log_lost_requests", "Logged requests the broker never acknowledged", registry=own
        )
        self.request_log: Any = None  # the request log, whose dropped (and lost) counts are exposed
        self._synced = (0, 0)

    def done(self, protocol: str, status: int | str, seconds: float) -> None:
        """One answered request."""
        self.requests.labels(protocol, str(status)).inc()
        self.latency.labels(protocol).observe(seconds)

    def sync_log(self) -> None:
        """Bring the request log's dropped and lost counts into the metrics (housekeeping calls it)."""
        log = self.request_log
        if log is not None:
            now = (log.dropped, getattr(log, "lost", 0))
            self.log_dropped.inc(now[0] - self._synced[0])
            self.log_lost.inc(now[1] - self._synced[1])
            self._synced = now

    def render(self) -> bytes:
        self.sync_log()
        return generate_latest(self.registry)
