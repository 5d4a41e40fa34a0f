"""Prometheus scrape config and alert rules, and a Grafana dashboard, over the server's ``/metrics``.

Every query names only metrics a running ``prodml serve`` exports (a test scrapes one and checks each
name). The thresholds come from the project's ``rollout`` settings: the alert fires where a canary would
be rolled back.

Prometheus finds the servers through ``targets/*.json`` (file service discovery): the compose stack lists
its replicas there; in Kubernetes the ServiceMonitor does the finding instead.
"""

from __future__ import annotations

import re
from typing import Any

from prodml.deploy.files import Files, to_json, to_yaml
from prodml.deploy.settings import DeploySettings

__all__ = ["ERROR_CODES", "METRIC", "dashboard", "metric_names", "monitoring_files", "rules", "scrape_config"]

# request outcomes that count as server errors: HTTP 5xx, and the gRPC codes the server answers with
ERROR_CODES = "5..|INTERNAL|UNAVAILABLE|UNKNOWN|DEADLINE_EXCEEDED|UNIMPLEMENTED"
METRIC = re.compile(r"\bprodml_[a-z_]+\b")
DEFAULT_P99_S = 0.25


def metric_names(text: str) -> set[str]:
    """The ``prodml_*`` names a file's queries use (histogram series reduced to their family)."""
    return set(METRIC.findall(text))


def _job(settings: DeploySettings) -> str:
    """The scrape job: the Service's name, which is also the job a ServiceMonitor gives its targets."""
    return settings.name


def scrape_config(settings: DeploySettings) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {
                "job_name": _job(settings),
                "metrics_path": "/metrics",
                "scrape_interval": "5s",
                "file_sd_configs": [{"files": ["targets/*.json"], "refresh_interval": "30s"}],
            }
        ],
    }


def rules(settings: DeploySettings) -> dict[str, Any]:
    job = _job(settings)
    rollout = settings.rollout
    p99_s = rollout.max_p99_ms / 1000 if rollout.max_p99_ms is not None else DEFAULT_P99_S
    errors = f'sum by (job) (rate(prodml_requests_total{{job="{job}",code=~"{ERROR_CODES}"}}[5m]))'
    total = f'sum by (job) (rate(prodml_requests_total{{job="{job}"}}[5m]))'
    p99 = (
        f'histogram_quantile(0.99, sum by (job, le) (rate(prodml_request_seconds_bucket{{job="{job}"}}[5m])))'
    )
    return {
        "groups": [
            {
                "name": job,
                "rules": [
                    {
                        "record": "prodml:error_ratio:rate5m",
                        "expr": f"{errors}\n/\nclamp_min({total}, 1e-9)",
                    },
                    {
                        "alert": "ProdmlHighErrorRate",
                        "expr": f'prodml:error_ratio:rate5m{{job="{job}"}} > {rollout.max_error_rate:g}',
                        "for": "5m",
                        "labels": {"severity": "page"},
                        "annotations": {
                            "summary": (
                                "{{ $labels.job }}: {{ $value | humanizePercentage }} of requests failed"
                            ),
                            "description": (
                                f"Above rollout.max_error_rate ({rollout.max_error_rate:g}) for 5 minutes."
                            ),
                        },
                    },
                    {
                        "alert": "ProdmlHighLatency",
                        "expr": f"{p99} > {p99_s:g}",
                        "for": "10m",
                        "labels": {"severity": "ticket"},
                        "annotations": {
                            "summary": "{{ $labels.job }}: p99 latency {{ $value | humanizeDuration }}",
                            "description": (
                                f"p99 above {p99_s * 1000:g} ms (rollout.max_p99_ms) for 10 minutes."
                            ),
                        },
                    },
                    {
                        "alert": "ProdmlDown",
                        "expr": f'up{{job="{job}"}} == 0',
                        "for": "2m",
                        "labels": {"severity": "page"},
                        "annotations": {"summary": "{{ $labels.instance }} does not answer /metrics"},
                    },
                    {
                        "alert": "ProdmlNoModelLoaded",
                        "expr": (
                            f'(up{{job="{job}"}} == 1)\n'
                            "unless on (instance)\n"
                            f'(max by (instance) (prodml_model_info{{job="{job}"}}) == 1)'
                        ),
                        "for": "5m",
                        "labels": {"severity": "page"},
                        "annotations": {
                            "summary": "{{ $labels.instance }} is up but serves no model (not ready)",
                            "description": (
                                "The model failed to load or could not be fetched and verified: check the "
                                "server's log for the registry or digest error."
                            ),
                        },
                    },
                ],
            }
        ]
    }


def _panel(
    pid: int, title: str, exprs: list[tuple[str, str]], *, unit: str, x: int, y: int, kind: str = "timeseries"
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def dashboard(settings: DeploySettings) -> dict[str, Any]:
    """Traffic, latency, errors, batch sizes, cache hits and the loaded version."""
    sel = '{job=~"$job"}'

    def quantile(q: float) -> str:
        rate = f"rate(prodml_request_seconds_bucket{sel}[$__rate_interval])"
        return f"histogram_quantile({q}, sum by (le) ({rate}))"

    panels = [
        _panel(
            1,
            "Traffic (requests/s by protocol)",
            [(f"sum by (protocol) (rate(prodml_requests_total{sel}[$__rate_interval]))", "{{protocol}}")],
            unit="reqps",
            x=0,
            y=0,
        ),
        _panel(
            2,
            "Latency",
            [(quantile(q), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)],
            unit="s",
            x=12,
            y=0,
        ),
        _panel(
            3,
            "Errors (share of requests; by kind)",
            [
                (
                    f'sum(rate(prodml_requests_total{{job=~"$job",code=~"{ERROR_CODES}"}}[$__rate_interval]))'
                    f" / clamp_min(sum(rate(prodml_requests_total{sel}[$__rate_interval])), 1e-9)",
                    "error ratio",
                ),
                (f"sum by (kind) (rate(prodml_errors_total{sel}[$__rate_interval]))", "{{kind}} /s"),
            ],
            unit="percentunit",
            x=0,
            y=8,
        ),
        _panel(
            4,
            "Batch sizes (rows per runtime call)",
            [
                (
                    f"sum(rate(prodml_batch_rows_sum{sel}[$__rate_interval]))"
                    f" / clamp_min(sum(rate(prodml_batch_rows_count{sel}[$__rate_interval])), 1e-9)",
                    "mean",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(prodml_batch_rows_bucket{sel}[$__rate_interval])))",
                    "p99",
                ),
                (f"sum(rate(prodml_rows_total{sel}[$__rate_interval]))", "rows/s"),
            ],
            unit="short",
            x=12,
            y=8,
        ),
        _panel(
            5,
            "Cache hit ratio",
            [
                (
                    f'sum(rate(prodml_cache_total{{job=~"$job",result="hit"}}[$__rate_interval]))'
                    f" / clamp_min(sum(rate(prodml_cache_total{sel}[$__rate_interval])), 1e-9)",
                    "hits",
                )
            ],
            unit="percentunit",
            x=0,
            y=16,
        ),
        _panel(
            6,
            "Loaded model version (replicas serving it)",
            [(f"sum by (model, version) (prodml_model_info{sel} == 1)", "{{model}} v{{version}}")],
            unit="short",
            x=12,
            y=16,
            kind="stat",
        ),
        _panel(
            7,
            "In-flight requests and model swaps",
            [
                (f"sum(prodml_inflight_requests{sel})", "in flight"),
                (f"sum(increase(prodml_model_swaps_total{sel}[$__rate_interval]))", "swaps"),
            ],
            unit="short",
            x=0,
            y=24,
        ),
    ]
    job = _job(settings)
    return {
        "uid": f"prodml-{settings.name}"[:40],
        "title": f"prodml: {settings.project.name}",
        "tags": ["prodml"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {
                    "name": "job",
                    "type": "custom",
                    "query": job,
                    "current": {"text": job, "value": job},
                    "options": [{"text": job, "value": job, "selected": True}],
                },
            ]
        },
        "panels": panels,
    }


def monitoring_files(settings: DeploySettings, targets: list[str]) -> Files:
    """``monitoring/``: Prometheus config, rules, the file-discovery targets and the Grafana dashboard."""
    return {
        "monitoring/prometheus.yml": to_yaml(scrape_config(settings)),
        "monitoring/rules.yml": to_yaml(rules(settings)),
        "monitoring/targets/prodml.json": to_json(
            [{"targets": targets, "labels": {"service": settings.name}}]
        ),
        "monitoring/grafana/dashboard.json": to_json(dashboard(settings)),
    }
