import numpy as np
import pyarrow.compute as pc
import pytest

from prodml.core.errors import ConfigError
from prodml.data.simulate import simulate


def test_same_seed_same_world_other_seed_other_world() -> None:
    a, b, c = simulate(300, 150, seed=1), simulate(300, 150, seed=1), simulate(300, 150, seed=2)
    for name in a:
        assert a[name].equals(b[name]), name
    assert not a["sessions"].equals(c["sessions"])


def test_world_is_consistent() -> None:
    world = simulate(500, 200, seed=0)
    customers, labels, sessions = world["customers"], world["labels"], world["sessions"]
    ids = set(customers.column("customer_id").to_pylist())
    assert len(ids) == 500
    for name in ("sessions", "payments", "tickets", "labels"):
        assert set(world[name].column("customer_id").to_pylist()) <= ids
    delta = pc.subtract(labels.column("label_ts"), labels.column("prediction_ts"))
    assert set(pc.unique(delta).to_pylist()) == {np.timedelta64(30, "D").astype("timedelta64[us]").item()}
    rate = pc.mean(labels.column("churned")).as_py()
    assert 0.02 < rate < 0.4
    assert sessions.num_rows > 500 * 30


def test_churners_use_the_product_less_before_churning() -> None:
    import duckdb

    world = simulate(2000, 240, seed=5)
    con = duckdb.connect()
    con.register("labels", world["labels"])
    con.register("sessions", world["sessions"])
    rows = con.execute("""
        SELECT l.churned, avg(coalesce(s.n, 0)) FROM labels l LEFT JOIN (
          SELECT l2.customer_id, l2.prediction_ts, count(*) AS n FROM labels l2 JOIN sessions s
          ON s.customer_id = l2.customer_id AND s.ts <= l2.prediction_ts
          AND s.ts > l2.prediction_ts - INTERVAL 14 DAY GROUP BY ALL
        ) s USING (customer_id, prediction_ts) GROUP BY 1 ORDER BY 1""").fetchall()
    (_, stay), (_, churn) = rows
    assert churn < 0.7 * stay


def test_drift_shifts_features_after_its_start() -> None:
    base = simulate(1000, 200, seed=4)
    drifted = simulate(1000, 200, seed=4, drift=1.0, drift_start=100)

    def mean_duration(world, after):  # type: ignore[no-untyped-def]
        s = world["sessions"]
        keep = pc.greater_equal(
            s.column("ts"), pc.min(s.column("ts")).as_py().replace(year=2025, month=4, day=11)
        )
        mask = keep if after else pc.invert(keep)
        return pc.mean(s.filter(mask).column("duration_min")).as_py()

    assert mean_duration(drifted, after=True) < 0.7 * mean_duration(base, after=True)
    assert mean_duration(drifted, after=False) == pytest.approx(mean_duration(base, after=False), rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"customers": 1}, "too small"),
        ({"days": 20}, "no room"),
        ({"drift": 2.0}, "out of range"),
        ({"drift": 0.5, "drift_start": 999}, "drift-start"),
    ],
)
def test_bad_knobs(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        simulate(**{"customers": 100, "days": 200, **kwargs})  # type: ignore[arg-type]
