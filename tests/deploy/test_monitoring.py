"""The rendered monitoring against a running server: a real Prometheus scrapes ``prodml serve`` with the
rendered scrape config and loads the rendered rules; every metric the rules and the dashboard name is one
the server exports; promtool's rule tests show each alert fires on the data it is meant for."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prodml.core.project import load_project
from prodml.deploy import DeploySettings, deploy_settings, render
from prodml.deploy.observability import metric_names
from tests.serve.conftest import Served
from tests.servers import ServeProcess, free_port, wait_for_port

pytestmark = pytest.mark.integration


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed: run 'make setup' (it installs Debian's prometheus)")
    return exe


@pytest.fixture(scope="module")
def server(served: Served) -> Iterator[ServeProcess]:
    with ServeProcess(served.root, served.env) as proc:
        proc.wait_ready(timeout=90)  # a busy shared machine; the serving tests time readiness
        rows = served.rows[:2]
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            for _ in range(3):  # the same rows again: cache hits
                assert client.post("/predict", json=rows).status_code == 200
            bad = client.post("/predict", json=[{**rows[0], "age": "old"}])
            assert bad.status_code == 400  # counted as an error
        yield proc


@pytest.fixture(scope="module")
def rendered(served: Served, tmp_path_factory: pytest.TempPathFactory) -> tuple[DeploySettings, Path]:
    settings = deploy_settings(load_project(served.root))
    out = tmp_path_factory.mktemp("rendered")
    render(settings, "compose", out)
    return settings, out


def _exported(text: str) -> set[str]:
    """Every series name a /metrics body holds, and each family's name (histograms, counters)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_rules_and_dashboard_name_is_exported(
    server: ServeProcess, rendered: tuple[DeploySettings, Path]
) -> None:
    _, out = rendered
    exported = _exported(httpx.get(f"{server.url}/metrics", timeout=10).text)
    used = metric_names((out / "monitoring/rules.yml").read_text())
    dashboard = json.loads((out / "monitoring/grafana/dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used |= metric_names("\n".join(queries))
    assert len(used) >= 9  # requests, latency, errors, batch rows, rows, cache, model info, swaps, in flight
    assert used - exported == set(), f"named but not exported: {sorted(used - exported)}"
    # and the dashboard covers what the issue lists
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("traffic", "latency", "errors", "batch", "cache", "version"):
        assert topic in titles


def _get(url: str) -> Any:
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    return response.json()["data"]


@contextlib.contextmanager
def _prometheus(config: Path, storage: Path) -> Iterator[str]:
    port = free_port()
    log = storage.parent / "prometheus.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                _tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_prometheus_scrapes_the_server_and_loads_the_rules(
    server: ServeProcess, rendered: tuple[DeploySettings, Path], tmp_path: Path
) -> None:
    settings, out = rendered
    monitoring = out / "monitoring"
    # the compose stack lists its replicas here; this test's server is on 127.0.0.1
    (monitoring / "targets/prodml.json").write_text(
        json.dumps([{"targets": [f"127.0.0.1:{server.port}"], "labels": {"service": settings.name}}])
    )
    check = subprocess.run(
        [_tool("promtool"), "check", "rules", str(monitoring / "rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    with _prometheus(monitoring / "prometheus.yml", tmp_path / "tsdb") as url:
        deadline = time.monotonic() + 60
        targets: list[Any] = []
        series: list[Any] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                targets = _get(f"{url}/api/v1/targets")["activeTargets"]
                series = _get(f"{url}/api/v1/query?query=prodml_requests_total")["result"]
                if series and all(t["health"] == "up" for t in targets):
                    break
            time.sleep(0.5)
        assert [t["labels"]["job"] for t in targets] == [settings.name], targets
        assert all(t["health"] == "up" for t in targets), targets
        codes = {s["metric"]["code"] for s in series}
        assert {"200", "400"} <= codes, series
        groups = _get(f"{url}/api/v1/rules")["groups"]
        names = {rule["name"] for group in groups for rule in group["rules"]}
        assert {"ProdmlHighErrorRate", "ProdmlHighLatency", "ProdmlDown", "ProdmlNoModelLoaded"} <= names
        assert all(rule.get("health") != "err" for group in groups for rule in group["rules"]), groups
        loaded = _get(f"{url}/api/v1/query?query=prodml_model_info")["result"]
        assert [s["metric"]["version"] for s in loaded if s["value"][1] == "1"] == ["1"]


NO_MODEL = (
    "The model failed to load or could not be fetched and verified: check the server's log for the "
    "registry or digest error."
)


def _series(name: str, job: str, instance: str, values: str, **labels: str) -> dict[str, str]:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return {"series": f'{name}{{job="{job}",instance="{instance}"{extra}}}', "values": values}


def _rule_test(settings: DeploySettings) -> dict[str, Any]:
    job = settings.name
    threshold = settings.rollout.max_error_rate
    errors_per_min = max(1, round(60 * threshold * 4))  # about four times the allowed share
    share = 100 * errors_per_min / (60 + errors_per_min)
    described = f"Above rollout.max_error_rate ({threshold:g}) for 5 minutes."
    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    _series(
                        "prodml_requests_total", job, "a:8080", "0+60x20", protocol="predict", code="200"
                    ),
                    _series(
                        "prodml_requests_total",
                        job,
                        "a:8080",
                        f"0+{errors_per_min}x20",
                        protocol="predict",
                        code="500",
                    ),
                    _series("up", job, "a:8080", "1x20"),
                    _series("up", job, "b:8080", "0x20"),
                    _series("up", job, "c:8080", "1x20"),  # up, but no model loaded
                    _series("prodml_model_info", job, "a:8080", "1x20", model="churn", version="3"),
                    # every request of instance a takes between 250 and 500 ms
                    _series(
                        "prodml_request_seconds_bucket", job, "a:8080", "0x20", protocol="predict", le="0.25"
                    ),
                    _series(
                        "prodml_request_seconds_bucket",
                        job,
                        "a:8080",
                        "0+60x20",
                        protocol="predict",
                        le="0.5",
                    ),
                    _series(
                        "prodml_request_seconds_bucket",
                        job,
                        "a:8080",
                        "0+60x20",
                        protocol="predict",
                        le="+Inf",
                    ),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "ProdmlHighErrorRate",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": job, "severity": "page"},
                                "exp_annotations": {
                                    "summary": f"{job}: {share:.4g}% of requests failed",
                                    "description": described,
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "ProdmlDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": job, "instance": "b:8080", "severity": "page"},
                                "exp_annotations": {"summary": "b:8080 does not answer /metrics"},
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "ProdmlNoModelLoaded",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": job, "instance": "c:8080", "severity": "page"},
                                "exp_annotations": {
                                    "summary": "c:8080 is up but serves no model (not ready)",
                                    "description": NO_MODEL,
                                },
                            }
                        ],
                    },
                    {"eval_time": "5m", "alertname": "ProdmlHighLatency", "exp_alerts": []},  # not yet 10 min
                    {
                        "eval_time": "15m",
                        "alertname": "ProdmlHighLatency",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": job, "severity": "ticket"},
                                "exp_annotations": {
                                    "summary": f"{job}: p99 latency 497.5ms",
                                    "description": "p99 above 250 ms (rollout.max_p99_ms) for 10 minutes.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }


def test_the_alerts_fire_on_what_they_watch(settings: DeploySettings, tmp_path: Path) -> None:
    """promtool's unit tests: errors above rollout.max_error_rate page; p99 above the latency bound for 10
    minutes opens a ticket (not before); a down target pages; a target that
    is up but serves no model raises the no-model alert, one that serves a model does not."""
    import yaml

    render(settings, "k8s", tmp_path)
    (tmp_path / "monitoring/rules_test.yml").write_text(yaml.safe_dump(_rule_test(settings)))
    done = subprocess.run(
        [_tool("promtool"), "test", "rules", "rules_test.yml"],
        cwd=tmp_path / "monitoring",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rendered_probe_answers_on_a_running_server(
    server: ServeProcess, rendered: tuple[DeploySettings, Path], served: Served
) -> None:
    """The probes of the Deployment and the InferenceServices, and the image's HEALTHCHECK, pointed at a
    running server: HTTP paths answer 200, the gRPC health check says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from prodml.deploy.kserve import inference_services
    from prodml.deploy.kubernetes import manifests

    settings, out = rendered
    containers = [
        o["spec"]["template"]["spec"]["containers"][0]
        for o in manifests(settings)
        if o["kind"] == "Deployment"
    ]
    containers += [
        i["spec"]["predictor"]["containers"][0]
        for m in ("serverless", "raw")
        for i in inference_services(settings, m)
    ]
    http_paths, grpc_probes = set(), 0
    for container in containers:
        for key in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(key)
            if probe is None:
                continue
            if "httpGet" in probe:
                http_paths.add(probe["httpGet"]["path"])
            elif "grpc" in probe:
                assert probe["grpc"]["port"] == settings.serve.grpc_port
                grpc_probes += 1
    assert http_paths == {"/v2/health/live", "/v2/health/ready"}
    for path in sorted(http_paths):
        assert httpx.get(f"{server.url}{path}", timeout=5).status_code == 200, path
    assert grpc_probes == 2
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # the image's HEALTHCHECK command, run here against this server's port
    line = next(
        line
        for line in (out / "Dockerfile").read_text().splitlines()
        if line.strip().startswith('CMD ["python"')
    )
    command = json.loads(
        line.strip().removeprefix("CMD ").replace(f":{settings.serve.port}/", f":{server.port}/")
    )
    command[0] = sys.executable
    assert subprocess.run(command, timeout=30, check=False).returncode == 0
