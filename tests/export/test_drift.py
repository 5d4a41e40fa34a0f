"""The drift kernels against scipy, the reference profile end to end, alert and false-positive rates, and
the live sketch (its gauges, its windows, and that its failures never reach the caller)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from prodml.export.drift import (
    PREDICTION,
    LiveSketch,
    Reference,
    Thresholds,
    chi_square,
    compare,
    count,
    js,
    ks,
    ks_pvalue,
    prediction_score,
    psi,
    wasserstein,
)
from prodml.export.profile import reference_profile

TOL = 1e-9


def _psi_reference(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> float:
    """The textbook PSI, one bin at a time."""
    total = 0.0
    for a, b in zip(p / p.sum(), q / q.sum(), strict=True):
        if a == 0 and b == 0:
            continue
        a, b = max(a, eps), max(b, eps)
        total += (b - a) * np.log(b / a)
    return total


@pytest.fixture
def counts() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    ref = rng.integers(1, 500, size=(6, 12)).astype(float)
    cur = rng.integers(0, 300, size=(6, 12)).astype(float)
    cur[0, 3] = 0.0  # an empty current bin
    return ref, cur


def test_psi_equals_the_reference_implementation(counts: tuple[np.ndarray, np.ndarray]) -> None:
    ref, cur = counts
    got = psi(ref, cur)
    for i in range(len(ref)):
        assert got[i] == pytest.approx(_psi_reference(ref[i], cur[i]), abs=TOL)


def test_js_equals_scipy(counts: tuple[np.ndarray, np.ndarray]) -> None:
    ref, cur = counts
    got = js(ref, cur)
    for i in range(len(ref)):
        assert got[i] == pytest.approx(jensenshannon(ref[i], cur[i], base=2), abs=TOL)


def test_ks_on_values_that_are_the_bins_equals_scipy() -> None:
    rng = np.random.default_rng(1)
    for i in range(5):
        a, b = rng.integers(0, 15, 700), rng.integers(i, 15, 400)
        ra = np.bincount(a, minlength=15)[None].astype(float)
        rb = np.bincount(b, minlength=15)[None].astype(float)
        assert ks(ra, rb)[0] == pytest.approx(stats.ks_2samp(a, b).statistic, abs=TOL)


def test_ks_pvalue_is_kolmogorovs_limiting_distribution() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=3000), rng.normal(0.05, size=2000)
    d = stats.ks_2samp(a, b).statistic
    en = 3000 * 2000 / 5000
    expected = stats.kstwobign.sf(np.sqrt(en) * d)
    assert ks_pvalue(np.array([d]), np.array([3000]), np.array([2000]))[0] == pytest.approx(expected, abs=TOL)
    # and within a few percent of scipy's finite-n asymptotic p-value at this size
    assert ks_pvalue(np.array([d]), np.array([3000]), np.array([2000]))[0] == pytest.approx(
        stats.ks_2samp(a, b, method="asymp").pvalue, rel=0.05
    )


def test_wasserstein_equals_scipy_with_weights() -> None:
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=(4, 9)), rng.normal(1, 2, size=(4, 7))
    uw, vw = rng.random((4, 9)), rng.random((4, 7))
    uw[0, 2] = 0.0
    got = wasserstein(uw, u, vw, v)
    for i in range(4):
        assert got[i] == pytest.approx(stats.wasserstein_distance(u[i], v[i], uw[i], vw[i]), abs=TOL)


def test_chi_square_equals_scipy(counts: tuple[np.ndarray, np.ndarray]) -> None:
    ref, cur = counts
    stat, p, v = chi_square(ref, cur)
    for i in range(len(ref)):
        expected = stats.chisquare(cur[i], ref[i] / ref[i].sum() * cur[i].sum())
        assert stat[i] == pytest.approx(expected.statistic, abs=TOL * max(1, expected.statistic))
        assert p[i] == pytest.approx(expected.pvalue, abs=TOL)
        assert v[i] == pytest.approx(np.sqrt(expected.statistic / (cur[i].sum() * 11)), abs=TOL)


def test_profile_to_scores_equals_scipy_on_the_raw_samples() -> None:
    """End to end: a profile of integer data (one value per percentile bin) scored against a window gives
    scipy's KS and Wasserstein on the raw samples, to 1e-9."""
    rng = np.random.default_rng(4)
    train = pd.DataFrame({"x": rng.integers(0, 40, 20_000).astype(float)})
    window = rng.integers(3, 40, 5_000).astype(float)
    ref = Reference.from_profile(reference_profile(train, [], None))
    (score,) = compare(ref, count(ref, {"x": window}, {}))
    assert score.ks == pytest.approx(stats.ks_2samp(train["x"], window).statistic, abs=TOL)
    assert score.wasserstein == pytest.approx(stats.wasserstein_distance(train["x"], window), abs=TOL)


def test_prediction_score_of_each_output_shape() -> None:
    assert prediction_score(np.array([[0.2, 0.8], [0.6, 0.4]])).tolist() == [0.8, 0.4]
    assert prediction_score(np.array([[3.0], [4.0]])).tolist() == [3.0, 4.0]
    assert prediction_score(np.array([[0.1, 0.2, 0.7]])).tolist() == [0.7]


def _world(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    frame = pd.DataFrame({f"x{i}": rng.normal(shift if i == 0 else 0.0, 1 + i / 4, n) for i in range(8)})
    frame["plan"] = rng.choice(["basic", "pro", "enterprise"], n, p=[0.6, 0.3, 0.1])
    frame["country"] = rng.choice(list("ABCDEF"), n)
    return frame


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(0)
    train = _world(rng, 50_000)
    return Reference.from_profile(reference_profile(train, ["plan", "country"], rng.random(50_000)))


def _score(reference: Reference, frame: pd.DataFrame, prediction: np.ndarray) -> list:  # type: ignore[type-arg]
    numbers = {c: frame[c].to_numpy() for c in frame if c.startswith("x")} | {PREDICTION: prediction}
    strings = {c: frame[c].to_numpy(object) for c in ("plan", "country")}
    return compare(reference, count(reference, numbers, strings))


def test_false_positives_below_5_percent_over_100_seeds(reference: Reference) -> None:
    alarms = 0
    for seed in range(100):
        rng = np.random.default_rng(1000 + seed)
        scores = _score(reference, _world(rng, 1_000), rng.random(1_000))
        assert all(s.status != "insufficient" for s in scores)
        alarms += any(s.status == "drift" for s in scores)
    assert alarms < 5


def test_a_shift_alerts_within_one_window(reference: Reference) -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        frame = _world(rng, 1_000, shift=0.5)
        frame.loc[:, "plan"] = rng.choice(["basic", "pro", "enterprise"], 1_000, p=[0.3, 0.3, 0.4])
        scores = {s.feature: s for s in _score(reference, frame, rng.random(1_000) ** 2)}
        assert scores["x0"].status == "drift" and "ks" in scores["x0"].breaches
        assert scores["plan"].status == "drift"
        assert scores[PREDICTION].status == "drift"
        assert scores["x3"].status == "ok"


def test_small_windows_do_not_alarm(reference: Reference) -> None:
    rng = np.random.default_rng(5)
    scores = _score(reference, _world(rng, 100, shift=3.0), rng.random(100))
    assert {s.status for s in scores} == {"insufficient"}


def test_data_quality_nulls_out_of_range_and_unseen(reference: Reference) -> None:
    rng = np.random.default_rng(6)
    frame = _world(rng, 2_000)
    frame.loc[:199, "x1"] = np.nan
    frame.loc[:299, "x2"] = 1e6
    frame.loc[:99, "country"] = "ZZ"
    scores = {s.feature: s for s in _score(reference, frame, rng.random(2_000))}
    assert scores["x1"].null_rate == pytest.approx(0.1) and "null_rate" in scores["x1"].breaches
    assert scores["x2"].out_of_range == pytest.approx(0.15) and "out_of_range" in scores["x2"].breaches
    assert scores["country"].unseen == pytest.approx(0.05) and "unseen" in scores["country"].breaches


def test_per_feature_thresholds_override_the_defaults(reference: Reference) -> None:
    rng = np.random.default_rng(7)
    frame = _world(rng, 2_000, shift=0.5)
    numbers = {c: frame[c].to_numpy() for c in frame if c.startswith("x")}
    t = Thresholds(per_feature={"x0": {"psi": None, "ks": None}})
    scores = {s.feature: s for s in compare(reference, count(reference, numbers, {}), t)}
    assert scores["x0"].status == "ok"


def test_no_unshifted_column_flagged_at_large_windows(reference: Reference) -> None:
    rng = np.random.default_rng(8)
    scores = _score(reference, _world(rng, 200_000), rng.random(200_000))
    assert [s.feature for s in scores if s.status == "drift"] == []
    assert all(s.ks_pvalue < 1 for s in scores if s.kind == "numeric")


# --- the live sketch ----------------------------------------------------------------------------------


def _profile() -> dict:  # type: ignore[type-arg]
    rng = np.random.default_rng(9)
    train = _world(rng, 20_000)
    return reference_profile(train, ["plan", "country"], rng.random(20_000))


LAYOUT = (tuple(f"x{i}" for i in range(8)), ("plan", "country"))


def _requests(rng: np.random.Generator, n: int, shift: float = 0.0):  # type: ignore[no-untyped-def]
    frame = _world(rng, n, shift)
    numbers = frame[list(LAYOUT[0])].to_numpy(np.float32)
    strings = frame[list(LAYOUT[1])].to_numpy(object)
    p = rng.random(n)
    return numbers, strings, np.stack([1 - p, p], axis=1).astype(np.float32)


def test_sketch_scores_windows_like_the_batch_path() -> None:
    rng = np.random.default_rng(10)
    sketch = LiveSketch(_profile(), LAYOUT, window_rows=3_000, buffer_rows=256)
    numbers, strings, outputs = _requests(rng, 3_000, shift=0.6)
    for i in range(0, 3_000, 7):  # requests of 7 rows
        sketch.observe(numbers[i : i + 7], strings[i : i + 7], outputs[i : i + 7])
    sketch.fold()
    assert sketch.windows == 1 and sketch.window.rows == 0
    live = {s.feature: s for s in sketch.last}
    ref = sketch.reference
    batch = compare(
        ref,
        count(
            ref,
            {c: numbers[:, i] for i, c in enumerate(LAYOUT[0])} | {PREDICTION: outputs[:, 1]},
            {c: strings[:, i] for i, c in enumerate(LAYOUT[1])},
        ),
    )
    for s in batch:
        assert live[s.feature].psi == pytest.approx(s.psi, abs=1e-12)
    assert live["x0"].status == "drift" and live["x3"].status == "ok"


def test_sketch_exports_prometheus_gauges() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    rng = np.random.default_rng(11)
    sketch = LiveSketch(_profile(), LAYOUT, window_rows=1_000)
    sketch.observe(*_requests(rng, 2_500, shift=0.6))
    sketch.fold()
    registry = CollectorRegistry()
    registry.register(sketch.collector())
    text = generate_latest(registry).decode()
    assert 'prodml_drift_score{feature="x0",statistic="psi"}' in text
    assert 'prodml_drift_breach{feature="x0"} 1.0' in text
    assert 'prodml_drift_breach{feature="x3"} 0.0' in text
    assert "prodml_drift_windows_total 2.0" in text
    assert "prodml_drift_pending_rows 500.0" in text
    assert "prodml_drift_sketch_errors_total 0.0" in text


def test_collector_follows_the_current_sketch_and_survives_errors() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from prodml.export.drift import drift_collector

    current: list[LiveSketch | None] = [None]
    registry = CollectorRegistry()
    registry.register(drift_collector(lambda: current[0]))
    assert b"prodml_drift" not in generate_latest(registry)  # no model yet: no series
    current[0] = LiveSketch(_profile(), LAYOUT, window_rows=1_000)
    assert b"prodml_drift_windows_total 0.0" in generate_latest(registry)

    def broken() -> LiveSketch:
        raise RuntimeError("boom")

    registry = CollectorRegistry()
    registry.register(drift_collector(broken))
    assert b"prodml_drift" not in generate_latest(registry)  # the scrape itself still answers


def test_a_failing_sketch_never_raises_and_stops() -> None:
    rng = np.random.default_rng(12)
    sketch = LiveSketch(_profile(), LAYOUT, window_rows=1_000)
    numbers, strings, outputs = _requests(rng, 10)
    sketch.observe(numbers[:, :3], strings, outputs)  # wrong width: a broken caller
    sketch.observe(numbers, strings, outputs)
    sketch.fold(force=True)
    assert sketch.failed and sketch.errors == 1
    sketch.observe(numbers, strings, outputs)  # ignored from now on, still no exception
    sketch.fold()
    assert sketch.errors == 1


def test_profile_without_sketch_still_scores() -> None:
    """Packages written before the fine bins: deciles only, no Wasserstein."""
    profile = _profile()
    for f in profile["features"].values():
        f.pop("sketch", None)
    ref = Reference.from_profile(profile)
    rng = np.random.default_rng(13)
    frame = _world(rng, 2_000, shift=0.6)
    scores = {s.feature: s for s in compare(ref, count(ref, {"x0": frame["x0"].to_numpy()}, {}))}
    assert scores["x0"].status == "drift"
    assert np.isnan(scores["x0"].wasserstein)


@pytest.mark.parametrize("kind", ["normal", "lognormal", "integers", "constant"])
def test_grid_lookup_equals_searchsorted(kind: str) -> None:
    from prodml.export.drift import Grid, _bounds

    rng = np.random.default_rng(14)
    ref = {
        "normal": rng.normal(size=50_000),
        "lognormal": rng.lognormal(0, 2, 50_000),
        "integers": rng.integers(0, 30, 50_000).astype(float),
        "constant": np.full(1000, 3.0),
    }[kind]
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 101)[1:-1]))
    bounds = _bounds(edges, ref.min(), ref.max())
    grid = Grid.build(bounds)
    assert grid is not None
    x = np.concatenate(
        [
            rng.choice(ref, 200_000).astype(np.float32) * rng.choice([1, 1.5], 200_000).astype(np.float32),
            np.array([np.inf, -np.inf, 1e30, -1e30, 0.0], np.float32),
            bounds,
            np.nextafter(bounds, np.float32(-np.inf)),
        ]
    )
    assert (grid.index(x) == np.searchsorted(bounds, x, side="right")).all()
    assert grid.index(np.array([np.nan], np.float32)).shape == (1,)  # NaN: any bin, overwritten by count


def test_sample_every_keeps_one_request_in_k() -> None:
    rng = np.random.default_rng(15)
    sketch = LiveSketch(_profile(), LAYOUT, window_rows=1_000, sample_every=3)
    numbers, strings, outputs = _requests(rng, 9)
    for i in range(9):
        sketch.observe(numbers[i : i + 1], strings[i : i + 1], outputs[i : i + 1])
    sketch.fold(force=True)
    assert sketch.window.rows == 3
    capped = LiveSketch(_profile(), LAYOUT, window_rows=1_000, rows_per_request=10)
    numbers, strings, outputs = _requests(rng, 95)
    capped.observe(numbers, strings, outputs)
    capped.fold(force=True)
    assert capped.window.rows == 10  # every 10th of 95 rows


def test_small_and_large_windows_bin_alike(reference: Reference, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's small folds bin all columns at once, large windows column by column: same counts."""
    import prodml.export.drift as drift

    rng = np.random.default_rng(16)
    frame = _world(rng, 3_000, shift=0.3)
    frame.loc[:9, "x1"] = np.nan
    frame.loc[10:19, "x2"] = np.inf
    numbers = {c: frame[c].to_numpy() for c in frame if c.startswith("x")} | {PREDICTION: rng.random(3_000)}
    small = count(reference, numbers, {})
    monkeypatch.setattr(drift, "SMALL_ROWS", 0)
    large = count(reference, numbers, {})
    assert (small.counts == large.counts).all() and (small.nulls == large.nulls).all()
    assert np.allclose(small.sums, large.sums, rtol=1e-6, equal_nan=True)
