"""Drift of a frame of rows against the reference profile, window by window.

The statistics are :mod:`prodml.export.drift`'s (the same the server's live sketch exports), so a report
and the gauges agree on the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from prodml.core.errors import DataError
from prodml.export.drift import (
    PREDICTION,
    Counts,
    FeatureScore,
    Reference,
    Thresholds,
    compare,
    count,
)
from prodml.monitor.windows import Window

__all__ = ["WindowDrift", "bin_frame", "score_windows"]


@dataclass(frozen=True)
class WindowDrift:
    """One window's scores; ``counts`` are kept for the plots of the newest window."""

    label: str
    rows: int
    scores: list[FeatureScore]
    counts: Counts | None = None
    start: float | None = None
    end: float | None = None

    @property
    def breaches(self) -> list[FeatureScore]:
        return [s for s in self.scores if s.status == "drift"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "rows": self.rows,
            "start": self.start,
            "end": self.end,
            "breaches": [s.feature for s in self.breaches],
            "features": {s.feature: s.as_dict() for s in self.scores},
        }


def bin_frame(reference: Reference, frame: pd.DataFrame) -> Counts:
    """The rows of ``frame`` binned like ``reference`` (absent features stay empty)."""
    numbers: dict[str, np.ndarray] = {}
    for name in reference.numeric:
        if name not in frame.columns:
            continue
        column = frame[name]
        try:  # float columns as they are (binning casts to float32 itself), others converted
            numbers[name] = (
                column.to_numpy()
                if isinstance(column.dtype, np.dtype) and column.dtype.kind == "f"
                else column.to_numpy(np.float64, na_value=np.nan)
            )
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"column '{name}' is numeric in the reference profile but holds {column.dtype} "
                f"values ({exc})",
                hint="monitor the rows the model was given, with the same columns as its schema.json",
            ) from exc
    strings: Mapping[str, np.ndarray] = {
        name: frame[name].astype(object).where(frame[name].notna(), "").to_numpy(object)
        for name in reference.categorical
        if name in frame.columns
    }
    counts = count(reference, numbers, strings)
    counts.rows = len(frame)
    return counts


def score_windows(
    reference: Reference, windows: list[Window], thresholds: Thresholds | None = None
) -> list[WindowDrift]:
    """Each window's drift; the newest (last) keeps its counts for plotting."""
    out = []
    for i, window in enumerate(windows):
        counts = bin_frame(reference, window.rows)
        scores = compare(reference, counts, thresholds)
        keep = counts if i == len(windows) - 1 else None
        out.append(WindowDrift(window.label, len(window.rows), scores, keep, window.start, window.end))
    return out


def missing_features(reference: Reference, frame: pd.DataFrame) -> list[str]:
    """Reference features the rows do not carry (they cannot be scored)."""
    names = [*reference.numeric, *reference.categorical]
    return [n for n in names if n != PREDICTION and n not in frame.columns]
