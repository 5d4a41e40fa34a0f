"""`prodml train` and `prodml models` end to end, through the CLI, on the three example projects."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from prodml.cli import app
from prodml.data.examples import write_example
from tests.conftest import edit_project

runner = CliRunner()


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the module (creating its tables costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def run(tracking: str, *args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args], env={"PRODML_TRACKING_URI": tracking})


def versions(tracking: str, name: str) -> int:
    from prodml.registry.mlflow import Registry

    return len(Registry(tracking).versions(name))


def test_churn_train_promote_show_verify(churn_dir: Path, tracking: str) -> None:
    edit_project(churn_dir, name="churn_e2e", model__params={"max_iter": 60}, validation__folds=3)
    result = run(tracking, "--project", churn_dir, "train")
    assert result.exit_code == 0, result.output
    assert "roc_auc" in result.stdout
    assert "churn_e2e version 1" in result.stdout
    report = next((churn_dir / ".prodml/reports").glob("train-churn_e2e-v1.html")).read_text()
    assert report.count("<img") >= 5  # ROC, PR, calibration, confusion, importance, SHAP
    listed = run(tracking, "--project", churn_dir, "models", "list")
    assert listed.exit_code == 0
    assert "churn_e2e" in listed.stdout
    promoted = run(tracking, "--project", churn_dir, "models", "promote", "churn_e2e", "1")
    assert promoted.exit_code == 0, promoted.output
    shown = run(tracking, "--project", churn_dir, "models", "show", "churn_e2e@champion")
    assert shown.exit_code == 0
    assert "champion" in shown.stdout
    assert "model.onnx" in shown.stdout
    assert run(tracking, "--project", churn_dir, "models", "verify", "churn_e2e@champion").exit_code == 0
    # Tamper with the stored package: verify names the file and fails.
    from prodml.registry.mlflow import Registry

    mv = Registry(tracking).resolve("churn_e2e/1")
    stored = Path(mv.source.removeprefix("file://")) / "profile.json"
    stored.write_text(stored.read_text().replace("0", "1", 1))
    bad = run(tracking, "--project", churn_dir, "models", "verify", "churn_e2e/1")
    assert bad.exit_code == 9
    assert "profile.json does not match" in bad.stderr


def test_lineage_and_metrics_travel_with_the_package(churn_dir: Path, tracking: str, tmp_path: Path) -> None:
    from prodml.registry.mlflow import Registry

    edit_project(
        churn_dir,
        name="churn_lineage",
        model__estimator="logistic_regression",
        model__params={},
        validation__folds=2,
    )
    assert run(tracking, "--project", churn_dir, "train").exit_code == 0
    registry = Registry(tracking)
    package = registry.load(registry.resolve("churn_lineage"), tmp_path)
    frame_lineage = json.loads((churn_dir / ".prodml/features/training.lineage.json").read_text())
    assert package.lineage["data"]["hash"] == frame_lineage["hash"]
    assert package.lineage["packages"]["scikit-learn"]
    assert set(package.metrics["holdout"]) == {"roc_auc", "pr_auc", "f1", "log_loss", "brier"}
    assert package.metrics["parity"]["max_abs_diff"] < 1e-4
    assert [i["name"] for i in package.schema["inputs"]][:2] == [
        "sessions_count_7d",
        "sessions_duration_min_sum_7d",
    ]
    assert package.profile["features"]["plan"]["kind"] == "categorical"


@pytest.mark.parametrize(
    ("example", "metric", "floor"), [("breast-cancer", "roc_auc", 0.97), ("diabetes", "r2", 0.3)]
)
def test_sklearn_examples_train(
    tmp_path: Path, tracking: str, example: str, metric: str, floor: float
) -> None:
    write_example(tmp_path, example)  # type: ignore[arg-type]
    result = run(tracking, "--project", tmp_path, "train")
    assert result.exit_code == 0, result.output
    from prodml.registry.mlflow import Registry

    name = yaml.safe_load((tmp_path / "prodml.yaml").read_text())["name"]
    mv = Registry(tracking).resolve(name)
    assert float(mv.tags[f"prodml.metric.{metric}"]) > floor


def test_gate_refusal_and_forced_override(churn_dir: Path, tracking: str) -> None:
    edit_project(
        churn_dir,
        name="churn_gate",
        promotion={"metric": "roc_auc", "min": 0.999},
        model__params={"max_iter": 30},
        validation__folds=2,
    )
    assert run(tracking, "--project", churn_dir, "train").exit_code == 0
    refused = run(tracking, "--project", churn_dir, "models", "promote", "churn_gate", "1")
    assert refused.exit_code == 11
    assert "below the gate's minimum 0.9990" in refused.stderr
    no_reason = run(tracking, "--project", churn_dir, "models", "promote", "churn_gate", "1", "--force")
    assert no_reason.exit_code == 2
    forced = run(
        tracking,
        "--project",
        churn_dir,
        "models",
        "promote",
        "churn_gate",
        "1",
        "--force",
        "--reason",
        "launch demo",
    )
    assert forced.exit_code == 0, forced.output
    from prodml.registry.mlflow import Registry

    mv = Registry(tracking).resolve("churn_gate@champion")
    assert mv.tags["prodml.override.reason"] == "launch demo"


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        ({"model__estimator": "deep_forest"}, 2, "'deep_forest' is not a known estimator"),
        ({"model__params": {"n_trees": 5}}, 2, "does not take 'n_trees'"),
        ({"model__params": {"learning_rate": -1}}, 2, "learning_rate"),
        ({"contract__customers__columns__age": {"max": 30}}, 3, "breaks its contract"),
        ({"validation__folds": 1}, 2, "validation.folds"),
    ],
)
def test_bad_input_registers_nothing(
    churn_dir: Path, tracking: str, changes: dict[str, object], code: int, message: str
) -> None:
    edit_project(churn_dir, name="churn_bad", **changes)
    result = run(tracking, "--project", churn_dir, "train")
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert versions(tracking, "churn_bad") == 0


def test_constant_target_is_refused(churn_dir: Path, tracking: str) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    labels = pq.read_table(churn_dir / "data/labels.parquet")
    pq.write_table(
        labels.set_column(3, "churned", pc.multiply(labels.column("churned"), 0)),
        churn_dir / "data/labels.parquet",
    )
    edit_project(churn_dir, name="churn_const")
    result = run(tracking, "--project", churn_dir, "train")
    assert result.exit_code == 4
    assert "target 'churned' is constant" in result.stderr
    assert versions(tracking, "churn_const") == 0


def test_optuna_search_tracks_each_trial_as_a_child_run(churn_dir: Path, tracking: str) -> None:
    space = {"learning_rate": {"low": 0.02, "high": 0.3, "log": True}, "max_leaf_nodes": [7, 15]}
    edit_project(
        churn_dir,
        name="churn_tuned",
        validation__folds=2,
        model__params={"max_iter": 20},
        model__tune={"trials": 3, "space": space},
    )
    result = run(tracking, "--project", churn_dir, "train")
    assert result.exit_code == 0, result.output
    from prodml.registry.mlflow import Registry

    registry = Registry(tracking)
    mv = registry.resolve("churn_tuned")
    parent = registry.client.get_run(mv.run_id)
    children = registry.client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{mv.run_id}'"
    )
    assert len(children) == 3
    assert all("cv_roc_auc_mean" in c.data.metrics for c in children)
    best = max(children, key=lambda c: c.data.metrics["cv_roc_auc_mean"])
    assert parent.data.params["param.max_leaf_nodes"] == best.data.params["max_leaf_nodes"]
    assert parent.data.params["param.max_iter"] == "20"


def test_a_tune_metric_outside_the_computed_metrics_is_a_config_error(churn_dir: Path, tracking: str) -> None:
    edit_project(
        churn_dir,
        name="churn_tune_metric",
        model__tune={"trials": 2, "metric": "accuracy", "space": {"max_leaf_nodes": [7, 15]}},
    )
    result = run(tracking, "--project", churn_dir, "train")
    assert result.exit_code == 2, result.output
    # caught by the project-file check, before any data is read
    assert "model.tune.metric: 'accuracy' is not computed" in result.stderr


def test_metric_mismatches_are_refused_before_any_data_is_read(churn_dir: Path, tracking: str) -> None:
    (churn_dir / "data/labels.parquet").unlink()  # reading it would fail differently
    edit_project(churn_dir, name="churn_metrics", metrics=["rmse", "roc_auc"], promotion={"metric": "f1"})
    result = run(tracking, "--project", churn_dir, "train")
    assert result.exit_code == 2, result.output
    assert "metrics[0]: 'rmse' does not apply to task 'binary'" in result.stderr
    assert "promotion.metric: 'f1' is not computed" in result.stderr
    assert versions(tracking, "churn_metrics") == 0


def test_a_holdout_far_below_cross_validation_is_a_warning_in_output_and_report(
    tmp_path: Path, tracking: str
) -> None:
    import numpy as np
    import pyarrow as pa

    from tests.conftest import write_project

    # the label's relation to x flips in the latest 20% of time: the time-ordered holdout cannot be learnt
    rng = np.random.default_rng(0)
    n = 300
    x = rng.normal(size=n)
    late = np.arange(n) >= 240
    table = pa.table(
        {
            "id": np.arange(n),
            "at": pa.array(np.datetime64("2024-01-01") + np.arange(n).astype("timedelta64[D]")),
            "x": x,
            "y": np.where(late, x < 0, x > 0).astype(np.int64),
        }
    )
    text = (
        "name: drifting\nentity: id\nsources: {t: {path: data/t.parquet}}\n"
        "target: {source: t, column: y, timestamp: at}\n"
        "features: {attributes: [{source: t, columns: [x]}]}\n"
        "model: {estimator: logistic_regression}\nvalidation: {strategy: kfold, folds: 3, holdout: 0.2}\n"
    )
    write_project(tmp_path, text, {"t": table})
    result = run(tracking, "--project", tmp_path, "train")
    assert result.exit_code == 0, result.output
    assert "warning: holdout roc_auc" in result.stdout and "far below cross-validation" in result.stdout
    report = (tmp_path / ".prodml/reports/train-drifting-v1.html").read_text()
    assert "far below cross-validation" in report
