"""The trainer on awkward data: rare classes, unlabelled rows, dates, a holdout far below CV."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from prodml.core.errors import ConfigError, DataError
from prodml.core.project import Project
from prodml.features.offline import TrainingFrame
from prodml.train.trainer import holdout_gap_warnings, iso_dates, predict, train

rng = np.random.default_rng(0)
N = 120


def project(task: str, **validation: object) -> Project:
    return Project.model_validate(
        {
            "name": "t",
            "task": task,
            "sources": {"t": {"path": "x"}},
            "target": {"source": "t", "column": "y"},
            "model": {"estimator": "logistic_regression"},
            "validation": {"folds": 3, **validation},
        }
    )


def frame(y: list[object] | np.ndarray, **extra: pa.Array) -> TrainingFrame:
    x = rng.normal(size=len(y))
    table = pa.table({"x": x, "odd name/with.dots": rng.normal(size=len(y)), **extra, "y": y})
    features = [c for c in table.column_names if c != "y"]
    dates = [c for c in extra if pa.types.is_date(table.schema.field(c).type)]
    return TrainingFrame(table, features, [], dates=dates)


def with_rare(n_rare: int) -> np.ndarray:
    y = rng.choice(np.array(["cat", "dog", "eel"], dtype=object), N)
    y[:n_rare] = "rare"
    return y


def test_a_class_rarer_than_the_folds_is_refused_before_stratified_training() -> None:
    with pytest.raises(ConfigError, match=r"class\(es\) 'rare' \(1 row\) have fewer training rows") as info:
        train(project("multiclass", holdout=0.0), frame(with_rare(1)))
    assert "validation.strategy: kfold" in (info.value.hint or "")


def test_with_plain_folds_a_rare_class_warns_and_every_metric_computes() -> None:
    result = train(project("multiclass", strategy="kfold", holdout=0.25), frame(with_rare(2)))
    assert any("'rare'" in w and "fewer training rows" in w for w in result.warnings)
    assert result.classes == ["cat", "dog", "eel", "rare"]
    for scores in [*result.cv.values(), list(result.holdout.values())]:
        assert np.isfinite(scores).all()
    assert result.pred_holdout.shape[1] == 4


def test_predict_spreads_a_models_classes_onto_the_full_label_set() -> None:
    from sklearn.linear_model import LogisticRegression

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    model = LogisticRegression().fit(X, [0, 0, 2, 2])  # never saw class 1 (or 3)
    proba = predict(model, X, "multiclass", 4)
    assert proba.shape == (4, 4)
    assert (proba[:, [1, 3]] == 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_unlabelled_rows_are_refused_with_the_fix() -> None:
    y = rng.integers(0, 2, N).astype(float)
    y[:3] = np.nan
    with pytest.raises(DataError, match="3 missing value") as info:
        train(project("binary"), frame(y))
    assert "target.drop_missing: true" in (info.value.hint or "")


def test_dates_reach_the_model_as_iso_strings_and_become_parts() -> None:
    days = pa.array(np.datetime64("2024-01-01") + np.arange(N).astype("timedelta64[D]"))
    weekend = ((np.arange(N) + 0) % 7 >= 5).astype(int)  # 2024-01-01 was a Monday
    result = train(project("binary", strategy="kfold", holdout=0.2), frame(weekend, day=days))
    assert result.dates == ["day"]
    assert result.X_train["day"].iloc[0] == "2024-01-01T00:00:00"
    assert result.holdout["roc_auc"] > 0.99  # day of week is a feature


def test_iso_dates_keep_wall_clock_and_mark_missing() -> None:
    values = pd.Series(pd.to_datetime(["2024-03-15 10:30", None]))
    assert iso_dates(values).tolist() == ["2024-03-15T10:30:00", ""]


def test_a_holdout_far_below_cross_validation_is_flagged() -> None:
    timed = Project.model_validate(
        {
            "name": "t",
            "task": "binary",
            "sources": {"t": {"path": "x"}},
            "target": {"source": "t", "column": "y", "timestamp": "ts"},
            "entity": "id",
        }
    )
    cv = {"roc_auc": [0.91, 0.9, 0.92]}
    (warning,) = holdout_gap_warnings(timed, cv, {"roc_auc": 0.62})
    assert "far below cross-validation's 0.9100" in warning and "op: date" in warning
    assert holdout_gap_warnings(timed, cv, {"roc_auc": 0.89}) == []
    losses = project("regression")
    losses.promotion.metric = "rmse"
    (worse,) = holdout_gap_warnings(losses, {"rmse": [10.0, 11.0, 10.5]}, {"rmse": 19.0})
    assert "far above" in worse
