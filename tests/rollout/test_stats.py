"""The A/B statistics equal scipy's (and sklearn's AUC) on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from prodml.rollout.stats import (
    auc,
    bootstrap_auc,
    mean_interval,
    proportion_interval,
    sample_size_means,
    sample_size_proportions,
    two_proportions,
    welch,
)

RNG = np.random.default_rng(7)
A = RNG.normal(10.0, 2.0, 400)
B = RNG.normal(10.4, 3.0, 300)


def test_welch_equals_scipy() -> None:
    result = welch(A, B)
    expected = st.ttest_ind(B, A, equal_var=False)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    ci = expected.confidence_interval(0.95)
    assert (result.low, result.high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    assert result.difference == pytest.approx(B.mean() - A.mean())
    low, high = mean_interval(A)
    scipy_low, scipy_high = st.t.interval(0.95, len(A) - 1, loc=A.mean(), scale=st.sem(A))
    assert (low, high) == (pytest.approx(scipy_low), pytest.approx(scipy_high))


def test_the_two_proportion_z_test_equals_the_formula_on_scipys_normal() -> None:
    result = two_proportions(120, 1000, 150, 1000)
    pooled = 270 / 2000
    z = (0.15 - 0.12) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert result.statistic == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(2 * st.norm.sf(abs(z)), rel=1e-12)
    assert result.p_value == pytest.approx(0.0497, abs=1e-3)  # the textbook value for this data
    assert result.low < 0.03 < result.high
    low, high = proportion_interval(120, 1000)  # Wilson, as scipy's binomtest gives it
    ci = st.binomtest(120, 1000).proportion_ci(0.95, method="wilson")
    assert (low, high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))


def test_auc_equals_sklearn_and_the_bootstrap_finds_a_real_difference() -> None:
    from sklearn.metrics import roc_auc_score

    labels = RNG.integers(0, 2, 500)
    weak = labels * 0.3 + RNG.normal(0, 1, 500)
    strong = labels * 1.5 + RNG.normal(0, 1, 500)
    assert auc(labels, weak) == pytest.approx(roc_auc_score(labels, weak), rel=1e-12)
    tied = np.round(weak, 1)
    assert auc(labels, tied) == pytest.approx(roc_auc_score(labels, tied), rel=1e-12)
    result = bootstrap_auc(labels, weak, labels, strong, resamples=300, seed=1)
    assert result.difference > 0 and result.low > 0 and result.p_value < 0.01
    same = bootstrap_auc(labels[:250], weak[:250], labels[250:], weak[250:], resamples=300, seed=1)
    assert same.low < 0 < same.high and same.p_value > 0.05


def test_sample_sizes_match_the_textbook() -> None:
    # 10% → 12%, alpha 0.05, power 0.8: 3,841 per arm (Fleiss without continuity correction)
    assert sample_size_proportions(0.10, 0.02) == 3841
    # sd 1, shift 0.2: 2 * (1.96 + 0.8416)^2 / 0.04 = 392.4 → 393
    assert sample_size_means(1.0, 0.2) == 393
    with pytest.raises(ValueError, match="strictly between"):
        sample_size_proportions(0.99, 0.02)
