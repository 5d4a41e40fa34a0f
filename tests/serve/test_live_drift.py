"""Live drift on a real server: the sketch's gauges on /metrics follow the traffic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.conftest import Served
from tests.servers import ServeProcess

WINDOW = 1000
ROWS = 16  # rows per request: what the sketch keeps of each request whole


def _training_rows(served: Served, n: int, seed: int) -> list[dict[str, Any]]:
    frame = pq.read_table(served.root / ".prodml/features/training.parquet")
    keep = [c for c in frame.column_names if c not in ("customer_id", "prediction_ts", "churned")]
    pick = np.random.default_rng(seed).choice(frame.num_rows, n, replace=False)
    return frame.select(keep).take(np.sort(pick)).to_pylist()  # type: ignore[no-any-return]


def _drifted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Customers 45 years older, paying three times the fee."""
    return [{**r, "age": r["age"] + 45, "monthly_fee": r["monthly_fee"] * 3} for r in rows]


def _send(url: str, rows: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(0, len(rows), ROWS):
            client.post("/predict", json=rows[i : i + ROWS]).raise_for_status()


def _gauges(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"{key} twice on /metrics"
            out[key] = sample.value
    return out


def _windows(url: str, at_least: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + 10  # the server's 0.1 s tick bins the rows: wait for the window
    while True:
        gauges = _gauges(url)
        if gauges.get(("prodml_drift_windows_total", ())) == at_least or time.monotonic() > deadline:
            return gauges


def _value(gauges: dict[Any, float], name: str, **labels: str) -> float:
    return gauges[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def server(served: Served) -> Iterator[ServeProcess]:
    env = {**served.env, "PRODML_MONITOR__WINDOW_ROWS": str(WINDOW)}
    with ServeProcess(served.root, env, "--no-log-requests") as proc:
        proc.wait_ready()
        yield proc


def test_drifted_traffic_moves_the_gauges_and_undrifted_stays_low(
    server: ServeProcess, served: Served
) -> None:
    before = _gauges(server.url)
    assert _value(before, "prodml_drift_windows_total") == 0
    assert _value(before, "prodml_drift_window_rows") == 0
    rows = _training_rows(served, WINDOW, seed=3)

    _send(server.url, rows)  # as training saw them: one window, no breach
    calm = _windows(server.url, 1)
    assert _value(calm, "prodml_drift_windows_total") == 1
    assert _value(calm, "prodml_drift_window_rows") == WINDOW
    assert not [k for k, v in calm.items() if k[0] == "prodml_drift_breach" and v], (
        "a breach on training data"
    )
    assert _value(calm, "prodml_drift_score", feature="age", statistic="psi") < 0.1
    assert _value(calm, "prodml_drift_out_of_range", feature="age") == 0

    _send(server.url, _drifted(rows))  # the next window: age and fee shifted
    drifted = _windows(server.url, 2)
    assert _value(drifted, "prodml_drift_windows_total") == 2
    assert _value(drifted, "prodml_drift_breach", feature="age") == 1
    assert _value(drifted, "prodml_drift_score", feature="age", statistic="psi") > 1.0
    assert _value(drifted, "prodml_drift_score", feature="age", statistic="ks") > 0.5
    assert _value(drifted, "prodml_drift_out_of_range", feature="age") > 0.5
    # a few fee levels, one of them tripled beyond the training maximum
    assert _value(drifted, "prodml_drift_breach", feature="monthly_fee") == 1
    assert _value(drifted, "prodml_drift_out_of_range", feature="monthly_fee") > 0.05
    assert _value(drifted, "prodml_drift_breach", feature="plan") == 0  # untouched
    assert _value(drifted, "prodml_drift_sketch_errors_total") == 0


def test_with_several_workers_metrics_stay_one_valid_view(served: Served) -> None:
    env = {**served.env, "PRODML_MONITOR__WINDOW_ROWS": str(WINDOW)}
    with ServeProcess(served.root, env, "--no-log-requests", "--workers", "2") as proc:
        proc.wait_ready()
        rows = _drifted(_training_rows(served, WINDOW, seed=4))
        for _ in range(2):  # separate connections: both workers may get some
            _send(proc.url, rows[: WINDOW // 2])
        requests = 2 * (WINDOW // 2 // ROWS + (WINDOW // 2 % ROWS > 0))
        for _ in range(5):  # whichever worker answers, the page parses and names each series once
            gauges = _gauges(proc.url)
            # the counters are every worker's, summed; the drift gauges are the answering worker's sketch
            assert _value(gauges, "prodml_requests_total", code="200", protocol="predict") == requests
            assert ("prodml_drift_windows_total", ()) in gauges
            assert _value(gauges, "prodml_drift_sketch_errors_total") == 0
