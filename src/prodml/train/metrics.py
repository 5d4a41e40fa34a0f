"""Metrics by task, each a plain function of (y_true, prediction) with a documented direction.

Binary metrics take the positive-class probability; multiclass ones the class-probability matrix
``(n, k)``; regression ones the prediction; ranking ones the score plus the query group of each row.

The label set comes from training, not from the rows scored: a multiclass matrix has one column per class
seen in training, so log-loss and ROC-AUC compute on a fold or holdout that lacks a rare class. A metric
that is undefined on the rows given (ROC-AUC when they hold one class) is NaN, never an exception.

Example:
    >>> compute("binary", ["roc_auc", "f1"], [0, 1, 1], [0.2, 0.7, 0.4], threshold=0.5)
    {'roc_auc': 1.0, 'f1': 0.6666666666666666}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from prodml.core.errors import ConfigError
from prodml.core.project import DEFAULT_METRICS
from prodml.core.types import Task

__all__ = ["METRICS", "Metric", "compute", "default_metrics"]

Array = Any


@dataclass(frozen=True)
class Metric:
    """A metric: its function, the tasks it applies to and whether higher is better."""

    fn: Callable[..., float]
    tasks: tuple[Task, ...]
    higher_is_better: bool = True


def _labels(p: Array, threshold: float) -> np.ndarray:
    return (np.asarray(p) >= threshold).astype(np.int64)


def _argmax(p: Array) -> np.ndarray:
    return np.asarray(np.asarray(p).argmax(axis=1))


def _binary_auc(y: Array, p: Array, fn: Callable[..., float]) -> float:
    """A ranking metric of one class against the rest; NaN when the rows hold a single class."""
    y = np.asarray(y)
    if np.unique(y).size < 2:
        return float("nan")
    return float(fn(y, p))


def _log_loss(y: Array, p: Array) -> float:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 2:  # float32 probabilities sum to 1 only within float32's precision
        p = p / p.sum(axis=1, keepdims=True)
    labels = np.arange(p.shape[1]) if p.ndim == 2 else np.arange(2)
    return float(skm.log_loss(y, p, labels=labels))


def _roc_auc_ovr(y: Array, p: Array) -> float:
    """Macro one-vs-rest ROC-AUC over the classes present with both positives and negatives."""
    y, p = np.asarray(y), np.asarray(p)
    scores = [skm.roc_auc_score(y == c, p[:, c]) for c in range(p.shape[1]) if 0 < (y == c).sum() < y.size]
    return float(np.mean(scores)) if scores else float("nan")


def _per_group(y: Array, score: Array, group: Array, fn: Callable[[np.ndarray, np.ndarray], float]) -> float:
    y, score, group = np.asarray(y), np.asarray(score), np.asarray(group)
    order = np.argsort(group, kind="stable")
    y, score, group = y[order], score[order], group[order]
    bounds = np.flatnonzero(group[1:] != group[:-1]) + 1
    values = [
        fn(yy, ss) for yy, ss in zip(np.split(y, bounds), np.split(score, bounds), strict=True) if yy.any()
    ]
    return float(np.mean(values)) if values else 0.0


def _ap_at_k(y: np.ndarray, s: np.ndarray, k: int) -> float:
    top = y[np.argsort(-s, kind="stable")][:k]
    hits = np.cumsum(top)
    precision = hits / np.arange(1, top.size + 1)
    return float((precision * top).sum() / min(int(y.sum()), k))


def _recall_at_k(y: np.ndarray, s: np.ndarray, k: int) -> float:
    top = y[np.argsort(-s, kind="stable")][:k]
    return float(top.sum() / y.sum())


def _ndcg_at_k(y: np.ndarray, s: np.ndarray, k: int) -> float:
    return float(skm.ndcg_score(y[None, :], s[None, :], k=k)) if y.size > 1 else 1.0


def map_at_k(y: Array, score: Array, group: Array, k: int = 10) -> float:
    """Mean over queries of the average precision of the top k (queries without positives skipped)."""
    return _per_group(y, score, group, lambda a, b: _ap_at_k(a, b, k))


def recall_at_k(y: Array, score: Array, group: Array, k: int = 10) -> float:
    """Mean over queries of the share of relevant items found in the top k."""
    return _per_group(y, score, group, lambda a, b: _recall_at_k(a, b, k))


def ndcg_at_k(y: Array, score: Array, group: Array, k: int = 10) -> float:
    """Mean NDCG@k over queries (graded relevance allowed)."""
    return _per_group(y, score, group, lambda a, b: _ndcg_at_k(a, b, k))


METRICS: dict[str, Metric] = {
    # binary: prediction = P(positive)
    "roc_auc": Metric(lambda y, p, **_: _binary_auc(y, p, skm.roc_auc_score), ("binary",)),
    "pr_auc": Metric(lambda y, p, **_: _binary_auc(y, p, skm.average_precision_score), ("binary",)),
    "f1": Metric(
        lambda y, p, threshold=0.5, **_: skm.f1_score(y, _labels(p, threshold), zero_division=0), ("binary",)
    ),
    "precision": Metric(
        lambda y, p, threshold=0.5, **_: skm.precision_score(y, _labels(p, threshold), zero_division=0),
        ("binary",),
    ),
    "recall": Metric(
        lambda y, p, threshold=0.5, **_: skm.recall_score(y, _labels(p, threshold), zero_division=0),
        ("binary",),
    ),
    "log_loss": Metric(lambda y, p, **_: _log_loss(y, p), ("binary", "multiclass"), False),
    "brier": Metric(lambda y, p, **_: skm.brier_score_loss(y, p), ("binary",), False),
    "accuracy": Metric(
        lambda y, p, threshold=0.5, **_: skm.accuracy_score(
            y, _labels(p, threshold) if np.ndim(p) == 1 else _argmax(p)
        ),
        ("binary", "multiclass"),
    ),
    # multiclass: prediction = (n, k) probabilities, columns in sorted class order
    "macro_f1": Metric(
        lambda y, p, **_: skm.f1_score(y, _argmax(p), average="macro", zero_division=0), ("multiclass",)
    ),
    "weighted_f1": Metric(
        lambda y, p, **_: skm.f1_score(y, _argmax(p), average="weighted", zero_division=0), ("multiclass",)
    ),
    "roc_auc_ovr": Metric(lambda y, p, **_: _roc_auc_ovr(y, p), ("multiclass",)),
    # regression
    "mse": Metric(lambda y, p, **_: skm.mean_squared_error(y, p), ("regression",), False),
    "rmse": Metric(lambda y, p, **_: skm.root_mean_squared_error(y, p), ("regression",), False),
    "mae": Metric(lambda y, p, **_: skm.mean_absolute_error(y, p), ("regression",), False),
    "r2": Metric(lambda y, p, **_: skm.r2_score(y, p), ("regression",)),
    # ranking: prediction = score, with group= the query of each row
    "map_at_k": Metric(lambda y, p, group, k=10, **_: map_at_k(y, p, group, k), ("ranking",)),
    "ndcg_at_k": Metric(lambda y, p, group, k=10, **_: ndcg_at_k(y, p, group, k), ("ranking",)),
    "recall_at_k": Metric(lambda y, p, group, k=10, **_: recall_at_k(y, p, group, k), ("ranking",)),
}


def default_metrics(task: Task) -> list[str]:
    """The metrics reported for ``task`` when the project names none."""
    return list(DEFAULT_METRICS[task])


def check_metrics(task: Task, names: Sequence[str]) -> None:
    """Raise ConfigError naming the metrics that do not exist or do not fit the task."""
    for name in names:
        metric = METRICS.get(name)
        if metric is None or task not in metric.tasks:
            fitting = [n for n, m in METRICS.items() if task in m.tasks]
            what = "is not a metric" if metric is None else f"does not apply to task '{task}'"
            raise ConfigError(f"metrics: '{name}' {what}", hint=f"for {task} use: {', '.join(fitting)}")


def compute(
    task: Task,
    names: Sequence[str],
    y_true: Array,
    prediction: Array,
    *,
    threshold: float = 0.5,
    group: Array | None = None,
    k: int = 10,
) -> dict[str, float]:
    """Compute ``names`` for one set of predictions; see the module doc for the prediction's shape."""
    check_metrics(task, names)
    out = {}
    for name in names:
        value = METRICS[name].fn(y_true, prediction, threshold=threshold, group=group, k=k)
        out[name] = float(value)
    return out
