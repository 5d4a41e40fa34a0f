"""Train a project's model: cross-validate, fit, score the holdout, explain.

The frame is split once into a training part and a final holdout (the latest label times when labels are
time-stamped); cross-validation runs on the training part only, and the model that is exported is the
one fitted on the whole training part and scored on the holdout it never saw.

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
from prodml.train.pipeline import build_pipeline
from prodml.train.splits import folds, holdout_split

__all__ = ["TrainResult", "predict", "prepare", "train"]

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

    def cv_summary(self) -> dict[str, tuple[float, float]]:
        return {k: (float(np.mean(v)), float(np.std(v))) for k, v in self.cv.items()}


def prepare(frame: TrainingFrame, project: Project) -> tuple[pd.DataFrame, np.ndarray, list[Any] | None]:
    """Features as the model sees them (float32 numbers, strings with "" for missing), encoded target."""
    df = frame.table.to_pandas()
    target = project.target.column
    X = df[frame.features].copy()
    for c in X.columns:
        if c in frame.categorical:
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
            hint="drop unlabelled rows upstream (labels that are not known yet belong in the future)",
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


def predict(pipeline: Any, X: pd.DataFrame, task: str) -> np.ndarray:
    """P(positive) for binary, class probabilities for multiclass, values for regression."""
    if task == "binary":
        return np.asarray(pipeline.predict_proba(X))[:, 1]
    if task == "multiclass":
        return np.asarray(pipeline.predict_proba(X))
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
    split = holdout_split(len(y), v.holdout, times=df_times, y=y, stratify=task != "regression", seed=v.seed)
    if len(split.test) and task != "regression" and np.unique(y[split.test]).size < 2:
        raise DataError("the holdout holds a single class", hint="raise validation.holdout or get more data")
    Xt, yt = X.iloc[split.train].reset_index(drop=True), y[split.train]
    base = build_pipeline(project, list(X.columns), frame.categorical)

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
                task, names, yt[part.test], predict(model, Xt.iloc[part.test], task)
            ).items():
                scores[k].append(value)
        return scores

    best_params: dict[str, Any] = {}
    if project.model.tune is not None:
        from prodml.train.tune import search

        best_params = search(
            project,
            lambda params, label: cross_validate(
                build_pipeline(project, list(X.columns), frame.categorical, params=params), label
            ),
            on_trial=on_trial,
        )
        base = build_pipeline(project, list(X.columns), frame.categorical, params=best_params)

    cv = cross_validate(base, "")

    step("fit")
    final = _fit(clone(base), Xt, yt)
    if len(split.test):
        Xh, yh = X.iloc[split.test].reset_index(drop=True), y[split.test]
    else:  # no holdout asked for: report on the training part, and say so in the rows
        Xh, yh = Xt, yt
    pred = predict(final, Xh, task)
    holdout = m.compute(task, names, yh, pred)
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
        rows={"train": len(yt), "holdout": len(split.test), "folds": v.folds},
        params={**project.model.params, **best_params},
    )
