"""Prometheus metrics of a stream worker, in the data plane's registry (next to ``prodml_requests``…).

- ``prodml_stream_messages{result}``: messages consumed and answered (``ok``) or dead-lettered (``dead``);
- ``prodml_stream_dead_letters{reason}``: dead letters by reason (``not-json``, ``schema``, ``scoring``);
- ``prodml_stream_latency_seconds``: end to end per message, from its timestamp (set by the producer or
  the broker) to the moment its result was queued;
- ``prodml_stream_batch_seconds``: consume-to-produce time of each micro-batch;
- ``prodml_stream_consumer_lag{partition}``: messages behind the partition's end (librdkafka's statistics,
  every 5 s);
- ``prodml_stream_rewinds{reason}``: how often the worker went back to the last commit (a broker that came
  back, a failed delivery, lost partitions).

Throughput is ``rate(prodml_stream_messages[1m])``. Per-message observations are added with numpy per
batch, so 1,000 messages cost a few microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from prodml.serve.metrics import Metrics

__all__ = ["StreamMetrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = np.array(bounds)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)
        self.total = 0.0

    def observe_many(self, values: np.ndarray) -> None:
        self.counts += np.bincount(np.searchsorted(self.bounds, values), minlength=len(self.counts))
        self.total += float(values.sum())

    def family(self, name: str, text: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, text)
        cumulative = np.cumsum(self.counts).tolist()
        labels = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        family.add_metric([], list(zip(labels, cumulative, strict=True)), self.total)
        return family


class StreamMetrics(Collector):
    """The worker's metrics, registered in ``metrics.registry`` (the data plane's)."""

    def __init__(self, metrics: Metrics, lag: Callable[[], dict[int, int]] = dict) -> None:
        r = metrics.registry
        self.messages = Counter(
            "prodml_stream_messages", "Messages consumed, by result", ["result"], registry=r
        )
        self.dead = Counter("prodml_stream_dead_letters", "Dead letters by reason", ["reason"], registry=r)
        self.rewinds = Counter("prodml_stream_rewinds", "Returns to the last commit", ["reason"], registry=r)
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.batch = _Histogram(LATENCY_BUCKETS)
        self.lag = lag
        r.register(self)

    def collect(self) -> Iterator[Metric]:
        yield self.latency.family("prodml_stream_latency_seconds", "End-to-end latency per message")
        yield self.batch.family("prodml_stream_batch_seconds", "Consume-to-produce time per micro-batch")
        lag = GaugeMetricFamily("prodml_stream_consumer_lag", "Messages behind the end", labels=["partition"])
        for partition, value in sorted(self.lag().items()):
            lag.add_metric([str(partition)], value)
        yield lag
