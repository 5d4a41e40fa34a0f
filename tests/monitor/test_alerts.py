"""The generated alert rules pass ``promtool check rules`` and fire in a real Prometheus that scrapes a
live drift sketch; the Grafana dashboard queries the same series."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from prodml.export.drift import PREDICTION, LiveSketch, Thresholds
from prodml.monitor.alerts import alert_rules, dashboard, render_rules
from tests.monitor.conftest import LAYOUT, score, world
from tests.servers import free_port, wait_for_port


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"Debian's {name} is needed (apt-get install prometheus; scripts/setup.sh installs it)"
    return path


@pytest.mark.parametrize(
    "thresholds",
    [Thresholds(), Thresholds(js=0.1, per_feature={"age": {"psi": 0.3, "ks": None}, "fee": {"psi": 0.5}})],
)
def test_promtool_accepts_the_rules(thresholds: Thresholds, tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(render_rules(thresholds, model="churn"))
    result = subprocess.run([_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dashboard_queries_the_exported_series() -> None:
    board = dashboard(Thresholds(psi=0.25), model="churn")
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert any('statistic="psi"' in e for e in exprs)
    assert board["panels"][0]["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 0.25
    assert json.loads(json.dumps(board)) == board  # plain JSON
    rules = alert_rules(model="churn")["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "ProdmlFeatureDriftPSI",
        "ProdmlPredictionDrift",
        "ProdmlDriftSketchFailing",
    }


@contextlib.contextmanager
def _exporter(sketch: LiveSketch) -> Iterator[int]:
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(sketch.collector())
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def _prometheus(rules: str, target_port: int) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="prodml-prom-") as tmp:
        root = Path(tmp)
        (root / "rules.yml").write_text(rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(root / "rules.yml")],
            "scrape_configs": [
                {"job_name": "prodml", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        proc = subprocess.Popen(
            [
                _tool("prometheus"),
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, 30)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(20)


def _alerts(base: str, deadline_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + deadline_s
    alerts: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                alerts = client.get("/api/v1/alerts").json()["data"]["alerts"]
                rules = client.get("/api/v1/rules").json()["data"]["groups"]
                evaluated = rules and all(
                    r.get("lastEvaluation", "").startswith("2") for g in rules for r in g["rules"]
                )
                if alerts and evaluated:
                    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
                    return alerts
            time.sleep(0.5)
    return alerts


@pytest.mark.integration
def test_rules_fire_in_prometheus_on_a_drifted_window(profile: dict[str, Any]) -> None:
    rng = np.random.default_rng(21)
    sketch = LiveSketch(profile, LAYOUT, window_rows=2_000)
    frame = world(rng, 2_000, drift=1.0)
    p = score(frame)
    sketch.observe(
        frame[list(LAYOUT[0])].to_numpy(np.float32),
        frame[list(LAYOUT[1])].to_numpy(object),
        np.stack([1 - p, p], axis=1),
    )
    sketch.fold()
    assert sketch.windows == 1
    with _exporter(sketch) as port, _prometheus(render_rules(model="churn"), port) as base:
        alerts = _alerts(base)
    firing = {(a["labels"]["alertname"], a["labels"].get("feature")) for a in alerts}
    assert ("ProdmlFeatureDriftPSI", "age") in firing
    assert ("ProdmlFeatureDriftKS", "sessions_30d") in firing
    assert ("ProdmlPredictionDrift", PREDICTION) in firing
    assert not any(feature == "country" for _, feature in firing)  # unshifted
    assert all(a["state"] in ("pending", "firing") for a in alerts)
