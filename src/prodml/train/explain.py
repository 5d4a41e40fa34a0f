"""Explanations: permutation importance on the holdout, and SHAP values.

SHAP uses the tree explainer for tree ensembles (exact and fast) and a sampled permutation explainer
otherwise; both run on a bounded sample so training time stays predictable.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from prodml.train.trainer import TrainResult

__all__ = ["SCORERS", "explain", "permutation", "shap_values"]

logger = logging.getLogger(__name__)

# prodml metric → scikit-learn scorer name (higher is better for all of them)
SCORERS = {
    "roc_auc": "roc_auc",
    "pr_auc": "average_precision",
    "f1": "f1",
    "log_loss": "neg_log_loss",
    "brier": "neg_brier_score",
    "accuracy": "accuracy",
    "macro_f1": "f1_macro",
    "weighted_f1": "f1_weighted",
    "mse": "neg_mean_squared_error",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
}
MAX_ROWS = 2_000
SHAP_ROWS = 300


def _sample(X: pd.DataFrame, y: np.ndarray | None, n: int, seed: int = 0) -> tuple[pd.DataFrame, Any]:
    if len(X) <= n:
        return X, y
    idx = np.random.default_rng(seed).choice(len(X), n, replace=False)
    return X.iloc[idx].reset_index(drop=True), None if y is None else y[idx]


def permutation(result: TrainResult, metric: str, *, repeats: int = 5) -> dict[str, float]:
    """Mean drop of ``metric`` when each input column is shuffled (holdout sample), largest first."""
    from sklearn.inspection import permutation_importance

    X, y = _sample(result.X_holdout, result.y_holdout, MAX_ROWS)
    # the metric asked for if it was computed and sklearn can score it, else the first one that can
    scoring = next(
        (SCORERS[m] for m in [metric, *result.metric_names] if m in result.holdout and m in SCORERS), None
    )
    imp = permutation_importance(
        result.pipeline, X, y, scoring=scoring, n_repeats=repeats, random_state=0, n_jobs=1
    )
    pairs = sorted(zip(X.columns, imp.importances_mean, strict=True), key=lambda kv: -kv[1])
    return {str(k): float(v) for k, v in pairs}


def shap_values(result: TrainResult) -> dict[str, Any]:
    """SHAP values on a holdout sample, in the model's input space (after one-hot encoding).

    Returns ``{"explainer", "features", "values" (n, f), "data" (n, f), "mean_abs"}``.
    """
    import shap

    pipe = result.pipeline
    prep, model = pipe[:-1], pipe[-1]
    X, _ = _sample(result.X_holdout, None, SHAP_ROWS)
    Z = np.asarray(prep.transform(X), dtype=np.float64)
    names = (
        [str(n) for n in prep.get_feature_names_out()]
        if hasattr(prep, "get_feature_names_out")
        else [f"x{i}" for i in range(Z.shape[1])]
    )
    try:
        explainer = shap.TreeExplainer(model)
        values = explainer.shap_values(Z, check_additivity=False)
        kind = "tree"
    except Exception as exc:
        logger.debug("tree explainer unavailable (%s); using the permutation explainer", exc)
        background = Z[np.random.default_rng(1).choice(len(Z), min(50, len(Z)), replace=False)]
        fn = (lambda a: model.predict_proba(a)[:, 1]) if result.task == "binary" else model.predict
        values = shap.PermutationExplainer(fn, background)(Z[:100]).values
        Z = Z[:100]
        kind = "permutation (sampled)"
    values = np.asarray(values)
    if values.ndim == 3:  # (n, f, classes): explain the positive / first non-base class
        values = values[..., -1]
    mean_abs = dict(
        sorted(zip(names, np.abs(values).mean(axis=0).tolist(), strict=True), key=lambda kv: -kv[1])
    )
    return {"explainer": kind, "features": names, "values": values, "data": Z, "mean_abs": mean_abs}


def explain(result: TrainResult, metric: str) -> None:
    """Fill ``result.importance`` and ``result.shap``; a failing explainer never fails training."""
    try:
        result.importance = permutation(result, metric)
    except Exception as exc:
        logger.warning("permutation importance failed: %s", exc)
    try:
        result.shap = shap_values(result)
    except Exception as exc:
        logger.warning("SHAP failed: %s", exc)
