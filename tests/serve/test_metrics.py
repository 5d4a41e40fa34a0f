"""The server's Prometheus metrics."""

from __future__ import annotations

from prodml.serve.metrics import Metrics


def test_loop_metrics_render_as_prometheus_families() -> None:
    metrics = Metrics()
    metrics.done("v2", 200, 0.001)  # on a bound: counted in that bucket ("le")
    metrics.done("v2", 200, 0.0003)
    metrics.done("grpc", "INVALID_ARGUMENT", 3.0)
    metrics.rows.inc(5)
    metrics.batch_rows.observe(5)
    text = metrics.render().decode()
    assert 'prodml_requests_total{code="200",protocol="v2"} 2.0' in text
    assert 'prodml_requests_total{code="INVALID_ARGUMENT",protocol="grpc"} 1.0' in text
    assert 'prodml_request_seconds_bucket{le="0.0005",protocol="v2"} 1.0' in text
    assert 'prodml_request_seconds_bucket{le="0.001",protocol="v2"} 2.0' in text
    assert 'prodml_request_seconds_bucket{le="2.5",protocol="grpc"} 0.0' in text
    assert 'prodml_request_seconds_bucket{le="+Inf",protocol="grpc"} 1.0' in text
    assert 'prodml_request_seconds_count{protocol="v2"} 2.0' in text
    assert "prodml_rows_total 5.0" in text
    assert 'prodml_batch_rows_bucket{le="4.0"} 0.0' in text
    assert 'prodml_batch_rows_bucket{le="8.0"} 1.0' in text
    assert "prodml_inflight_requests 0.0" in text
