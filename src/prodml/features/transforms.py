"""Row transforms declared in ``features.transforms``, as scikit-learn transformers.

They are fitted with the model and exported with it, so training and serving apply the same arithmetic.
Categorical columns without a transform are one-hot encoded, date columns (ISO strings) become date parts
(:mod:`prodml.features.dates`); numeric columns without one pass through.

Example:
    >>> pre = build_preprocessor(project.features, ["age", "plan"], categorical=["plan"])  # doctest: +SKIP
    >>> pre.fit_transform(frame.to_pandas())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from prodml.core.errors import FeatureError
from prodml.core.project import DATE_PARTS, Features
from prodml.features.dates import DateParts

__all__ = ["Bucketize", "DateParts", "SignedLog1p", "build_preprocessor"]

# names a ColumnTransformer step cannot take: its own parameters, and the pass-through step's name
_TAKEN = frozenset(
    {
        "numeric",
        "transformers",
        "remainder",
        "sparse_threshold",
        "n_jobs",
        "transformer_weights",
        "verbose",
        "verbose_feature_names_out",
        "force_int_remainder_cols",
    }
)


class _NaNTolerant(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Element-wise transformers that keep NaN (a missing feature stays missing for the model)."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class SignedLog1p(_NaNTolerant):
    """``sign(x) * log1p(|x|)``: compresses heavy tails, defined for every real, keeps NaN."""

    def fit(self, X: Any, y: Any = None) -> SignedLog1p:
        validate_data(self, X, ensure_all_finite="allow-nan")
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "n_features_in_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        return np.sign(X) * np.log1p(np.abs(X))  # type: ignore[no-any-return]


class Bucketize(_NaNTolerant):
    """Replace each value by the index of its bucket: ``boundaries`` [25, 35] gives 0, 1 or 2.

    A value equal to a boundary goes to the bucket above it; NaN stays NaN.
    """

    def __init__(self, boundaries: Sequence[float] = (0.0,)) -> None:
        self.boundaries = boundaries

    def fit(self, X: Any, y: Any = None) -> Bucketize:
        validate_data(self, X, ensure_all_finite="allow-nan")
        edges = np.asarray(self.boundaries, dtype=np.float64)
        if edges.ndim != 1 or edges.size == 0 or np.any(np.diff(edges) <= 0):
            raise ValueError("boundaries must be a non-empty, strictly increasing sequence")
        self.boundaries_ = edges
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "boundaries_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False, dtype=np.float64)
        buckets = np.searchsorted(self.boundaries_, X, side="right").astype(np.float64)
        return np.where(np.isnan(X), np.nan, buckets)


def build_preprocessor(
    features: Features,
    columns: Sequence[str],
    *,
    categorical: Sequence[str] = (),
    dates: Sequence[str] = (),
) -> ColumnTransformer:
    """A ColumnTransformer applying the declared transforms to ``columns`` (the model's inputs).

    ``dates``: columns that hold ISO date strings; without a transform they get every date part.

    Raises:
        FeatureError: a transform names a column that is not a feature, one column has two transforms, or
            a ``date`` transform names a column that holds no dates.
    """
    by_column: dict[str, Any] = {}
    for i, t in enumerate(features.transforms):
        if t.column not in columns:
            raise FeatureError(
                f"features.transforms[{i}]: '{t.column}' is not a feature column",
                hint="features are: " + ", ".join(columns),
            )
        if t.column in by_column:
            raise FeatureError(
                f"features.transforms[{i}]: column '{t.column}' already has a transform",
                hint="give each column at most one transform",
            )
        if (t.op == "date") != (t.column in dates):
            raise FeatureError(
                f"features.transforms[{i}]: column '{t.column}' "
                + ("holds no dates" if t.op == "date" else f"holds dates; op '{t.op}' does not apply"),
                hint="op 'date' is for date/timestamp columns (and the only op for them)",
            )
        if t.op == "date":
            step: Any = DateParts(tuple(t.parts or DATE_PARTS))
        elif t.op == "onehot":
            step = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        elif t.op == "scale":
            step = StandardScaler()
        elif t.op == "log":
            step = SignedLog1p()
        else:
            step = Bucketize(t.boundaries or ())
        by_column[t.column] = step
    steps: list[tuple[str, Any, list[str]]] = []
    for col in columns:
        # a step name may not hold "__" (scikit-learn's parameter separator): columns are named as they come
        name = col if "__" not in col and col not in _TAKEN else f"column {columns.index(col)}"
        if col in by_column:
            steps.append((name, by_column[col], [col]))
        elif col in dates:
            steps.append((name, DateParts(DATE_PARTS), [col]))
        elif col in categorical:
            steps.append((name, OneHotEncoder(handle_unknown="ignore", sparse_output=False), [col]))
    passthrough = [c for c in columns if c not in by_column and c not in categorical and c not in dates]
    if passthrough:
        steps.append(("numeric", "passthrough", passthrough))
    return ColumnTransformer(steps, verbose_feature_names_out=False)
