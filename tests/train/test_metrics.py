import numpy as np
import pytest
from sklearn import metrics as skm

from prodml.core.errors import ConfigError
from prodml.train.metrics import compute, default_metrics, map_at_k, ndcg_at_k, recall_at_k

rng = np.random.default_rng(0)
Y = rng.integers(0, 2, 200)
P = np.clip(Y * 0.3 + rng.random(200) * 0.7, 0, 1)


def test_binary_metrics_match_scikit_learn() -> None:
    got = compute(
        "binary",
        ["roc_auc", "pr_auc", "f1", "log_loss", "brier", "accuracy", "precision", "recall"],
        Y,
        P,
        threshold=0.6,
    )
    labels = (P >= 0.6).astype(int)
    assert got == pytest.approx(
        {
            "roc_auc": skm.roc_auc_score(Y, P),
            "pr_auc": skm.average_precision_score(Y, P),
            "f1": skm.f1_score(Y, labels),
            "log_loss": skm.log_loss(Y, P),
            "brier": skm.brier_score_loss(Y, P),
            "accuracy": skm.accuracy_score(Y, labels),
            "precision": skm.precision_score(Y, labels),
            "recall": skm.recall_score(Y, labels),
        }
    )


def test_binary_by_hand() -> None:
    y, p = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]
    got = compute("binary", ["roc_auc", "f1", "brier"], y, p)
    assert got["roc_auc"] == 0.75  # 3 of the 4 (negative, positive) pairs are ordered right
    assert got["f1"] == 0.5  # tp=1, fp=1, fn=1
    assert got["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)


def test_multiclass_and_regression() -> None:
    y = np.array([0, 1, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    got = compute("multiclass", ["macro_f1", "weighted_f1", "accuracy", "log_loss"], y, proba)
    pred = proba.argmax(axis=1)
    assert got["accuracy"] == 0.5
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert got["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    reg = compute("regression", ["mse", "rmse", "mae", "r2"], [1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    assert reg == pytest.approx({"mse": 4 / 3, "rmse": (4 / 3) ** 0.5, "mae": 2 / 3, "r2": 1 - 4 / 2})


def test_ranking_metrics_by_hand() -> None:
    # query a: relevant items ranked 1st and 3rd; query b: its only relevant item ranked 2nd.
    y = np.array([1, 0, 1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.9, 0.5, 0.1])
    g = np.array(["a", "a", "a", "b", "b", "b"])
    assert map_at_k(y, s, g, k=3) == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)
    assert recall_at_k(y, s, g, k=1) == pytest.approx((1 / 2 + 0) / 2)
    ndcg_a = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    ndcg_b = (1 / np.log2(3)) / 1
    assert ndcg_at_k(y, s, g, k=3) == pytest.approx((ndcg_a + ndcg_b) / 2)
    assert compute("ranking", ["map_at_k"], y, s, group=g, k=3)["map_at_k"] == pytest.approx(
        map_at_k(y, s, g, k=3)
    )


def test_metric_that_does_not_fit_the_task() -> None:
    with pytest.raises(ConfigError, match="'rmse' does not apply to task 'binary'"):
        compute("binary", ["rmse"], Y, P)
    with pytest.raises(ConfigError, match="'auc' is not a metric"):
        compute("binary", ["auc"], Y, P)
    assert default_metrics("regression")[0] == "rmse"


def test_a_holdout_without_a_rare_class_is_scored_on_the_full_label_set() -> None:
    # four classes from training; the rows scored hold only classes 0 and 1
    y = np.array([0, 1, 0, 1, 1, 0])
    p = np.array(
        [[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1]] * 1
        + [[0.1, 0.5, 0.2, 0.2], [0.5, 0.3, 0.1, 0.1]]
    )
    got = compute("multiclass", ["log_loss", "roc_auc_ovr", "macro_f1", "accuracy"], y, p)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=[0, 1, 2, 3]))
    # classes 2 and 3 never occur, so their one-vs-rest AUC is undefined and left out of the mean
    assert got["roc_auc_ovr"] == pytest.approx(
        np.mean([skm.roc_auc_score(y == 0, p[:, 0]), skm.roc_auc_score(y == 1, p[:, 1])])
    )
    assert got["accuracy"] == 1.0


def test_binary_rows_of_one_class_give_nan_not_an_exception() -> None:
    got = compute("binary", ["roc_auc", "pr_auc", "log_loss", "f1"], [1, 1, 1], [0.9, 0.8, 0.4])
    assert np.isnan(got["roc_auc"]) and np.isnan(got["pr_auc"])
    assert got["log_loss"] == pytest.approx(skm.log_loss([1, 1, 1], [0.9, 0.8, 0.4], labels=[0, 1]))
    assert got["f1"] == pytest.approx(0.8)
