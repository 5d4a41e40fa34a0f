"""The A/B report on a joined request log: per-arm metrics, the test, and the recommendation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from prodml.core.errors import DataError
from prodml.rollout.abtest import ab_report
from prodml.rollout.stats import two_proportions


def _log(n: int, accuracy_a: float, accuracy_b: float, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        variant = "a" if i % 2 else "b"
        label = int(rng.integers(0, 2))
        right = rng.random() < (accuracy_a if variant == "a" else accuracy_b)
        p = 0.8 if (label == 1) == right else 0.2
        rows.append({"variant": variant, "prediction": [1 - p, p], "label": float(label)})
    rows.append({"variant": "a", "prediction": [0.5, 0.5], "label": None})  # unlabelled: left out
    return pa.Table.from_pylist(rows)


def test_a_clearly_better_arm_is_recommended_with_the_z_test() -> None:
    report = ab_report(_log(4000, 0.70, 0.80), "a", "b")
    assert report["test"] == "two-proportion z" and report["recommendation"] == "promote b"
    arms = report["arms"]
    assert arms["a"]["labelled"] == 2000 and arms["b"]["labelled"] == 2000
    assert arms["a"]["low"] < arms["a"]["value"] < arms["a"]["high"]
    hits_a, hits_b = round(arms["a"]["value"] * 2000), round(arms["b"]["value"] * 2000)
    assert report["p_value"] == two_proportions(hits_a, 2000, hits_b, 2000).p_value


def test_too_few_rows_says_how_many_more_and_other_metrics_use_their_tests() -> None:
    report = ab_report(_log(200, 0.75, 0.76), "a", "b", effect=0.02)
    assert report["recommendation"].startswith("continue: ")
    assert report["needed_per_arm"] > 100
    assert ab_report(_log(400, 0.7, 0.8), "a", "b", metric="error")["test"] == "Welch t"
    assert ab_report(_log(400, 0.7, 0.8), "a", "b", metric="auc")["test"] == "bootstrap AUC"
    with pytest.raises(DataError, match="arm 'c' has 0 labelled rows"):
        ab_report(_log(100, 0.7, 0.8), "a", "c")
