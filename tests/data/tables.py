"""Small tables with the traits of real-world data, made in the tests (nothing is fetched).

- ``rentals``: regression; a date that carries signal (weekends), a categorical, nulls in a feature and
  unlabelled rows (null target).
- ``species``: multiclass; column names with ``/``, spaces, dots, parentheses and unicode, and a rare class.
- ``accounts``: binary with string classes; an ID-like column and a high-cardinality text column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

__all__ = ["accounts", "rentals", "species", "write_csv"]


def write_csv(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table, path)
    return path


def rentals(n: int = 240, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    day = np.datetime64("2023-01-01") + np.sort(rng.integers(0, 500, n)).astype("timedelta64[D]")
    weekday = (day.astype("datetime64[D]").astype(np.int64) + 3) % 7
    season = np.array(["winter", "spring", "summer", "autumn"])[
        (day.astype("datetime64[M]").astype(int) % 12) // 3
    ]
    temp = np.round(rng.normal(15, 8, n), 1)
    humidity = np.round(rng.uniform(20, 95, n), 0)
    humidity[rng.choice(n, 12, replace=False)] = np.nan
    y = 200 + 6 * temp + 120 * (weekday >= 5) - 0.8 * np.nan_to_num(humidity, nan=60) + rng.normal(0, 15, n)
    target = pa.array(np.round(y, 1), mask=rng.random(n) < 0.1)  # ~10% unlabelled
    return pa.table(
        {
            "day": pa.array(day.astype("datetime64[D]")),
            "season": season,
            "temp": temp,
            "humidity": pa.array(humidity, mask=np.isnan(humidity)),
            "rentals": target,
        }
    )


def species(n: int = 240, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.array(["Adélie", "Gentoo", "Chinstrap"], dtype=object)
    label = names[rng.integers(0, 3, n)]
    label[:4] = "Rockhopper"  # a rare class: 4 rows
    centre = {"Adélie": 38.0, "Gentoo": 47.0, "Chinstrap": 49.0, "Rockhopper": 43.0}
    bill = np.array([centre[v] for v in label]) + rng.normal(0, 1.5, n)
    flipper = np.where(label == "Gentoo", 217.0, 192.0) + rng.normal(0, 5, n)
    mass = np.where(label == "Chinstrap", 3700.0, 4200.0) + rng.normal(0, 300, n)
    island = np.where(label == "Gentoo", "Biscoe", rng.choice(["Dream", "Torgersen", "Île Verte"], n))
    return pa.table(
        {
            "bill length/mm": np.round(bill, 1),
            "flipper length (mm)": np.round(flipper, 0),
            "body.mass g": np.round(mass, 0),
            "île": island,
            "species": label,
        }
    )


def accounts(n: int = 240, seed: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n)
    plan = rng.choice(["basic", "pro", "team"], n)
    fee = np.round(np.select([plan == "basic", plan == "pro"], [9.0, 29.0], 79.0) + rng.normal(0, 2, n), 2)
    score = -0.05 * tenure + 1.2 * (plan == "basic") + rng.normal(0, 0.7, n)
    return pa.table(
        {
            "account_id": rng.permutation(np.arange(10_000, 10_000 + n)),
            "email": [f"user{i}@example.com" for i in rng.permutation(n)],
            "plan": plan,
            "tenure_months": tenure,
            "monthly_fee": fee,
            "churned": np.where(score > np.quantile(score, 0.7), "yes", "no"),
        }
    )
