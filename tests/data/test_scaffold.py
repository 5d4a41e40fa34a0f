"""``prodml init --from``: a table's columns get roles with reasons, and the file it writes loads."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prodml.core.errors import ConfigError, DataError
from prodml.core.project import load_project
from prodml.data.scaffold import plan_project, scaffold
from tests.data.tables import accounts, rentals, species, write_csv


def roles(plan) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c.name: c.role + (f" {c.transform['op']}" if c.transform else "") for c in plan.columns}


def test_regression_with_unlabelled_rows_and_a_date(tmp_path: Path) -> None:
    path, plan = scaffold(tmp_path / "p", write_csv(rentals(), tmp_path / "rentals.csv"), target="rentals")
    assert plan.task == "regression"
    assert plan.unlabelled > 0
    assert roles(plan) == {
        "day": "feature date",
        "season": "feature onehot",
        "temp": "feature",
        "humidity": "feature",
    }
    project = load_project(path, environ={})
    assert project.target.drop_missing
    assert project.sources["rentals"].path == "../rentals.csv"
    assert project.promotion.metric == "r2" and project.promotion.min == 0.0
    assert project.contract["rentals"].columns["rentals"].nullable
    text = path.read_text()
    assert f"drop_missing: true               # {plan.unlabelled} row(s) have no label" in text
    assert (tmp_path / "p/.gitignore").exists()


def test_multiclass_keeps_awkward_names_and_plans_for_a_rare_class(tmp_path: Path) -> None:
    table = tmp_path / "species.parquet"
    pq.write_table(species(), table)
    path, plan = scaffold(tmp_path / "p", table, target="species")
    assert plan.task == "multiclass"
    assert plan.classes == ["Adélie", "Chinstrap", "Gentoo", "Rockhopper"]
    # 4 Rockhopper rows: the stratified holdout leaves ~3 for training, so 3 stratified folds
    assert (plan.strategy, plan.folds) == ("stratified", 3)
    project = load_project(path, environ={})
    assert project.features.attributes[0].columns == [
        "bill length/mm",
        "flipper length (mm)",
        "body.mass g",
        "île",
    ]
    assert project.promotion.metric == "accuracy"
    assert 0.25 < (project.promotion.min or 0) < 0.5  # the most frequent class's share
    assert "roc_auc_ovr" in project.metrics


def test_binary_leaves_out_id_like_and_high_cardinality_columns(tmp_path: Path) -> None:
    table = accounts().append_column("comment", pa.array([f"note {i % 120}" for i in range(240)]))
    plan = plan_project(write_csv(table, tmp_path / "a.csv"), "churned")
    assert plan.task == "binary" and plan.classes == ["no", "yes"]
    got = roles(plan)
    assert got["account_id"] == got["email"] == "left out"
    assert got["comment"] == "left out"
    why = {c.name: c.why for c in plan.columns}
    assert why["account_id"].startswith("ID-like") and "high-cardinality" in why["comment"]
    assert got["plan"] == "feature onehot"
    assert plan.contract["id_column"] == "account_id"


def test_timestamp_is_the_label_time_and_a_seasonal_feature(tmp_path: Path) -> None:
    path, plan = scaffold(
        tmp_path / "p", write_csv(rentals(), tmp_path / "r.csv"), target="rentals", timestamp="day"
    )
    day = next(c for c in plan.columns if c.name == "day")
    assert day.transform == {"column": "day", "op": "date", "parts": ["month", "dayofweek", "dayofyear"]}
    project = load_project(path, environ={})
    assert project.target.timestamp == "day"


def test_task_override_and_clear_errors(tmp_path: Path) -> None:
    csv = write_csv(accounts(), tmp_path / "a.csv")
    assert plan_project(csv, "tenure_months").task == "regression"
    assert plan_project(csv, "tenure_months", task="multiclass").task == "multiclass"
    with pytest.raises(ConfigError, match="--target 'churn'") as info:
        plan_project(csv, "churn")
    assert "did you mean 'churned'" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="not a date or timestamp"):
        plan_project(csv, "churned", timestamp="plan")
    with pytest.raises(ConfigError, match="--task"):
        plan_project(csv, "churned", task="clustering")
    constant = write_csv(pa.table({"x": [1.0, 2.0, 3.0], "y": [1, 1, 1]}), tmp_path / "c.csv")
    with pytest.raises(DataError, match="at least two"):
        plan_project(constant, "y")
    scaffold(tmp_path / "p", csv, target="churned")
    with pytest.raises(ConfigError, match="already exists"):
        scaffold(tmp_path / "p", csv, target="churned")
    with pytest.raises(ConfigError, match="no such file"):
        scaffold(tmp_path / "q", tmp_path / "nope.csv", target="churned")
