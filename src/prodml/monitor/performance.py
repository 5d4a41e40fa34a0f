"""Performance once labels arrive: the task's metrics per window and model version, with bootstrap
confidence intervals.

Labels come from the request log's feedback, joined to the logged prediction by request id (see
:mod:`prodml.monitor.sources`); rows without a label are left out. Point values are
:func:`prodml.train.metrics.compute`'s (the numbers training reports). The intervals come from a
bootstrap computed for all resamples at once: each resample is a row of multinomial weights and every
metric is written as a weighted sum over rows sorted once — scikit-learn's functions cost ~5 ms a call
here, so 200 resamples × 5 metrics × 50 windows would take minutes instead of a second. Metrics without
such a form (ranking, multiclass AUC and F1) get no interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from prodml.core.types import Task
from prodml.export.drift import PREDICTION
from prodml.monitor.windows import Window
from prodml.train.metrics import compute

__all__ = ["PerformancePoint", "bootstrap", "performance", "weighted_metric"]

MIN_LABELS = 30  # fewer labelled rows in a window and version: no estimate
_CELLS = 20_000_000  # resamples × rows per chunk of the bootstrap (160 MB of float64)


@dataclass(frozen=True)
class PerformancePoint:
    """One metric of one model version in one window: the value and its 95% bootstrap interval."""

    window: str
    version: str
    metric: str
    value: float
    low: float
    high: float
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


# --- metrics under row weights: w is (resamples, rows), y and p are (rows,) ---------------------------


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.divide(a, b, out=np.full(np.shape(a), np.nan), where=b > 0)
    return out


def _groups(p: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts ``p`` and the start of each run of tied scores in it."""
    order = np.argsort(-p if descending else p, kind="stable")
    s = p[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray, _: float) -> np.ndarray:
    order, starts = _groups(p, descending=False)
    pos = np.add.reduceat(w[:, order] * y[order], starts, axis=1)
    neg = np.add.reduceat(w[:, order] * (1 - y[order]), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    return _div((pos * (below + 0.5 * neg)).sum(axis=1), pos.sum(axis=1) * neg.sum(axis=1))


def _ap(y: np.ndarray, p: np.ndarray, w: np.ndarray, _: float) -> np.ndarray:
    order, starts = _groups(p, descending=True)
    tp = np.cumsum(np.add.reduceat(w[:, order] * y[order], starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(w[:, order] * (1 - y[order]), starts, axis=1), axis=1)
    recall = _div(tp, tp[:, -1:])
    precision = _div(tp, tp + fp)
    steps = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
    return np.nansum(steps * precision, axis=1)  # type: ignore[no-any-return]


def _confusion(y: np.ndarray, p: np.ndarray, w: np.ndarray, t: float) -> tuple[np.ndarray, ...]:
    label = (p >= t).astype(np.float64)
    return w @ (y * label), w @ ((1 - y) * label), w @ (y * (1 - label)), w.sum(axis=1)


def _f1(y: np.ndarray, p: np.ndarray, w: np.ndarray, t: float) -> np.ndarray:
    tp, fp, fn, _ = _confusion(y, p, w, t)
    return _div(2 * tp, 2 * tp + fp + fn)


def _precision(y: np.ndarray, p: np.ndarray, w: np.ndarray, t: float) -> np.ndarray:
    tp, fp, _, _ = _confusion(y, p, w, t)
    return _div(tp, tp + fp)


def _recall(y: np.ndarray, p: np.ndarray, w: np.ndarray, t: float) -> np.ndarray:
    tp, _, fn, _ = _confusion(y, p, w, t)
    return _div(tp, tp + fn)


def _accuracy(y: np.ndarray, p: np.ndarray, w: np.ndarray, t: float) -> np.ndarray:
    right = (p.argmax(axis=1) == y) if p.ndim == 2 else ((p >= t) == (y == 1))
    return _div(w @ right.astype(np.float64), w.sum(axis=1))


def _log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray, _: float) -> np.ndarray:
    eps = np.finfo(np.float64).eps
    if p.ndim == 2:
        q = np.clip(p / p.sum(axis=1, keepdims=True), eps, 1 - eps)
        loss = -np.log(q[np.arange(len(y)), y.astype(np.int64)])
    else:
        q = np.clip(p, eps, 1 - eps)
        loss = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return _div(w @ loss, w.sum(axis=1))


def _mean(values: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    def metric(y: np.ndarray, p: np.ndarray, w: np.ndarray, _: float) -> np.ndarray:
        return _div(w @ values(y, p), w.sum(axis=1))

    return metric


def _r2(y: np.ndarray, p: np.ndarray, w: np.ndarray, _: float) -> np.ndarray:
    total = w.sum(axis=1)
    mean = _div(w @ y, total)
    ss_tot = (w * (y[None, :] - mean[:, None]) ** 2).sum(axis=1)
    return 1 - _div(w @ (y - p) ** 2, ss_tot)


_WEIGHTED: dict[str, Callable[..., np.ndarray]] = {
    "roc_auc": _auc,
    "pr_auc": _ap,
    "f1": _f1,
    "precision": _precision,
    "recall": _recall,
    "accuracy": _accuracy,
    "log_loss": _log_loss,
    "brier": _mean(lambda y, p: (p - y) ** 2),
    "mse": _mean(lambda y, p: (p - y) ** 2),
    "mae": _mean(lambda y, p: np.abs(p - y)),
    "r2": _r2,
}


def weighted_metric(
    name: str, y: np.ndarray, p: np.ndarray, w: np.ndarray, threshold: float = 0.5
) -> np.ndarray | None:
    """``name`` under each row of weights ``w`` (``(resamples, rows)``); None when it has no such form.
    With one row of ones it is the plain metric (equal to scikit-learn's)."""
    if name == "rmse":
        mse = _WEIGHTED["mse"](y, p, w, threshold)
        return np.sqrt(mse)  # type: ignore[no-any-return]
    fn = _WEIGHTED.get(name)
    if fn is None or (p.ndim == 2 and name not in ("accuracy", "log_loss")):
        return None
    return fn(y, p, w, threshold)


def bootstrap(
    names: list[str],
    y: np.ndarray,
    p: np.ndarray,
    *,
    threshold: float = 0.5,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of each metric in ``names`` that has a weighted form."""
    rng = np.random.default_rng(seed)
    n = len(y)
    draws: dict[str, list[np.ndarray]] = {m: [] for m in names}
    chunk = max(1, min(resamples, _CELLS // max(n, 1)))
    done = 0
    while done < resamples:
        k = min(chunk, resamples - done)
        w = rng.multinomial(n, np.full(n, 1 / n), size=k).astype(np.float64)
        for m in names:
            values = weighted_metric(m, y, p, w, threshold)
            if values is not None:
                draws[m].append(values)
        done += k
    out = {}
    for m, parts in draws.items():
        if parts:
            values = np.concatenate(parts)
            values = values[np.isfinite(values)]
            if values.size:
                low, high = np.percentile(values, [2.5, 97.5])
                out[m] = (float(low), float(high))
    return out


def _prediction(rows: pd.DataFrame, task: Task) -> np.ndarray:
    if task == "multiclass" and "__outputs__" in rows.columns:
        matrix: np.ndarray = np.stack(rows["__outputs__"].to_list()).astype(np.float64)
        return matrix
    scores: np.ndarray = rows[PREDICTION].to_numpy(np.float64)
    return scores


def performance(
    windows: list[Window],
    task: Task,
    metrics: list[str],
    *,
    threshold: float = 0.5,
    resamples: int = 200,
    seed: int = 0,
) -> list[PerformancePoint]:
    """Every metric per window and version on the labelled rows (at least ``MIN_LABELS`` of them)."""
    names = [m for m in metrics if not m.endswith("_at_k")]  # ranking needs query groups: not logged
    out: list[PerformancePoint] = []
    for window in windows:
        rows = window.rows
        if "label" not in rows.columns or PREDICTION not in rows.columns:
            continue
        rows = rows[rows["label"].notna()]
        versions = rows.groupby("version", observed=True) if "version" in rows.columns else [("all", rows)]
        for version, part in versions:
            if len(part) < MIN_LABELS:
                continue
            y = part["label"].to_numpy(np.float64)
            if task in ("binary", "multiclass"):
                y = y.astype(np.int64)
            pred = _prediction(part, task)
            values = compute(task, names, y, pred, threshold=threshold)
            intervals = bootstrap(
                names, y.astype(np.float64), pred, threshold=threshold, resamples=resamples, seed=seed
            )
            for m in names:
                low, high = intervals.get(m, (math.nan, math.nan))
                out.append(PerformancePoint(window.label, str(version), m, values[m], low, high, len(y)))
    return out
