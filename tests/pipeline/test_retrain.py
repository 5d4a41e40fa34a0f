"""The drift → retrain → gate → challenger loop, with its cooldown, on the churn example and a real
MLflow store; and ``prodml monitor check --on-breach retrain`` through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from prodml.cli import app
from prodml.core.project import load_project
from prodml.pipeline.retrain import retrain
from prodml.pipeline.train import run_training
from prodml.registry.mlflow import Registry
from prodml.registry.promotion import promote
from tests.conftest import edit_project


def test_retrain_gates_the_candidate_and_honours_the_cooldown(churn_dir: Path, tmp_path: Path) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    edit_project(
        churn_dir,
        name="churn_rt",
        model__estimator="logistic_regression",
        model__params={},
        validation__folds=2,
    )
    project = load_project(churn_dir)
    first = run_training(project, tracking_uri=tracking)
    registry = Registry(tracking)
    promote(registry, project.promotion, "churn_rt", first.version.version)
    registry.cache_ref("churn_rt@champion", project.state_dir / "models")

    outcome = retrain(project, reason="drift in age", cooldown_s=3600, tracking_uri=tracking)
    assert outcome.status == "challenger", outcome.describe()
    assert outcome.version == "2" and outcome.verdict is not None and outcome.verdict.passed
    assert registry.alias_version("churn_rt", "challenger").version == "2"  # type: ignore[union-attr]
    assert registry.alias_version("churn_rt", "champion").version == "1"  # type: ignore[union-attr]
    assert registry.get("churn_rt", "2").tags["prodml.retrain.reason"] == "drift in age"

    # the passing version goes out as a canary with the project's rollout settings
    from prodml.cli.rollout import canary_retrained
    from prodml.registry.deployment import DeploymentStore

    store = DeploymentStore(registry, "churn_rt")
    out = canary_retrained(project, outcome, tracking)
    assert out.status == "canary" and "out as a canary" in out.describe()
    spec = store.current()
    assert spec.active and spec.role("canary").version == "2"  # type: ignore[union-attr]
    assert spec.role("canary").weight == project.rollout.steps[0]  # type: ignore[union-attr]
    assert store.events()[-1].why == "retrained: drift in age"
    twice = canary_retrained(project, outcome, tracking)  # one rollout at a time: it stays the challenger
    assert twice.status == "challenger" and "already running" in twice.describe()
    assert store.current().revision == spec.revision

    again = retrain(project, reason="drift in age", cooldown_s=3600, tracking_uri=tracking)
    assert again.status == "cooldown" and "cooldown" in again.describe()
    assert len(registry.versions("churn_rt")) == 2  # nothing trained

    # a breach reported through the CLI: exit 12, the retraining is skipped by the cooldown
    frame = pd.read_parquet(churn_dir / ".prodml/features/training.parquet")
    shifted = frame.copy()
    numeric = [c for c in shifted.columns if pd.api.types.is_float_dtype(shifted[c])][:3]
    for c in numeric:
        shifted[c] = shifted[c] * 3 + 5
    shifted.to_parquet(tmp_path / "shifted.parquet")
    result = CliRunner().invoke(
        app,
        [
            "--project",
            str(churn_dir),
            "monitor",
            "check",
            "--source",
            str(tmp_path / "shifted.parquet"),
            "--window",
            "100000",
            "--on-breach",
            "retrain",
        ],
        env={"PRODML_TRACKING_URI": tracking},
    )
    assert result.exit_code == 12, result.output
    assert "retrain: skipped" in result.stdout
    assert any(c in result.stderr for c in numeric)

    # after the cooldown, a candidate that fails the gate is trained, tagged and not given the alias
    edit_project(churn_dir, promotion__min=0.9999)
    strict = load_project(churn_dir)
    import time

    refused = retrain(
        strict, reason="drift", cooldown_s=3600, tracking_uri=tracking, now=lambda: time.time() + 7200
    )
    assert refused.status == "refused" and "gate refused" in refused.describe()
    assert registry.alias_version("churn_rt", "challenger").version == "2"  # type: ignore[union-attr]
    assert registry.get("churn_rt", "3").tags["prodml.retrain.gate"] == "refused"
    assert np.isfinite(refused.verdict.value)  # type: ignore[union-attr]
    assert canary_retrained(strict, refused, tracking) is refused  # a refused version is not canaried
    assert store.current().revision == spec.revision

    # through the CLI after the cooldown: a version that passes the gate, and a rollout already running
    edit_project(churn_dir, promotion__min=None)
    state = churn_dir / ".prodml/monitor/retrain.json"  # the last retraining long ago
    state.write_text(state.read_text().replace('"started": ', '"started": 0, "was": '))
    args = ["--project", str(churn_dir), "monitor", "check", "--source", str(tmp_path / "shifted.parquet")]
    again = CliRunner().invoke(
        app,
        [*args, "--window", "100000", "--on-breach", "retrain", "--cooldown", "1s"],
        env={"PRODML_TRACKING_URI": tracking},
    )
    assert again.exit_code == 12, again.output
    assert (
        "version 4 trained, passed the gate" in again.stdout
        and "no canary: a canary of version 2" in again.stdout
    )


def _log(project_dir: Path, records: list[dict], schema: dict, tag: str) -> None:  # type: ignore[type-arg]
    from prodml.serve.reqlog import RequestLog
    from prodml.serve.validation import NUMBERS, STRINGS

    numeric = tuple(c["name"] for c in schema["inputs"] if c["dtype"] == "float")
    strings = tuple(c["name"] for c in schema["inputs"] if c["dtype"] != "float")
    frame = pd.DataFrame.from_records(records)
    log = RequestLog(project_dir / ".prodml" / "requests")
    numbers = frame[list(numeric)].to_numpy(np.float32, na_value=np.nan)
    texts = frame[list(strings)].astype(str).to_numpy(object)
    p = np.full((len(frame), 2), 0.5, np.float32)
    for i in range(0, len(frame), 100):
        rows = slice(i, i + 100)
        log.record(
            f"{tag}{i}",
            "churn",
            "1",
            {NUMBERS: numbers[rows], STRINGS: texts[rows]},
            [p[rows]],
            1.0 + i,
            (numeric, strings),
        )
    log.flush()


def test_demo_step_sees_the_simulators_drift(churn_dir: Path) -> None:
    """The simulator's --drift traffic raises the alert; the training world itself replayed does not.

    (Another seed of this 400-customer world already differs from it: rows repeat each customer weekly,
    so the window holds ~400 independent customers, and their ages differ between seeds.)"""
    from prodml.data.sources import Catalog
    from prodml.export.profile import reference_profile
    from prodml.features.build import build_features
    from prodml.pipeline.retrain import drifted_rows, monitor_and_retrain

    project = load_project(churn_dir)
    frame, _ = build_features(Catalog(project))
    X = frame.table.select(frame.features).to_pandas()
    profile = reference_profile(X, frame.categorical, None)
    schema = {
        "inputs": [
            {"name": c, "dtype": "string" if c in frame.categorical else "float"} for c in frame.features
        ]
    }
    world = {"rows": 2_000, "seed": 3, "customers": 400, "days": 200}  # the fixture's world

    _log(churn_dir, drifted_rows(project, drift=0.0, **world), schema, "clean")
    clean = monitor_and_retrain(project, profile=profile, retrain_on_breach=False)
    assert clean.breached == [], clean.describe()

    (churn_dir / ".prodml" / "requests").rename(churn_dir / ".prodml" / "requests-clean")
    _log(churn_dir, drifted_rows(project, drift=1.0, **world), schema, "drift")
    drifted = monitor_and_retrain(project, profile=profile, retrain_on_breach=False)
    assert len(drifted.breached) >= 3, drifted.describe()
    assert drifted.report.is_file() and "drift alert on" in drifted.describe()
