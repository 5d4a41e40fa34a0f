"""Date parts: an ISO date or timestamp string in, numbers a model can use out.

Clients send the date itself (``"2024-03-15"`` or ``"2024-03-15T10:30:00"``, a space allowed for the
``T``); the model computes year, month, day, day of week (Monday = 0), day of year, hour and days since
1970-01-01. The same arithmetic runs in numpy here and in the ONNX graph (see
``prodml.export.onnx``): both parse the string by its fields, not by a calendar library, so they agree
exactly. A trailing time-zone offset is ignored (the parts are the wall-clock ones as written); a
missing or malformed date gives NaN parts, which the model treats as missing.

Example:
    >>> DateParts(parts=("year", "dayofweek")).fit_transform([["2024-03-15"], [""]]).tolist()
    [[2024.0, 4.0], [nan, nan]]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from prodml.core.project import DATE_PARTS, ISO_DATE

__all__ = ["ISO_DATE", "DateParts", "civil_days", "parts_of"]

_ISO = re.compile(ISO_DATE)


def civil_days(y: Any, m: Any, d: Any) -> Any:
    """Days since 1970-01-01 of a proleptic Gregorian date, with floor division only.

    H. Hinnant's ``days_from_civil``, written with ``floor`` so that the ONNX graph computes it with the
    same operations (float64, exact for these integers).
    """
    yy = y - (m <= 2)
    era = np.floor(yy / 400)
    yoe = yy - era * 400
    mp = m + np.where(m <= 2, 9, -3)
    doy = np.floor((153 * mp + 2) / 5) + d - 1
    doe = yoe * 365 + np.floor(yoe / 4) - np.floor(yoe / 100) + doy
    return era * 146097 + doe - 719468


def _fields(values: np.ndarray) -> np.ndarray:
    """(n, 4) float64 of year, month, day, hour; NaN rows where the string is not an ISO date."""
    out = np.full((values.size, 4), np.nan)
    for i, v in enumerate(values):
        match = _ISO.fullmatch(v) if isinstance(v, str) else None
        if match is None:
            continue
        y, m, d, h = (float(g) if g is not None else 0.0 for g in match.groups())
        if 1 <= m <= 12 and 1 <= d <= 31 and h <= 23:
            out[i] = (y, m, d, h)
    return out


def parts_of(fields: np.ndarray, parts: Sequence[str]) -> np.ndarray:
    """The requested parts, column by column, from :func:`_fields`' output."""
    y, m, d, h = fields.T
    days = civil_days(y, m, d)
    computed = {
        "year": y,
        "month": m,
        "day": d,
        "hour": h,
        "epoch_days": days,
        "dayofweek": (days + 3) - 7 * np.floor((days + 3) / 7),
        "dayofyear": days - civil_days(y, np.ones_like(y), np.ones_like(y)) + 1,
    }
    return np.column_stack([computed[p] for p in parts]).astype(np.float64)


class DateParts(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """ISO date strings (one column) → the chosen parts as floats; NaN for a missing or bad date."""

    def __init__(self, parts: Sequence[str] = DATE_PARTS) -> None:
        self.parts = parts

    def fit(self, X: Any, y: Any = None) -> DateParts:
        unknown = set(self.parts) - set(DATE_PARTS)
        if unknown or not self.parts:
            raise ValueError(f"parts must be a non-empty subset of {DATE_PARTS}, got {list(self.parts)}")
        if np.asarray(X).ndim != 2 or np.asarray(X).shape[1] != 1:
            raise ValueError("DateParts takes exactly one column")
        self.n_features_in_ = 1
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.parts_ = tuple(self.parts)
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "parts_")
        values = np.asarray(X, dtype=object).reshape(-1)
        return parts_of(_fields(values), self.parts_)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "parts_")
        base = (
            input_features[0] if input_features is not None else getattr(self, "feature_names_in_", ["x0"])[0]
        )
        return np.asarray([f"{base}_{p}" for p in self.parts_], dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.allow_nan = True
        return tags
