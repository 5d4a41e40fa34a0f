"""``profile.json``: the reference data profile that drift is measured against.

Per numeric feature: decile bin edges from the training data and the share of rows in each bin (plus the
null rate, mean and std); per categorical feature: category frequencies; for the prediction: its
distribution on the holdout. Bins are quantile-based, so PSI has no empty reference bins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["numeric_profile", "reference_profile"]

BINS = 10
TOP_CATEGORIES = 50


def numeric_profile(values: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """Quantile bin edges (inner edges only; the outer bins are open) and bin shares of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    nulls = np.isnan(x)
    finite = x[~nulls]
    if finite.size == 0:
        return {"kind": "numeric", "edges": [], "shares": [], "null_rate": 1.0, "mean": None, "std": None}
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=edges.size + 1)
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "shares": (counts / finite.size).tolist(),
        "null_rate": float(nulls.mean()),
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "rows": int(x.size),
    }


def categorical_profile(values: pd.Series) -> dict[str, Any]:
    counts = values.fillna("").astype(str).value_counts()
    top = counts.head(TOP_CATEGORIES)
    freqs = {str(k): float(v / counts.sum()) for k, v in top.items()}
    other = float(counts.iloc[TOP_CATEGORIES:].sum() / counts.sum()) if len(counts) > TOP_CATEGORIES else 0.0
    return {"kind": "categorical", "frequencies": freqs, "other": other, "rows": len(values)}


def reference_profile(
    frame: pd.DataFrame, categorical: list[str], prediction: np.ndarray | None
) -> dict[str, Any]:
    """The profile of the training features and of the model's holdout predictions."""
    features = {
        c: categorical_profile(frame[c])
        if c in categorical
        else numeric_profile(frame[c].to_numpy(dtype=np.float64, na_value=np.nan))
        for c in frame.columns
    }
    out: dict[str, Any] = {"rows": len(frame), "features": features}
    if prediction is not None:
        out["prediction"] = numeric_profile(np.asarray(prediction, dtype=np.float64).ravel())
    return out
