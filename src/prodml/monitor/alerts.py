"""Prometheus alert rules and a Grafana dashboard for the server's drift gauges (``prodml_drift_*``,
exported by :class:`prodml.export.drift.LiveSketch`).

The rules use the same thresholds as ``prodml monitor check`` (``Thresholds``): one rule per statistic
with the default, and one per feature that overrides it. ``promtool check rules`` accepts the file.

Example:
    >>> rules = alert_rules(Thresholds(psi=0.25), model="churn")
    >>> rules["groups"][0]["rules"][0]["alert"]
    'ProdmlFeatureDriftPSI'
"""

from __future__ import annotations

from typing import Any

import yaml

from prodml.export.drift import METRIC_PREFIX, PREDICTION, Thresholds

__all__ = ["alert_rules", "dashboard", "render_rules"]

_STATISTICS = {"psi": "PSI", "ks": "KS", "js": "JS"}


def _rule(
    alert: str,
    expr: str,
    summary: str,
    *,
    severity: str = "warning",
    for_: str = "5m",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "alert": alert,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **(labels or {})},
        "annotations": {"summary": summary, "runbook": "prodml monitor report --source requests"},
    }


def alert_rules(thresholds: Thresholds | None = None, *, model: str = "prodml") -> dict[str, Any]:
    """The rule groups (as a dict ready for YAML): drift per statistic, prediction drift, data quality,
    and the sketch's own health."""
    t = thresholds or Thresholds()
    overridden = dict(t.per_feature)
    rules: list[dict[str, Any]] = []
    for stat, title in _STATISTICS.items():
        default = getattr(t, stat)
        special = {f: o[stat] for f, o in overridden.items() if stat in o}
        exclude = "|".join([PREDICTION, *special])
        if default is not None:
            rules.append(
                _rule(
                    f"ProdmlFeatureDrift{title}",
                    f'{METRIC_PREFIX}_score{{statistic="{stat}",feature!~"{exclude}"}} > {default}',
                    f"{model}: feature {{{{ $labels.feature }}}} drifted "
                    f"({title} {{{{ $value }}}} > {default})",
                )
            )
        for feature, limit in special.items():
            if limit is not None and feature != PREDICTION:
                rules.append(
                    _rule(
                        f"ProdmlFeatureDrift{title}",
                        f'{METRIC_PREFIX}_score{{statistic="{stat}",feature="{feature}"}} > {limit}',
                        f"{model}: feature {feature} drifted ({title} {{{{ $value }}}} > {limit})",
                        labels={"threshold_of": feature},
                    )
                )
    prediction_psi = t.of(PREDICTION).psi
    if prediction_psi is not None:
        rules.append(
            _rule(
                "ProdmlPredictionDrift",
                f'{METRIC_PREFIX}_score{{statistic="psi",feature="{PREDICTION}"}} > {prediction_psi}',
                f"{model}: the prediction distribution drifted (PSI {{{{ $value }}}} > {prediction_psi})",
                severity="critical",
            )
        )
    for key, limit, what in (
        ("out_of_range", t.out_of_range, "values outside the training range"),
        ("unseen", t.unseen, "categories never seen in training"),
    ):
        if limit is not None:
            rules.append(
                _rule(
                    f"ProdmlDataQuality{key.title().replace('_', '')}",
                    f"{METRIC_PREFIX}_{key} > {limit}",
                    f"{model}: {{{{ $labels.feature }}}} has {{{{ $value | humanizePercentage }}}} {what}",
                )
            )
    rules.append(
        _rule(
            "ProdmlDriftSketchFailing",
            f"increase({METRIC_PREFIX}_sketch_errors_total[15m]) > 0",
            f"{model}: the drift sketch failed and stopped; serving is unaffected",
            for_="0m",
        )
    )
    rules.append(
        _rule(
            "ProdmlDriftNoWindow",
            f"increase({METRIC_PREFIX}_windows_total[6h]) == 0 and {METRIC_PREFIX}_pending_rows > 0",
            f"{model}: no drift window completed in 6 h (traffic too low for monitor.window_rows?)",
            severity="info",
            for_="30m",
        )
    )
    return {"groups": [{"name": f"prodml-drift-{model}", "rules": rules}]}


def render_rules(thresholds: Thresholds | None = None, *, model: str = "prodml") -> str:
    """:func:`alert_rules` as the YAML file Prometheus loads (``rule_files``)."""
    return yaml.safe_dump(alert_rules(thresholds, model=model), sort_keys=False, width=200)


def _panel(
    pid: int,
    title: str,
    expr: str,
    legend: str,
    x: int,
    y: int,
    *,
    unit: str = "short",
    threshold: float | None = None,
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if threshold is not None:
        steps.append({"color": "red", "value": threshold})
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "custom": {"thresholdsStyle": {"mode": "line" if threshold is not None else "off"}},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "right"}},
    }


def dashboard(thresholds: Thresholds | None = None, *, model: str = "prodml") -> dict[str, Any]:
    """A Grafana dashboard (JSON model, schema 39) of the drift gauges, with a Prometheus data source
    variable so it imports into any Grafana."""
    t = thresholds or Thresholds()
    p = METRIC_PREFIX
    panels = [
        _panel(
            1,
            "PSI per feature",
            f'{p}_score{{statistic="psi",feature!="{PREDICTION}"}}',
            "{{feature}}",
            0,
            0,
            threshold=t.psi,
        ),
        _panel(
            2, "KS distance per feature", f'{p}_score{{statistic="ks"}}', "{{feature}}", 12, 0, threshold=t.ks
        ),
        _panel(
            3,
            "Prediction drift (PSI)",
            f'{p}_score{{statistic="psi",feature="{PREDICTION}"}}',
            "prediction",
            0,
            8,
            threshold=t.of(PREDICTION).psi,
        ),
        _panel(4, "Features breaking a threshold", f"sum({p}_breach)", "breaches", 12, 8),
        _panel(
            5,
            "Out-of-range share",
            f"{p}_out_of_range",
            "{{feature}}",
            0,
            16,
            unit="percentunit",
            threshold=t.out_of_range,
        ),
        _panel(
            6,
            "Unseen categories share",
            f"{p}_unseen",
            "{{feature}}",
            12,
            16,
            unit="percentunit",
            threshold=t.unseen,
        ),
        _panel(7, "Null rate", f"{p}_null_rate", "{{feature}}", 0, 24, unit="percentunit"),
        _panel(
            8,
            "Windows scored / rows pending",
            f"rate({p}_windows_total[15m]) * 900",
            "windows per 15 min",
            12,
            24,
        ),
    ]
    panels[-1]["targets"].append({"refId": "B", "expr": f"{p}_pending_rows", "legendFormat": "pending rows"})
    return {
        "title": f"prodml drift: {model}",
        "uid": f"prodml-drift-{model}"[:40],
        "tags": ["prodml", "drift"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "1m",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
            ]
        },
        "panels": panels,
    }
