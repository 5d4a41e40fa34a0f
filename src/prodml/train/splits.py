"""Validation splits: a time-ordered (or stratified) holdout, then K folds on the rest.

Example:
    >>> split = holdout_split(n=10, holdout=0.2, times=list(range(10)))
    >>> split.test.tolist()
    [8, 9]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, TimeSeriesSplit, train_test_split

from prodml.core.errors import ConfigError
from prodml.core.project import Validation
from prodml.core.types import Task

__all__ = ["Split", "folds", "holdout_split"]


@dataclass(frozen=True)
class Split:
    """Row positions of a train part and a test part."""

    train: np.ndarray
    test: np.ndarray


def holdout_split(
    n: int,
    holdout: float,
    *,
    times: Any | None = None,
    y: Any | None = None,
    stratify: bool = False,
    seed: int = 0,
) -> Split:
    """The final holdout: the latest ``holdout`` share of rows by time, or a (stratified) random share.

    With timestamps, every row at or after the cut-off time goes to the holdout, so no label time is
    split across the two parts.
    """
    idx = np.arange(n)
    if holdout <= 0:
        return Split(idx, idx[:0])
    if times is not None:
        t = np.asarray(times).astype("datetime64[us]").astype(np.int64)
        cut = np.quantile(t, 1 - holdout, method="higher")
        late = t >= cut
        if late.all() or not late.any():
            raise ConfigError(
                "validation.holdout: every label has the same time, so no time-ordered holdout exists",
                hint="set target.timestamp only for time-stamped labels, or validation.holdout: 0",
            )
        return Split(idx[~late], idx[late])
    train, test = train_test_split(
        idx, test_size=holdout, random_state=seed, stratify=np.asarray(y) if stratify else None
    )
    return Split(np.sort(train), np.sort(test))


def folds(
    validation: Validation,
    task: Task,
    y: Any,
    *,
    groups: Any | None = None,
    times: Any | None = None,
) -> Iterator[Split]:
    """Cross-validation folds over the rows of ``y`` (positions into it).

    - ``kfold``: shuffled K folds; ``stratified``: class shares kept per fold (classification only);
    - ``group``: no group (entity) in two folds; ``timeseries``: each fold trains on the past only.

    Raises:
        ConfigError: the strategy does not fit the data (a class with fewer rows than folds, no groups…).
    """
    y = np.asarray(y)
    k = validation.folds
    n = y.shape[0]
    if n < 2 * k:
        raise ConfigError(
            f"validation.folds: {k} folds need at least {2 * k} rows, the data has {n}",
            hint="lower validation.folds or use more data",
        )
    strategy = validation.strategy
    splitter: Any
    if strategy == "stratified":
        if task not in ("binary", "multiclass"):
            raise ConfigError(
                f"validation.strategy 'stratified' needs a classification task, not '{task}'",
                hint="use kfold, group or timeseries",
            )
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() < k:
            rare = classes[counts.argmin()].item()
            raise ConfigError(
                f"validation: class {rare!r} has {counts.min()} row(s) but validation.folds is {k}",
                hint="lower validation.folds, or get more rows of that class",
            )
        splitter = StratifiedKFold(k, shuffle=True, random_state=validation.seed)
        parts = splitter.split(np.zeros(n), y)
    elif strategy == "group":
        if groups is None:
            raise ConfigError(
                "validation.strategy 'group' needs the project's 'entity'",
                hint="set entity: in prodml.yaml, or use kfold",
            )
        n_groups = len(np.unique(np.asarray(groups)))
        if n_groups < k:
            raise ConfigError(
                f"validation: {n_groups} entities cannot make {k} group folds", hint="lower validation.folds"
            )
        splitter = GroupKFold(k, shuffle=True, random_state=validation.seed)
        parts = splitter.split(np.zeros(n), y, np.asarray(groups))
    elif strategy == "timeseries":
        if times is None:
            raise ConfigError(
                "validation.strategy 'timeseries' needs target.timestamp",
                hint="set target.timestamp, or use kfold",
            )
        # folds cut between distinct times: rows that share a time never sit on both sides of a cut
        distinct, which = np.unique(np.asarray(times), return_inverse=True)
        if len(distinct) <= k:
            raise ConfigError(
                f"validation.strategy 'timeseries' needs more than {k} distinct label times; "
                f"found {len(distinct)}",
                hint="use fewer validation.folds",
            )
        parts = (
            (np.flatnonzero(np.isin(which, a)), np.flatnonzero(np.isin(which, b)))
            for a, b in TimeSeriesSplit(k).split(distinct)
        )
    else:
        splitter = KFold(k, shuffle=True, random_state=validation.seed)
        parts = splitter.split(np.zeros(n))
    for train, test in parts:
        yield Split(np.asarray(train), np.asarray(test))
