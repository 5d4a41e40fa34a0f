"""``profile.json``: the reference data profile that drift is measured against.

Per numeric feature: decile bin edges from the training data and the share of rows in each bin (plus the
null rate, mean and std), and a finer ``sketch`` — percentile edges with the count and the mean of the
values in each bin, and the range — which :mod:`prodml.export.drift` compares live windows with (KS and
Wasserstein on the fine bins, PSI and Jensen–Shannon on the deciles, which the percentile edges contain).
Per categorical feature: category frequencies and counts. For the prediction: the same numeric profile
of the model's holdout scores (P(positive) for binary, the top class probability for multiclass, the
value for regression; see :func:`prodml.export.drift.prediction_score`). Bins are quantile-based, so PSI
has no empty reference bins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["categorical_profile", "numeric_profile", "reference_profile"]

BINS = 10
SKETCH_BINS = 100
TOP_CATEGORIES = 50


def _sketch(finite: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    """Each bin's count and mean between percentile ``edges`` (inner only, duplicates merged)."""
    # binned as float32, like the model's inputs and the server's sketch (prodml.export.drift.count)
    idx = np.searchsorted(edges.astype(np.float32), finite.astype(np.float32), side="right")
    counts = np.bincount(idx, minlength=edges.size + 1)
    sums = np.bincount(idx, weights=finite, minlength=edges.size + 1)
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return {
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "means": means.tolist(),
        "min": float(finite.min()),
        "max": float(finite.max()),
    }


def numeric_profile(values: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """Quantile bin edges (inner edges only; the outer bins are open) and bin shares of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    nulls = np.isnan(x)
    finite = x[~nulls]
    if finite.size == 0:
        return {
            "kind": "numeric",
            "edges": [],
            "shares": [],
            "null_rate": 1.0,
            "mean": None,
            "std": None,
            "rows": int(x.size),
        }
    # one partial sort for both the deciles and the percentiles
    deciles_q, fine_q = np.linspace(0, 1, bins + 1)[1:-1], np.linspace(0, 1, SKETCH_BINS + 1)[1:-1]
    both = np.quantile(finite, np.concatenate([deciles_q, fine_q]))
    edges = np.unique(both[: deciles_q.size])
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=edges.size + 1)
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "shares": (counts / finite.size).tolist(),
        "null_rate": float(nulls.mean()),
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "rows": int(x.size),
        "sketch": _sketch(finite, np.unique(both[deciles_q.size :])),
    }


def categorical_profile(values: pd.Series) -> dict[str, Any]:
    """The ``TOP_CATEGORIES`` most frequent values' shares and counts; the rest as ``other``."""
    nulls = values.isna()
    counts = values[~nulls].astype(str).value_counts()
    total = max(int(counts.sum()), 1)
    top = counts.head(TOP_CATEGORIES)
    rest = int(counts.iloc[TOP_CATEGORIES:].sum()) if len(counts) > TOP_CATEGORIES else 0
    return {
        "kind": "categorical",
        "frequencies": {str(k): float(v / total) for k, v in top.items()},
        "counts": {str(k): int(v) for k, v in top.items()},
        "other": rest / total,
        "other_count": rest,
        "null_rate": float(nulls.mean()) if len(values) else 0.0,
        "rows": len(values),
    }


def reference_profile(
    frame: pd.DataFrame, categorical: list[str], prediction: np.ndarray | None
) -> dict[str, Any]:
    """The profile of the training features and of the model's holdout predictions.

    Columns that are neither numeric nor listed in ``categorical`` (dates as text, timestamps) are
    profiled as categories only if they are text; other kinds are left out of drift.
    """
    from prodml.export.drift import prediction_score

    features: dict[str, Any] = {}
    for c in frame.columns:
        col = frame[c]
        if c in categorical or pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col):
            features[c] = categorical_profile(col)
        elif pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            features[c] = numeric_profile(col.to_numpy(dtype=np.float64, na_value=np.nan))
    out: dict[str, Any] = {"rows": len(frame), "features": features}
    if prediction is not None:
        out["prediction"] = numeric_profile(prediction_score(np.asarray(prediction, dtype=np.float64)))
    return out
