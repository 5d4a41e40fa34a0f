"""Statistics for A/B tests between deployment variants: intervals, tests and sample sizes.

The test follows the metric: a rate (conversion, accuracy) uses the pooled two-proportion z-test, a mean
(a regression error, a score) Welch's t-test (unequal variances), and ROC AUC a paired-free bootstrap of
the difference. ``sample_size_*`` give the rows per arm needed to detect ``effect`` (absolute) at
significance ``alpha`` (two-sided) with ``power``. scipy supplies the distributions only; the tests are
checked against ``scipy.stats`` in tests/rollout/test_stats.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

__all__ = [
    "Comparison",
    "auc",
    "bootstrap_auc",
    "mean_interval",
    "proportion_interval",
    "sample_size_means",
    "sample_size_proportions",
    "two_proportions",
    "welch",
]


@dataclass(frozen=True)
class Comparison:
    """Arm B against arm A: ``difference`` = B − A with its interval, the test statistic and p-value."""

    test: str
    a: float
    b: float
    difference: float
    low: float
    high: float
    statistic: float
    p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def _z(confidence: float) -> float:
    return float(st.norm.ppf(0.5 + confidence / 2))


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a rate (good near 0 and 1 and for small ``n``)."""
    if n <= 0:
        return (0.0, 1.0)
    z, p = _z(confidence), successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of a mean."""
    x = np.asarray(values, np.float64)
    if len(x) < 2:
        return (-math.inf, math.inf)
    half = float(st.t.ppf(0.5 + confidence / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return (float(x.mean()) - half, float(x.mean()) + half)


def two_proportions(
    successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = 0.95
) -> Comparison:
    """Pooled two-proportion z-test of B's rate against A's; the interval of the difference is unpooled."""
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both arms need at least one row")
    pa, pb = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (pb - pa) / se if se > 0 else 0.0
    p_value = float(2 * st.norm.sf(abs(z)))
    half = _z(confidence) * math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    return Comparison("two-proportion z", pa, pb, pb - pa, pb - pa - half, pb - pa + half, z, p_value)


def welch(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> Comparison:
    """Welch's t-test of B's mean against A's (``scipy.stats.ttest_ind(b, a, equal_var=False)``)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("both arms need at least two rows")
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    diff = float(y.mean() - x.mean())
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1)) if se > 0 else 1.0
    t = diff / se if se > 0 else 0.0
    p_value = float(2 * st.t.sf(abs(t), df))
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * se
    return Comparison("Welch t", float(x.mean()), float(y.mean()), diff, diff - half, diff + half, t, p_value)


def auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """ROC AUC by ranks (Mann–Whitney U; ties count half); NaN without both classes."""
    y = np.asarray(labels, np.float64) > 0.5
    s = np.asarray(scores, np.float64)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = st.rankdata(s)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def bootstrap_auc(
    labels_a: Sequence[float] | np.ndarray,
    scores_a: Sequence[float] | np.ndarray,
    labels_b: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """B's AUC against A's: percentile bootstrap interval of the difference (each arm resampled on its
    own), and the two-sided p-value as twice the share of resampled differences on the far side of 0."""
    ya, sa = np.asarray(labels_a, np.float64), np.asarray(scores_a, np.float64)
    yb, sb = np.asarray(labels_b, np.float64), np.asarray(scores_b, np.float64)
    auc_a, auc_b = auc(ya, sa), auc(yb, sb)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i, j = rng.integers(0, len(ya), len(ya)), rng.integers(0, len(yb), len(yb))
        d = auc(yb[j], sb[j]) - auc(ya[i], sa[i])
        if not math.isnan(d):
            diffs.append(d)
    if not diffs:
        raise ValueError("each arm needs both classes among its labels")
    d_arr = np.asarray(diffs)
    tail = (1 - confidence) / 2
    low, high = np.quantile(d_arr, [tail, 1 - tail])
    p_value = min(1.0, 2 * min(float((d_arr <= 0).mean()), float((d_arr >= 0).mean())))
    diff = auc_b - auc_a
    return Comparison("bootstrap AUC", auc_a, auc_b, diff, float(low), float(high), diff, p_value)


def sample_size_proportions(base: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Rows per arm for a two-sided two-proportion test to detect ``base`` → ``base + effect``."""
    p1, p2 = base, base + effect
    if not (0 < p1 < 1 and 0 < p2 < 1) or effect == 0:
        raise ValueError("the base rate and base + effect must lie strictly between 0 and 1, effect ≠ 0")
    za, zb = float(st.norm.ppf(1 - alpha / 2)), float(st.norm.ppf(power))
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2
    return math.ceil(n / effect**2)


def sample_size_means(sd: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Rows per arm for a two-sided test of means (normal approximation) to detect a shift of ``effect``."""
    if sd <= 0 or effect == 0:
        raise ValueError("the standard deviation must be positive and the effect non-zero")
    za, zb = float(st.norm.ppf(1 - alpha / 2)), float(st.norm.ppf(power))
    return math.ceil(2 * ((za + zb) * sd / effect) ** 2)
