"""Train a project's model: cross-validate, fit, score the holdout, explain.

The frame is split once into a training part and a final holdout (the latest label times when labels are
time-stamped); cross-validation runs on the training part only, and the model that is exported is the
one fitted on the whole training part and scored on the holdout it never saw.

Classes are the label values seen in the whole frame, so every fold and the holdout are scored against
the full label set even when a rare class is missing from them. What deserves a look but does not stop
training (a class rarer than the folds, a holdout far worse than cross-validation) is returned in
``TrainResult.warnings`` and logged.

Example:
    >>> result = train(project, frame)  # doctest: +SKIP
    >>> result.holdout["roc_auc"]  # doctest: +SKIP
    0.87
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from prodml.core.errors import ConfigError, DataError
from prodml.core.project import Project
from prodml.features.offline import TrainingFrame
from prodml.train import metrics as m
from prodml.train.metrics import METRICS
from prodml.train.pipeline import build_pipeline
from prodml.train.splits import folds, holdout_split

__all__ = [
    "TrainResult",
    "holdout_gap_warnings",
    "iso_dates",
    "predict",
    "prepare",
    "rare_class_warnings",
    "train",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What training produced: the fitted pipeline, its scores and the data behind them."""

    pipeline: Any
    task: str
    features: list[str]
    categorical: list[str]
    classes: list[Any] | None
    metric_names: list[str]
    cv: dict[str, list[float]]
    holdout: dict[str, float]
    X_train: pd.DataFrame
    X_holdout: pd.DataFrame
    y_holdout: np.ndarray
    pred_holdout: np.ndarray
    rows: dict[str, int]
    params: dict[str, Any] = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)
    shap: dict[str, Any] = field(default_factory=dict)
    dates: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def cv_summary(self) -> dict[str, tuple[float, float]]:
        return {k: (float(np.mean(v)), float(np.std(v))) for k, v in self.cv.items()}


def prepare(frame: TrainingFrame, project: Project) -> tuple[pd.DataFrame, np.ndarray, list[Any] | None]:
    """Features as the model sees them (float32 numbers, strings with "" for missing), encoded target."""
    df = frame.table.to_pandas()
    target = project.target.column
    X = df[frame.features].copy()
    for c in X.columns:
        if c in frame.dates:
            X[c] = iso_dates(X[c])
        elif c in frame.categorical:
            X[c] = X[c].astype(object).where(X[c].notna(), "").astype(str)
        else:
            try:
                X[c] = X[c].astype(np.float32)
            except (TypeError, ValueError) as exc:
                raise DataError(
                    f"feature '{c}' is neither numeric nor a string column ({df[c].dtype})",
                    hint="cast it upstream, or drop it from features.attributes",
                ) from exc
    y_raw = df[target]
    if y_raw.isna().any():
        raise DataError(
            f"target '{target}' has {int(y_raw.isna().sum())} missing value(s)",
            hint="set target.drop_missing: true to train on the labelled rows only (it reports how many "
            "were dropped), or fix the label source",
        )
    classes: list[Any] | None = None
    if project.task in ("binary", "multiclass"):
        classes = sorted(pd.unique(y_raw).tolist())
        if len(classes) < 2:
            raise DataError(
                f"target '{target}' is constant ({classes[0]!r} in all {len(y_raw)} rows)",
                hint="a classifier needs at least two classes; check the label source and its filters",
            )
        if project.task == "binary" and len(classes) != 2:
            raise ConfigError(
                f"task is binary but target '{target}' has {len(classes)} classes",
                hint="set task: multiclass",
            )
        y = np.searchsorted(np.asarray(classes, dtype=object), y_raw.to_numpy(dtype=object)).astype(np.int64)
    else:
        y = y_raw.to_numpy(dtype=np.float64)
        if np.unique(y).size < 2:
            raise DataError(f"target '{target}' is constant", hint="check the label source")
    return X, y, classes


def iso_dates(values: pd.Series) -> pd.Series:
    """Dates or timestamps as the ISO strings a client sends ("" for missing), wall-clock as stored."""
    stamps = pd.to_datetime(values)
    text = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S")
    return text.where(stamps.notna(), "").astype(object)


def predict(pipeline: Any, X: pd.DataFrame, task: str, n_classes: int | None = None) -> np.ndarray:
    """P(positive) for binary, class probabilities ``(n, n_classes)`` for multiclass, values for regression.

    A model fitted on rows that lack a class has fewer probability columns; they are spread onto the full
    label set (``n_classes``, default: the model's own classes) with 0 for the classes it never saw.
    """
    if task in ("binary", "multiclass"):
        proba = np.asarray(pipeline.predict_proba(X))
        k = n_classes or (2 if task == "binary" else proba.shape[1])
        seen = np.asarray(pipeline.classes_, dtype=np.int64)
        if proba.shape[1] != k:
            full = np.zeros((proba.shape[0], k))
            full[:, seen] = proba
            proba = full
        return proba[:, 1] if task == "binary" else proba
    return np.asarray(pipeline.predict(X), dtype=np.float64)


def _fit(pipeline: Any, X: pd.DataFrame, y: np.ndarray) -> Any:
    try:
        return pipeline.fit(X, y)
    except (ValueError, TypeError) as exc:
        if type(exc).__name__ == "InvalidParameterError":
            raise ConfigError(f"model.params: {exc}", hint="fix the value under model.params") from exc
        raise


def train(
    project: Project,
    frame: TrainingFrame,
    *,
    on_step: Callable[[str], None] | None = None,
    on_trial: Callable[[int, dict[str, Any], float], None] | None = None,
) -> TrainResult:
    """Cross-validate and fit the project's model on ``frame``.

    Raises:
        ConfigError: the model, metrics or validation settings do not fit the data.
        DataError: the target is missing, constant, or a feature has an unusable type.
    """
    step = on_step or (lambda _: None)
    task = project.task
    if task == "ranking":
        raise ConfigError(
            "task 'ranking' has metrics but no trainer yet", hint="use binary, multiclass or regression"
        )
    names = project.metrics or m.default_metrics(task)
    m.check_metrics(task, names)
    if project.model.tune is not None:
        from prodml.train.tune import check_tune

        check_tune(project, names)
    X, y, classes = prepare(frame, project)
    df_times = frame.table.column(project.target.timestamp).to_numpy() if project.target.timestamp else None
    groups = frame.table.column(project.entity).to_numpy() if project.entity else None
    v = project.validation
    stratify = task != "regression" and int(np.bincount(y).min()) >= 2
    split = holdout_split(len(y), v.holdout, times=df_times, y=y, stratify=stratify, seed=v.seed)
    warnings = rare_class_warnings(project, y[split.train], classes)
    if len(split.test) and task != "regression" and np.unique(y[split.test]).size < 2:
        raise DataError("the holdout holds a single class", hint="raise validation.holdout or get more data")
    Xt, yt = X.iloc[split.train].reset_index(drop=True), y[split.train]
    base = build_pipeline(project, list(X.columns), frame.categorical, dates=frame.dates)
    n_classes = len(classes) if classes is not None else None

    fold_parts = list(
        folds(
            v,
            task,
            yt,
            groups=None if groups is None else groups[split.train],
            times=None if df_times is None else df_times[split.train],
        )
    )

    def cross_validate(pipeline: Any, label: str) -> dict[str, list[float]]:
        scores: dict[str, list[float]] = {n: [] for n in names}
        for i, part in enumerate(fold_parts):
            step(f"{label}fold {i + 1}/{len(fold_parts)}")
            model = _fit(clone(pipeline), Xt.iloc[part.train], yt[part.train])
            for k, value in m.compute(
                task, names, yt[part.test], predict(model, Xt.iloc[part.test], task, n_classes)
            ).items():
                scores[k].append(value)
        return scores

    best_params: dict[str, Any] = {}
    if project.model.tune is not None:
        from prodml.train.tune import search

        best_params = search(
            project,
            lambda params, label: cross_validate(
                build_pipeline(project, list(X.columns), frame.categorical, params=params, dates=frame.dates),
                label,
            ),
            on_trial=on_trial,
        )
        base = build_pipeline(
            project, list(X.columns), frame.categorical, params=best_params, dates=frame.dates
        )

    cv = cross_validate(base, "")

    step("fit")
    final = _fit(clone(base), Xt, yt)
    if len(split.test):
        Xh, yh = X.iloc[split.test].reset_index(drop=True), y[split.test]
    else:  # no holdout asked for: report on the training part, and say so in the rows
        Xh, yh = Xt, yt
    pred = predict(final, Xh, task, n_classes)
    holdout = m.compute(task, names, yh, pred)
    if len(split.test):
        warnings += holdout_gap_warnings(project, cv, holdout)
    for w in warnings:  # the CLI prints them; the log keeps them for servers and pipelines
        logger.debug("%s", w)
    return TrainResult(
        pipeline=final,
        task=task,
        features=list(X.columns),
        categorical=list(frame.categorical),
        classes=classes,
        metric_names=names,
        cv=cv,
        holdout=holdout,
        X_train=Xt,
        X_holdout=Xh,
        y_holdout=yh,
        pred_holdout=pred,
        rows={
            "train": len(yt),
            "holdout": len(split.test),
            "folds": v.folds,
            "unlabelled_dropped": int(frame.lineage.get("unlabelled_dropped", 0)),
        },
        params={**project.model.params, **best_params},
        dates=list(frame.dates),
        warnings=warnings,
    )


def rare_class_warnings(project: Project, y: np.ndarray, classes: list[Any] | None) -> list[str]:
    """Classes with fewer training rows (``y``, encoded) than folds: an error for stratified folds, a
    warning otherwise.

    Raises:
        ConfigError: stratified cross-validation cannot put the rarest class in every fold.
    """
    if classes is None:
        return []
    counts = np.bincount(y, minlength=len(classes))
    folds_ = project.validation.folds
    rare = {classes[i]: int(c) for i, c in enumerate(counts) if c < folds_}
    if not rare:
        return []
    shown = ", ".join(f"{c!r} ({n} row{'s' if n != 1 else ''})" for c, n in rare.items())
    if project.validation.strategy == "stratified":
        raise ConfigError(
            f"validation: class(es) {shown} have fewer training rows than validation.folds ({folds_}), "
            "so stratified folds cannot each hold them",
            hint=f"lower validation.folds to {max(2, min(rare.values()))} or less, merge or drop the rare "
            "class upstream, or use validation.strategy: kfold (folds without it are scored on the full "
            "label set)",
        )
    return [
        f"class(es) {shown} have fewer training rows than validation.folds ({folds_}): some folds hold "
        "none of "
        "them, and the model may not learn them"
    ]


def holdout_gap_warnings(
    project: Project, cv: dict[str, list[float]], holdout: dict[str, float]
) -> list[str]:
    """A holdout score far below cross-validation's: the usual sign of a time split without a time feature.

    "Far" is worse than the CV mean by more than three CV standard deviations and by more than 10% of
    the mean's magnitude (at least 0.05 for scores in [0, 1]).
    """
    name = project.promotion.metric
    if name not in cv or name not in holdout:
        return []
    scores = np.asarray(cv[name], dtype=np.float64)
    mean, std, value = float(np.nanmean(scores)), float(np.nanstd(scores)), holdout[name]
    if not (np.isfinite(mean) and np.isfinite(value)):
        return []
    worse = mean - value if METRICS[name].higher_is_better else value - mean
    if worse <= 3 * std or worse <= max(0.1 * abs(mean), 0.05 if abs(mean) <= 1 else 0.0):
        return []
    why = (
        "the holdout is the latest rows by target.timestamp: if the data drifts with time, add a date "
        "feature (features.transforms op: date) or check for a leak that only the past allows"
        if project.target.timestamp
        else "the holdout may differ from the training rows (a shift, a leak, or too few rows)"
    )
    return [
        f"holdout {name} {value:.4f} is far {'below' if METRICS[name].higher_is_better else 'above'} "
        f"cross-validation's {mean:.4f} ± {std:.4f}: {why}"
    ]
