import numpy as np
import pytest

from prodml.core.errors import ConfigError
from prodml.core.project import Validation
from prodml.train.splits import folds, holdout_split

rng = np.random.default_rng(1)
N = 300
Y = rng.integers(0, 2, N)
GROUPS = rng.integers(0, 40, N)
TIMES = np.datetime64("2025-01-01") + rng.integers(0, 100, N).astype("timedelta64[D]")


def test_group_folds_never_share_an_entity() -> None:
    parts = list(folds(Validation(strategy="group", folds=5), "binary", Y, groups=GROUPS))
    assert len(parts) == 5
    for p in parts:
        assert not set(GROUPS[p.train]) & set(GROUPS[p.test])
    assert sorted(np.concatenate([p.test for p in parts]).tolist()) == list(range(N))


def test_timeseries_folds_train_on_the_past_only() -> None:
    parts = list(
        folds(Validation(strategy="timeseries", folds=4), "regression", Y.astype(float), times=TIMES)
    )
    assert len(parts) == 4
    for p in parts:
        assert TIMES[p.train].max() < TIMES[p.test].min()  # rows of one time never straddle a cut
    few = np.repeat(TIMES[:3], 4)  # 12 rows, 3 distinct times: no 4 cuts between times
    with pytest.raises(ConfigError, match="more than 4 distinct label times; found 3"):
        list(folds(Validation(strategy="timeseries", folds=4), "regression", np.zeros(12), times=few))


def test_stratified_folds_keep_class_shares_and_refuse_rare_classes() -> None:
    parts = list(folds(Validation(strategy="stratified", folds=5), "binary", Y))
    share = Y.mean()
    for p in parts:
        assert abs(Y[p.test].mean() - share) < 0.05
    rare = np.array([0] * 50 + [1] * 3)
    with pytest.raises(ConfigError, match="class 1 has 3 row"):
        list(folds(Validation(strategy="stratified", folds=5), "binary", rare))
    with pytest.raises(ConfigError, match="classification"):
        list(folds(Validation(strategy="stratified"), "regression", Y))


def test_time_holdout_takes_whole_latest_times() -> None:
    split = holdout_split(N, 0.2, times=TIMES)
    assert TIMES[split.train].max() < TIMES[split.test].min()
    assert 0.15 < len(split.test) / N < 0.3
    random = holdout_split(N, 0.2, y=Y, stratify=True)
    assert len(random.test) == 60
    assert not set(random.train) & set(random.test)


def test_too_few_rows_or_groups() -> None:
    with pytest.raises(ConfigError, match="at least 10 rows"):
        list(folds(Validation(strategy="kfold", folds=5), "binary", Y[:6]))
    with pytest.raises(ConfigError, match="3 entities"):
        list(folds(Validation(strategy="group", folds=5), "binary", Y, groups=GROUPS % 3))
