"""The canary's task metric against the primary's once feedback labels exist: on a real request log
(Parquet, joined with feedback), and as a rollback by the controller against two real replicas."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from prodml.rollout.abtest import metric_check
from prodml.serve.reqlog import RequestLog, join_feedback
from prodml.serve.validation import NUMBERS
from tests.rollout.conftest import Replicas, Versions, load, reset

LAYOUT = (("a", "b"), ())


def labelled(tmp_path: Path, rows: dict[str, list[tuple[float, float]]], ts: float = 1.0) -> pa.Table:
    """A request log with one labelled 1-row request per (P(positive) or value, label) of each variant."""
    log = RequestLog(tmp_path)
    feeds = {NUMBERS: np.array([[1.0, 2.0]], np.float32)}
    for variant, pairs in rows.items():
        for i, (score, label) in enumerate(pairs):
            rid = f"{variant}-{i}"
            output = np.array([[1 - score, score]], np.float32)
            log.record(
                rid, "churn", "1" if variant == "primary" else "2", feeds, [output], ts, LAYOUT, variant
            )
            log.feedback(rid, label)
    log.flush()
    return join_feedback(tmp_path)


def test_a_canary_whose_accuracy_trails_fails_and_too_few_labels_give_no_verdict(tmp_path: Path) -> None:
    right = [(0.9, 1.0), (0.1, 0.0)] * 30  # accuracy 1.0
    half = [(0.9, 1.0), (0.9, 0.0)] * 30  # accuracy 0.5
    table = labelled(tmp_path / "a", {"primary": right, "canary": half})
    check = {"canary": "canary", "primary": "primary", "metric": "accuracy", "min_labels": 20}
    reason, evidence = metric_check(table, max_drop=0.1, **check)  # type: ignore[arg-type]
    assert reason is not None and "accuracy 0.5000 is lower than the primary's 1.0000" in reason
    assert evidence["drop"] == pytest.approx(0.5) and evidence["labelled"] == {"primary": 60, "canary": 60}
    assert metric_check(table, max_drop=0.6, **check)[0] is None  # type: ignore[arg-type]

    few, evidence = metric_check(table, max_drop=0.1, **{**check, "min_labels": 100})  # type: ignore[arg-type]
    assert few is None and "fewer than 100 labelled rows" in evidence["skipped"]
    later, evidence = metric_check(table, max_drop=0.1, since=2.0, **check)  # type: ignore[arg-type]
    assert later is None and evidence["labelled"] == {"primary": 0, "canary": 0}  # logged before it started


def test_a_regressor_is_compared_on_its_mean_absolute_error(tmp_path: Path) -> None:
    table = labelled(tmp_path, {"primary": [(0.5, 0.5)] * 30, "canary": [(0.9, 0.5)] * 30})
    reason, evidence = metric_check(
        table, canary="canary", primary="primary", metric="error", max_drop=0.2, min_labels=10
    )
    assert reason is not None and "error" in reason and "higher" in reason
    assert evidence["drop"] == pytest.approx(0.4, abs=1e-6)


@pytest.mark.integration
def test_the_controller_rolls_back_a_canary_whose_task_metric_trails(
    versions: Versions, replicas: Replicas, tmp_path: Path
) -> None:
    from prodml.rollout.analysis import Checks
    from prodml.rollout.controller import CanaryPlan, Controller, start_canary

    reset(versions)
    replicas.reload()
    checks = Checks(
        max_error_rate=0.5, min_requests=5, max_metric_drop=0.05, metric="accuracy", min_labels=20
    )
    plan = CanaryPlan((50.0, 100.0), 1.5, checks, 1, tuple(replicas.urls), tuple(replicas.admin_urls))
    store = versions.store()
    start_canary(store, "2", plan, why="test: a canary that predicts worse")
    right, wrong = [(0.9, 1.0), (0.1, 0.0)] * 20, [(0.9, 0.0), (0.1, 1.0)] * 20
    log = labelled(tmp_path, {"primary": right, "canary": wrong}, ts=time.time())
    with load(replicas, versions.rows) as running:  # the canary is healthy on every other check
        final = Controller(store, labelled_log=lambda: log).run()
    assert set(running.statuses) == {200}
    assert final is not None and final.rollout is not None and final.rollout["status"] == "rolled back"
    event = store.events()[-1]
    assert "accuracy" in event.why and event.evidence["task_metric"]["drop"] == pytest.approx(1.0)
    assert store.registry.alias_version(versions.name, "champion").version == "1"  # type: ignore[union-attr]
    reset(versions)
