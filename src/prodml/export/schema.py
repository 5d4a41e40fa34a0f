"""``schema.json``: the model's inputs (dtype, nullability, ranges, categories) and outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from prodml.core.types import Task

__all__ = ["infer_schema"]

MAX_CATEGORIES = 1_000


def infer_schema(
    frame: pd.DataFrame,
    categorical: list[str],
    *,
    task: Task,
    classes: list[Any] | None,
    target: str,
    threshold: float = 0.5,
    dates: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Describe the model's input columns as seen in training, and its outputs.

    Numbers are ``float`` inputs (the graph takes float32); ``nullable`` is true when training saw a
    missing value or the model handles them; categories are the values seen in training. A date column
    (``dates``) is a ``string`` input with ``format: date-time`` (ISO 8601, ``YYYY-MM-DD[THH[:MM…]]``;
    the graph computes its parts, and a string that is not such a date gives missing parts), with the
    training range as ``earliest``/``latest`` ISO strings (not ``min``/``max``, which are numbers) and
    ``pattern``, the regular expression a valid value fully matches — what a server can check before
    scoring.
    """
    from prodml.core.project import ISO_DATE

    inputs = []
    for name in frame.columns:
        col = frame[name]
        if name in dates:
            text = col.astype(object).where(col.notna(), "").astype(str)
            present = sorted(v for v in text.unique() if v)
            inputs.append(
                {
                    "name": name,
                    "dtype": "string",
                    "format": "date-time",
                    "pattern": ISO_DATE,
                    "nullable": len(present) < text.nunique() or bool((text == "").any()),
                    "earliest": present[0] if present else None,
                    "latest": present[-1] if present else None,
                }
            )
        elif name in categorical:
            values = sorted(map(str, col.dropna().unique()))
            inputs.append(
                {
                    "name": name,
                    "dtype": "string",
                    "nullable": bool(col.isna().any()),
                    "categories": values[:MAX_CATEGORIES],
                }
            )
        else:
            x = col.to_numpy(dtype=np.float64, na_value=np.nan)
            finite = x[np.isfinite(x)]
            inputs.append(
                {
                    "name": name,
                    "dtype": "float",
                    "nullable": bool(np.isnan(x).any()),
                    "min": float(finite.min()) if finite.size else None,
                    "max": float(finite.max()) if finite.size else None,
                }
            )
    if task in ("binary", "multiclass"):
        outputs = [
            {"name": "label", "dtype": "int64", "shape": [-1]},
            {"name": "probabilities", "dtype": "float", "shape": [-1, len(classes or [])]},
        ]
    else:
        outputs = [{"name": "variable", "dtype": "float", "shape": [-1, 1]}]
    schema: dict[str, Any] = {"task": task, "target": target, "inputs": inputs, "outputs": outputs}
    if classes is not None:
        schema["classes"] = [c.item() if hasattr(c, "item") else c for c in classes]
    if task == "binary":
        schema["threshold"] = threshold
    return schema
