"""Performance on delayed labels: the weighted metric forms equal scikit-learn's, intervals cover."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from prodml.export.drift import PREDICTION
from prodml.monitor.performance import bootstrap, performance, weighted_metric
from prodml.monitor.windows import Window

TOL = 1e-9


@pytest.fixture
def binary() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    p = np.round(rng.random(800), 2)  # rounded: many ties, which AUC and AP must treat as sklearn does
    y = (rng.random(800) < p).astype(np.float64)
    return y, p


def test_weighted_binary_metrics_equal_sklearn(binary: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = binary
    ones = np.ones((1, len(y)))
    label = (p >= 0.5).astype(int)
    expected = {
        "roc_auc": skm.roc_auc_score(y, p),
        "pr_auc": skm.average_precision_score(y, p),
        "f1": skm.f1_score(y, label),
        "precision": skm.precision_score(y, label),
        "recall": skm.recall_score(y, label),
        "accuracy": skm.accuracy_score(y, label),
        "log_loss": skm.log_loss(y, p),
        "brier": skm.brier_score_loss(y, p),
    }
    for name, value in expected.items():
        got = weighted_metric(name, y, p, ones)
        assert got is not None and got[0] == pytest.approx(value, abs=TOL), name


def test_weighted_metrics_with_repeat_weights_equal_sklearn_on_the_resample(
    binary: tuple[np.ndarray, np.ndarray],
) -> None:
    y, p = binary
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(y), len(y))
    w = np.bincount(idx, minlength=len(y))[None].astype(float)
    assert weighted_metric("roc_auc", y, p, w)[0] == pytest.approx(skm.roc_auc_score(y[idx], p[idx]), abs=TOL)  # type: ignore[index]
    assert weighted_metric("pr_auc", y, p, w)[0] == pytest.approx(  # type: ignore[index]
        skm.average_precision_score(y[idx], p[idx]), abs=TOL
    )


def test_regression_and_multiclass_forms() -> None:
    rng = np.random.default_rng(2)
    y, p = rng.normal(size=300), rng.normal(size=300)
    ones = np.ones((1, 300))
    assert weighted_metric("rmse", y, p, ones)[0] == pytest.approx(
        np.sqrt(skm.mean_squared_error(y, p)), abs=TOL
    )  # type: ignore[index]
    assert weighted_metric("mae", y, p, ones)[0] == pytest.approx(skm.mean_absolute_error(y, p), abs=TOL)  # type: ignore[index]
    assert weighted_metric("r2", y, p, ones)[0] == pytest.approx(skm.r2_score(y, p), abs=TOL)  # type: ignore[index]
    probs = rng.dirichlet([1, 1, 1], 300)
    k = rng.integers(0, 3, 300).astype(float)
    assert weighted_metric("log_loss", k, probs, ones)[0] == pytest.approx(  # type: ignore[index]
        skm.log_loss(k, probs, labels=[0, 1, 2]), abs=1e-9
    )
    assert weighted_metric("accuracy", k, probs, ones)[0] == pytest.approx(
        skm.accuracy_score(k, probs.argmax(1))
    )  # type: ignore[index]
    assert weighted_metric("macro_f1", k, probs, ones) is None


def test_intervals_cover_the_truth_and_shrink_with_rows() -> None:
    rng = np.random.default_rng(3)
    widths = []
    for n in (400, 6_400):
        p = rng.random(n)
        y = (rng.random(n) < p).astype(float)
        low, high = bootstrap(["brier"], y, p)["brier"]
        assert low < 1 / 6 < high  # E[(p − y)²] for p ~ U(0, 1), y ~ Bernoulli(p)
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5


def test_performance_per_window_and_version() -> None:
    rng = np.random.default_rng(4)
    p = rng.random(600)
    frame = pd.DataFrame(
        {PREDICTION: p, "label": (rng.random(600) < p).astype(float), "version": ["1"] * 300 + ["2"] * 300}
    )
    frame.loc[:99, "label"] = np.nan  # labels not arrived yet
    points = performance([Window("w", frame)], "binary", ["roc_auc", "brier"])
    got = {(q.version, q.metric): q for q in points}
    assert set(got) == {("1", "roc_auc"), ("1", "brier"), ("2", "roc_auc"), ("2", "brier")}
    assert got[("1", "roc_auc")].rows == 200 and got[("2", "roc_auc")].rows == 300
    for q in points:
        assert q.low <= q.value <= q.high
