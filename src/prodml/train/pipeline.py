"""The model pipeline: declared row transforms, the imputation/scaling an estimator needs, the estimator.

Tree ensembles are invariant to monotonic transforms, so ``scale`` and ``log`` are left out in front of
them: the model is the same, and the ONNX graph stays exact (a float32 transform computed in the graph
could otherwise land a value on the other side of a split threshold than the float64 one did).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from prodml.core.project import Project
from prodml.features.transforms import build_preprocessor
from prodml.train.estimators import make_estimator, spec_of

__all__ = ["build_pipeline"]


def build_pipeline(
    project: Project,
    columns: Sequence[str],
    categorical: Sequence[str],
    *,
    params: dict[str, Any] | None = None,
    dates: Sequence[str] = (),
) -> Pipeline:
    """An unfitted pipeline for the project's estimator over ``columns`` (``dates``: ISO date columns)."""
    name, task = project.model.estimator, project.task
    spec = spec_of(name, task)
    features = project.features
    if spec.trees:
        kept = [t for t in features.transforms if t.op not in ("scale", "log")]
        features = features.model_copy(update={"transforms": kept})
    steps: list[tuple[str, Any]] = [
        ("features", build_preprocessor(features, columns, categorical=categorical, dates=dates))
    ]
    if not spec.handles_nan:
        steps.append(("impute", SimpleImputer(strategy="median", keep_empty_features=True)))
    if spec.needs_scaling:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", make_estimator(name, task, {**project.model.params, **(params or {})})))
    return Pipeline(steps)
