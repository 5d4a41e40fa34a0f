"""An A/B test's report from the request log joined with feedback labels (``serve.reqlog.join_feedback``).

Per arm (the log's ``variant`` column): labelled rows, the metric with its interval, and B against A with
the test that suits the metric — ``accuracy`` (a rate: two-proportion z), ``error`` (mean absolute error:
Welch t) or ``auc`` (bootstrap) — the rows per arm still needed to detect ``effect``, and a
recommendation. Binary classifiers are scored on P(positive) (threshold 0.5), regressors on the value.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from prodml.core.errors import DataError
from prodml.export.drift import prediction_score
from prodml.rollout import stats

if TYPE_CHECKING:
    from prodml.registry.deployment import Deployment, DeploymentStore
    from prodml.rollout.controller import CanaryPlan

__all__ = ["METRICS", "ab_report", "metric_check", "start_ab"]

METRICS = ("accuracy", "error", "auc")


def _arm(table: pa.Table, variant: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [
        r for r in table.select(["variant", "prediction", "label"]).to_pylist() if r["variant"] == variant
    ]
    labelled = [r for r in rows if r["label"] is not None]
    if not labelled:
        return np.zeros(0), np.zeros(0)
    outputs = np.asarray([np.asarray(r["prediction"], np.float64).ravel() for r in labelled])
    return np.asarray([r["label"] for r in labelled], np.float64), prediction_score(outputs)


def ab_report(
    table: pa.Table,
    a: str,
    b: str,
    *,
    metric: str = "accuracy",
    effect: float = 0.02,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, Any]:
    """Arm ``b`` against arm ``a`` on the labelled rows of ``table`` (see the module's docstring).

    Raises:
        DataError: an unknown metric, or an arm without labelled rows.
    """
    if metric not in METRICS:
        raise DataError(f"unknown A/B metric {metric!r}", hint=f"use one of {', '.join(METRICS)}")
    arms = {name: _arm(table, name) for name in (a, b)}
    for name, (labels, _) in arms.items():
        if len(labels) < 2:
            raise DataError(
                f"arm {name!r} has {len(labels)} labelled rows in the request log",
                hint="send feedback labels (POST /v2/models/NAME/feedback) for its requests first",
            )
    (ya, sa), (yb, sb) = arms[a], arms[b]
    if metric == "accuracy":
        hits_a, hits_b = int(((sa >= 0.5) == (ya > 0.5)).sum()), int(((sb >= 0.5) == (yb > 0.5)).sum())
        comparison = stats.two_proportions(hits_a, len(ya), hits_b, len(yb))
        intervals = [stats.proportion_interval(hits_a, len(ya)), stats.proportion_interval(hits_b, len(yb))]
        base = min(max(comparison.a, 1e-6), 1 - 1e-6)
        try:
            needed = stats.sample_size_proportions(
                base, effect if base + effect < 1 else -effect, alpha, power
            )
        except ValueError:
            needed = None
        better = comparison.difference > 0
    elif metric == "error":
        ea, eb = np.abs(sa - ya), np.abs(sb - yb)
        comparison = stats.welch(ea, eb)
        intervals = [stats.mean_interval(ea), stats.mean_interval(eb)]
        sd = float(np.sqrt((ea.var(ddof=1) + eb.var(ddof=1)) / 2)) or 1e-12
        needed = stats.sample_size_means(sd, effect, alpha, power)
        better = comparison.difference < 0  # a lower error is better
    else:
        comparison = stats.bootstrap_auc(ya, sa, yb, sb)
        intervals = [(comparison.a, comparison.a), (comparison.b, comparison.b)]
        needed = None  # no closed form for the AUC: run until the interval excludes 0
        better = comparison.difference > 0
    have = min(len(ya), len(yb))
    if comparison.significant(alpha):
        recommendation = f"promote {b}" if better else f"keep {a}"
    elif needed is not None and have < needed:
        recommendation = f"continue: {needed - have} more labelled rows per arm for an effect of {effect}"
    else:
        recommendation = f"no significant difference: keep {a}"
    return {
        "metric": metric,
        "test": comparison.test,
        "arms": {
            name: {"labelled": len(arms[name][0]), "value": value, "low": low, "high": high}
            for name, value, (low, high) in zip((a, b), (comparison.a, comparison.b), intervals, strict=True)
        },
        "difference": comparison.difference,
        "low": comparison.low,
        "high": comparison.high,
        "statistic": comparison.statistic,
        "p_value": comparison.p_value,
        "needed_per_arm": needed,
        "recommendation": recommendation,
    }


def metric_check(
    table: pa.Table,
    *,
    canary: str,
    primary: str,
    metric: str,
    max_drop: float,
    min_labels: int,
    since: float = 0.0,
) -> tuple[str | None, dict[str, Any]]:
    """The canary's task metric against the primary's on the labelled rows logged since ``since``: a
    reason when it is worse by more than ``max_drop`` (accuracy lower, mean absolute error higher), and
    the evidence. Fewer than ``min_labels`` labelled rows in either variant is no verdict (labels
    arrive late): the evidence says so and there is no reason."""
    if "ts" in table.column_names and since:
        import pyarrow.compute as pc

        table = table.filter(pc.greater_equal(table.column("ts"), since))
    have = {name: len(_arm(table, name)[0]) for name in (primary, canary)}
    evidence: dict[str, Any] = {"metric": metric, "labelled": have}
    least = max(min_labels, 2)  # ab_report needs two per arm
    if min(have.values()) < least:
        evidence["skipped"] = f"fewer than {least} labelled rows per variant"
        return None, evidence
    report = ab_report(table, primary, canary, metric=metric)
    drop = report["difference"] if metric == "error" else -report["difference"]
    evidence |= {"primary": report["arms"][primary]["value"], "canary": report["arms"][canary]["value"]}
    evidence["drop"] = round(drop, 6)
    if drop > max_drop:
        worse = "higher" if metric == "error" else "lower"
        return (
            f"canary {metric} {report['arms'][canary]['value']:.4f} is {worse} than the primary's "
            f"{report['arms'][primary]['value']:.4f} by more than {max_drop:g}",
            evidence,
        )
    return None, evidence


def start_ab(
    store: DeploymentStore,
    version: str,
    *,
    split: float,
    field: str | None = None,
    header: str | None = None,
    why: str,
    admin_urls: Sequence[str] = (),
    guardrail: CanaryPlan | None = None,
) -> Deployment:
    """Split requests between the primary (arm ``a``, role primary) and ``version`` (arm ``b``, role
    arm, ``split`` percent), sticky by the request ``field`` or ``header`` (random without either).

    The test is a rollout (one at a time): ``promote`` ends it with ``version`` as the champion, ``abort``
    with the primary. With ``guardrail`` (its checks, window, failures in a row and replicas) the
    controller (``prodml rollout run``) ends it early when arm b breaks the error-rate or p99 checks.

    Raises:
        ConfigError: a rollout is in progress, the version already serves, or the split is out of range.
    """
    from prodml.core.errors import ConfigError
    from prodml.registry.deployment import Stickiness, Variant
    from prodml.rollout.controller import notify

    if not 0 < split < 100:
        raise ConfigError(
            f"--split {split:g}: give a share strictly between 0 and 100", hint="e.g. --split 50"
        )
    spec = store.current()
    if spec.active:
        raise ConfigError("a rollout is in progress", hint="finish it first: prodml rollout status")
    primary = spec.primary
    if version == primary.version:
        raise ConfigError(f"version {version} is the primary already", hint="test another version")
    shadows = tuple(v for v in spec.variants if v.role == "shadow" and v.version != version)
    arms = (replace(primary, name="a", weight=100 - split), Variant("b", version, split, "arm"), *shadows)
    rollout = {
        "kind": "ab",
        "version": version,
        "from_version": primary.version,
        "failures": 0,
        "status": "running",
        "started_at": time.time(),
    }
    analysis = {**(guardrail.to_dict() if guardrail else {}), "admin_urls": list(admin_urls)}
    stored = store.write(
        replace(
            spec,
            variants=arms,
            stickiness=Stickiness(field=field, header=header),
            rollout=rollout,
            analysis=analysis,
        ),
        action=f"A/B of version {version} at {split:g}%",
        why=why,
        expect_revision=None if store.read() is None else spec.revision,
    )
    notify(admin_urls)
    return stored
