"""Estimators by name, imported only when chosen.

Each name maps, per task, to a dotted path and the extra that provides it, so a missing library gives a
``pip install 'prodml[x]'`` message instead of an ImportError, and ``import prodml.train`` stays cheap.

Example:
    >>> make_estimator("random_forest", "binary", {"n_estimators": 10})
    RandomForestClassifier(n_estimators=10, n_jobs=1, random_state=0)
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from prodml.core.errors import ConfigError, MissingDependency
from prodml.core.types import Task

__all__ = ["ESTIMATORS", "EstimatorSpec", "make_estimator"]


@dataclass(frozen=True)
class EstimatorSpec:
    """Where an estimator lives for each task, and how it is prepared and exported."""

    paths: dict[Task, str]
    extra: str = "train"
    handles_nan: bool = False  # False: a median imputer goes in front of it
    needs_scaling: bool = False  # True: a StandardScaler goes in front of it
    trees: bool = True  # tree ensembles are invariant to monotonic transforms (scale, log)
    defaults: tuple[tuple[str, Any], ...] = ()


_SK = "sklearn.ensemble"
ESTIMATORS: dict[str, EstimatorSpec] = {
    "logistic_regression": EstimatorSpec(
        {
            "binary": "sklearn.linear_model:LogisticRegression",
            "multiclass": "sklearn.linear_model:LogisticRegression",
        },
        needs_scaling=True,
        trees=False,
        defaults=(("max_iter", 1000),),
    ),
    "linear_regression": EstimatorSpec(
        {"regression": "sklearn.linear_model:Ridge"},
        needs_scaling=True,
        trees=False,
        defaults=(("alpha", 1e-6),),
    ),
    "ridge": EstimatorSpec({"regression": "sklearn.linear_model:Ridge"}, needs_scaling=True, trees=False),
    "random_forest": EstimatorSpec(
        {
            "binary": f"{_SK}:RandomForestClassifier",
            "multiclass": f"{_SK}:RandomForestClassifier",
            "regression": f"{_SK}:RandomForestRegressor",
        },
        defaults=(("n_jobs", 1), ("random_state", 0)),
    ),
    "gradient_boosting": EstimatorSpec(
        {
            "binary": f"{_SK}:GradientBoostingClassifier",
            "multiclass": f"{_SK}:GradientBoostingClassifier",
            "regression": f"{_SK}:GradientBoostingRegressor",
        },
        defaults=(("random_state", 0),),
    ),
    "hist_gradient_boosting": EstimatorSpec(
        {
            "binary": f"{_SK}:HistGradientBoostingClassifier",
            "multiclass": f"{_SK}:HistGradientBoostingClassifier",
            "regression": f"{_SK}:HistGradientBoostingRegressor",
        },
        handles_nan=True,
        defaults=(("random_state", 0),),
    ),
    "lightgbm": EstimatorSpec(
        {
            "binary": "lightgbm:LGBMClassifier",
            "multiclass": "lightgbm:LGBMClassifier",
            "regression": "lightgbm:LGBMRegressor",
            "ranking": "lightgbm:LGBMRanker",
        },
        extra="lightgbm",
        handles_nan=True,
        defaults=(("n_jobs", 1), ("random_state", 0), ("verbose", -1)),
    ),
    "xgboost": EstimatorSpec(
        {
            "binary": "xgboost:XGBClassifier",
            "multiclass": "xgboost:XGBClassifier",
            "regression": "xgboost:XGBRegressor",
            "ranking": "xgboost:XGBRanker",
        },
        extra="xgboost",
        handles_nan=True,
        defaults=(("n_jobs", 1), ("random_state", 0)),
    ),
    "catboost": EstimatorSpec(
        {
            "binary": "catboost:CatBoostClassifier",
            "multiclass": "catboost:CatBoostClassifier",
            "regression": "catboost:CatBoostRegressor",
        },
        extra="catboost",
        handles_nan=True,
        defaults=(
            ("thread_count", 1),
            ("random_seed", 0),
            ("verbose", False),
            ("allow_writing_files", False),
        ),
    ),
}


def spec_of(name: str, task: Task) -> EstimatorSpec:
    """The registry entry for ``name``; ConfigError naming the alternatives if it does not fit."""
    spec = ESTIMATORS.get(name)
    if spec is None or task not in spec.paths:
        fitting = sorted(n for n, s in ESTIMATORS.items() if task in s.paths)
        what = "is not a known estimator" if spec is None else f"does not support task '{task}'"
        raise ConfigError(
            f"model.estimator: '{name}' {what}", hint=f"for {task} use one of: {', '.join(fitting)}"
        )
    return spec


def make_estimator(name: str, task: Task, params: dict[str, Any] | None = None) -> Any:
    """Instantiate estimator ``name`` for ``task`` with ``params`` over prodml's defaults.

    Raises:
        ConfigError: unknown name, wrong task, or a hyperparameter the estimator does not take.
        MissingDependency: the library is not installed.
    """
    spec = spec_of(name, task)
    module_name, _, attr = spec.paths[task].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise MissingDependency(module_name, spec.extra) from exc
    parameters = inspect.signature(cls.__init__).parameters.values()
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    accepted = {p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD}
    given = dict(params or {})
    unknown = sorted(set(given) - accepted)
    if unknown and not takes_kwargs:  # LightGBM and XGBoost pass extra keywords to their boosters
        raise ConfigError(
            f"model.params: {attr} does not take {', '.join(repr(u) for u in unknown)}",
            hint=f"its hyperparameters are: {', '.join(sorted(accepted))}",
        )
    merged = {**dict(spec.defaults), **given}
    try:
        return cls(**merged)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model.params: {attr} rejected the parameters: {exc}", hint="fix the values under model.params"
        ) from exc
