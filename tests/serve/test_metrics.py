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


def test_a_multiprocess_directory_set_after_loading_does_not_hide_the_counts(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Feast's MLflow plugin sets PROMETHEUS_MULTIPROC_DIR when the registry client loads, long after
    # prometheus_client chose to keep values in memory: the server's counts must still be on /metrics
    (tmp_path / "counter_999.db").write_bytes(b"")  # another process's file there must not be read
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = Metrics()
    metrics.requests.labels("v2", "200").inc()
    text = metrics.render().decode()
    assert 'prodml_requests_total{code="200",protocol="v2"} 1.0' in text


def test_a_cli_run_leaves_logging_writable_after_its_stderr_closes() -> None:
    import io
    import logging
    import sys

    from prodml.core.logging import configure_logging

    configure_logging("INFO")
    swapped, sys.stderr = sys.stderr, io.StringIO()  # what a test runner does around one CLI call
    try:
        logging.getLogger("prodml.test").warning("first")
        captured = sys.stderr.getvalue()
        sys.stderr.close()
    finally:
        sys.stderr = swapped
    assert "first" in captured
    logging.getLogger("prodml.test").warning("after")  # no "I/O operation on closed file"
