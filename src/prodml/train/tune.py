"""Hyperparameter search with Optuna over the same cross-validation folds as the final model.

Example ``prodml.yaml``::

    model:
      estimator: lightgbm
      tune:
        trials: 30
        metric: roc_auc
        space:
          learning_rate: {low: 0.01, high: 0.3, log: true}
          num_leaves: {low: 8, high: 128, type: int}
          max_depth: [-1, 4, 8]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from prodml.core.errors import ConfigError, MissingDependency
from prodml.core.project import Project, Range
from prodml.train.metrics import METRICS

__all__ = ["check_tune", "search", "tuned_metric"]

logger = logging.getLogger(__name__)


def _suggest(trial: Any, name: str, spec: Range | list[Any]) -> Any:
    if isinstance(spec, list):
        return trial.suggest_categorical(name, spec)
    if spec.type == "int":
        return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, log=spec.log)


def tuned_metric(project: Project) -> str:
    """The metric the search optimises: ``model.tune.metric``, else the promotion metric."""
    return (project.model.tune.metric if project.model.tune else None) or project.promotion.metric


def check_tune(project: Project, metrics: Sequence[str]) -> None:
    """Refuse a tuned metric that does not fit the task or that cross-validation does not compute, before
    any data is read.

    Raises:
        ConfigError: ``model.tune.metric`` (or the promotion metric it defaults to) cannot be tuned on.
    """
    metric = tuned_metric(project)
    if metric not in METRICS or project.task not in METRICS[metric].tasks:
        raise ConfigError(
            f"model.tune.metric: '{metric}' does not fit task '{project.task}'",
            hint="name one of the project's metrics",
        )
    if metric not in metrics:
        raise ConfigError(
            f"model.tune.metric: '{metric}' is not among the metrics computed: {', '.join(metrics)}",
            hint="add it to metrics, or tune on one of them",
        )


def search(
    project: Project,
    evaluate: Callable[[dict[str, Any], str], dict[str, list[float]]],
    *,
    on_trial: Callable[[int, dict[str, Any], float], None] | None = None,
) -> dict[str, Any]:
    """Run the project's Optuna search; return the best parameters.

    Args:
        project: the project; ``model.tune`` must be set.
        evaluate: cross-validates one parameter set and returns per-fold scores by metric.
        on_trial: called after each trial with (number, params, score), e.g. to track it.
    """
    tune = project.model.tune
    assert tune is not None
    try:
        import optuna
    except ImportError as exc:
        raise MissingDependency("optuna", "tune") from exc
    metric = tuned_metric(project)  # check_tune has accepted it
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction: Literal["maximize", "minimize"] = (
        "maximize" if METRICS[metric].higher_is_better else "minimize"
    )
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=tune.seed))

    def objective(trial: Any) -> float:
        params = {name: _suggest(trial, name, spec) for name, spec in tune.space.items()}
        score = float(np.mean(evaluate(params, f"trial {trial.number + 1}/{tune.trials}: ")[metric]))
        if on_trial is not None:
            on_trial(trial.number, params, score)
        return score

    study.optimize(objective, n_trials=tune.trials, catch=())
    logger.info("best %s %.4f with %s", metric, study.best_value, study.best_params)
    return dict(study.best_params)
