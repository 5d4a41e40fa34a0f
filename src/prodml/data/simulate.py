"""The demo world: a subscription business with customers, time-stamped events and churn labels.

Each customer has a latent engagement that sets how often they use the product, a plan, and a churn time
drawn from a hazard that engagement, plan and failed payments raise or lower. In the 30 days before
churning, customers use the product less, fail more payments and open more tickets: the signal that
window features must find. Labels are taken at weekly prediction times for active customers and say
whether they churn within the next 30 days; a label becomes known 30 days after its prediction time.

The drift knob shifts, from ``drift_start`` on, the feature distributions (shorter sessions, older new
customers, higher fees) and the label relation (the pre-churn decline fades, so old patterns mislead).

Everything is vectorised numpy and deterministic per seed: a million events take about a second.

Example:
    >>> world = simulate(customers=1_000, days=180, seed=7)
    >>> sorted(world)
    ['customers', 'labels', 'payments', 'sessions', 'tickets']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prodml.core.errors import ConfigError
from prodml.core.files import atomic_path

__all__ = ["SimulationSpec", "simulate", "write_world"]

DAY_US = 86_400 * 1_000_000
START = datetime(2025, 1, 1)
PLANS = np.array(["basic", "pro", "enterprise"])
PLAN_P = [0.6, 0.3, 0.1]
FEES = np.array([9.99, 29.99, 99.0])
COUNTRIES = np.array(["US", "DE", "GB", "FR", "IN", "BR"])
COUNTRY_P = [0.35, 0.15, 0.15, 0.1, 0.15, 0.1]
HORIZON_DAYS = 30
DECLINE_DAYS = 30
LABEL_EVERY_DAYS = 7
WARMUP_DAYS = 60


@dataclass(frozen=True)
class SimulationSpec:
    """Knobs of the demo world; every field has a sane default."""

    customers: int = 5_000
    days: int = 365
    seed: int = 0
    drift: float = 0.0
    drift_start: int | None = None

    def check(self) -> None:
        if self.customers < 10:
            raise ConfigError(f"--customers {self.customers} is too small", hint="use at least 10")
        if self.days < WARMUP_DAYS + HORIZON_DAYS + LABEL_EVERY_DAYS:
            raise ConfigError(
                f"--days {self.days} leaves no room for labels",
                hint=f"use at least {WARMUP_DAYS + HORIZON_DAYS + LABEL_EVERY_DAYS} days",
            )
        if not 0.0 <= self.drift <= 1.0:
            raise ConfigError(f"--drift {self.drift} is out of range", hint="use a value in [0, 1]")
        if self.drift_start is not None and not 0 <= self.drift_start < self.days:
            raise ConfigError(
                f"--drift-start {self.drift_start} is outside the simulated {self.days} days",
                hint=f"use a day in [0, {self.days - 1}]",
            )


def _ts(day: np.ndarray) -> pa.Array:
    """Fractional days since START → Arrow timestamp[us]."""
    start_us = int(np.datetime64(START, "us").astype(np.int64))
    return pa.array((start_us + day * DAY_US).astype(np.int64), type=pa.timestamp("us"))


def _segments(
    rng: np.random.Generator, owner: np.ndarray, lo: np.ndarray, hi: np.ndarray, rate: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson events at ``rate``/day, uniform in [lo, hi) of each segment → (owner index, day)."""
    length = np.clip(hi - lo, 0.0, None)
    counts = rng.poisson(rate * length)
    idx = np.repeat(np.arange(len(owner)), counts)
    day = lo[idx] + rng.random(idx.size) * length[idx]
    return owner[idx], day


def simulate(
    customers: int = 5_000,
    days: int = 365,
    seed: int = 0,
    drift: float = 0.0,
    drift_start: int | None = None,
) -> dict[str, pa.Table]:
    """Generate the demo world as Arrow tables (customers, sessions, payments, tickets, labels)."""
    spec = SimulationSpec(customers, days, seed, drift, drift_start)
    spec.check()
    rng = np.random.default_rng(seed)
    n = customers
    d0 = float(days if drift_start is None or drift == 0 else drift_start)  # first drifted day

    # Static attributes. A third of the customers exist before day 0, the rest sign up over the period.
    signup = np.where(rng.random(n) < 0.35, -rng.random(n) * 365.0, rng.random(n) * (days - HORIZON_DAYS))
    plan_i = rng.choice(3, size=n, p=PLAN_P)
    drifted_signup = signup >= d0
    age = np.clip(rng.normal(38 + 10 * drift * drifted_signup, 11), 18, 90).astype(np.int64)
    fee = FEES[plan_i] * (1 + 0.2 * drift * drifted_signup)
    country = rng.choice(COUNTRIES, size=n, p=COUNTRY_P)
    engagement = rng.lognormal(0.0, 0.6, size=n)
    fail_p = np.clip(rng.beta(1, 30, size=n), 0, 0.5)

    # Churn: exponential time with a hazard from engagement, plan, payment reliability and age.
    hazard = 0.0025 * np.exp(
        -0.9 * np.log(engagement) + 0.5 * (plan_i == 0) - 0.4 * (plan_i == 2) + 8 * fail_p - 0.01 * (age - 38)
    )
    churn = signup + rng.exponential(1.0 / hazard)
    end = np.minimum(churn, days)
    decline_from = np.maximum(signup, churn - DECLINE_DAYS)
    # After drift_start the decline before churning fades: the label relation changes.
    decline_factor = np.where(churn >= d0, 0.35 + 0.6 * drift, 0.35)
    ids = np.arange(1, n + 1, dtype=np.int64)
    rate = 0.7 * engagement * np.array([1.0, 1.3, 1.6])[plan_i]

    # Sessions: normal rate until the decline window, then a lower one.
    lo = np.maximum(signup, -90.0)
    o1, d1 = _segments(rng, ids, lo, np.minimum(decline_from, end), rate)
    o2, d2 = _segments(rng, ids, np.maximum(decline_from, lo), end, rate * decline_factor)
    s_owner, s_day = np.concatenate([o1, o2]), np.concatenate([d1, d2])
    order = np.lexsort((s_day, s_owner))
    s_owner, s_day = s_owner[order], s_day[order]
    eng_of = engagement[s_owner - 1]
    duration = rng.lognormal(np.log(12 * eng_of**0.3), 0.5)
    duration = np.where(s_day >= d0, duration * (1 - 0.5 * drift), duration).round(2)
    sessions = pa.table(
        {
            "customer_id": s_owner,
            "ts": _ts(s_day),
            "duration_min": duration,
            "device": rng.choice(np.array(["web", "ios", "android"]), size=s_owner.size),
        }
    )

    # Payments: every 30 days from signup while active; failures more likely in the decline window.
    first = signup + np.ceil(np.maximum(lo - signup, 0) / 30.0) * 30.0
    k = np.maximum(np.ceil((end - first) / 30.0), 0).astype(np.int64)
    p_owner_i = np.repeat(np.arange(n), k)
    offsets = np.arange(p_owner_i.size) - np.repeat(np.cumsum(k) - k, k)
    p_day = first[p_owner_i] + 30.0 * offsets + rng.random(p_owner_i.size) * 0.5
    in_decline = p_day >= decline_from[p_owner_i]
    failed = rng.random(p_owner_i.size) < np.where(in_decline, fail_p[p_owner_i] + 0.15, fail_p[p_owner_i])
    payments = pa.table(
        {
            "customer_id": ids[p_owner_i],
            "ts": _ts(p_day),
            "amount": fee[p_owner_i].round(2),
            "failed": failed,
        }
    )

    # Support tickets: rare, three times as frequent before churning.
    t1o, t1d = _segments(rng, ids, lo, np.minimum(decline_from, end), np.full(n, 0.01))
    t2o, t2d = _segments(rng, ids, np.maximum(decline_from, lo), end, np.full(n, 0.03))
    t_owner, t_day = np.concatenate([t1o, t2o]), np.concatenate([t1d, t2d])
    tickets = pa.table(
        {
            "customer_id": t_owner,
            "ts": _ts(t_day),
            "severity": rng.choice(np.array([1, 2, 3]), size=t_owner.size, p=[0.6, 0.3, 0.1]),
        }
    )

    # Labels: weekly prediction times for active customers; churned = churns within 30 days.
    times = np.arange(WARMUP_DAYS, days - HORIZON_DAYS + 1, LABEL_EVERY_DAYS, dtype=np.float64)
    grid_c, grid_t = np.meshgrid(np.arange(n), np.arange(times.size), indexing="ij")
    cust, t = grid_c.ravel(), times[grid_t.ravel()]
    active = (signup[cust] <= t) & (churn[cust] > t)
    cust, t = cust[active], t[active]
    labels = pa.table(
        {
            "customer_id": ids[cust],
            "prediction_ts": _ts(t),
            "label_ts": _ts(t + HORIZON_DAYS),
            "churned": (churn[cust] <= t + HORIZON_DAYS).astype(np.int64),
        }
    )
    emails = np.char.add(np.char.add("user", ids.astype(str)), "@example.com")
    customers_t = pa.table(
        {
            "customer_id": ids,
            "signup_ts": _ts(signup),
            "plan": PLANS[plan_i],
            "country": country,
            "age": age,
            "monthly_fee": fee.round(2),
            "email": emails,
        }
    )
    return {
        "customers": customers_t,
        "sessions": sessions,
        "payments": payments,
        "tickets": tickets,
        "labels": labels,
    }


def write_world(world: dict[str, pa.Table], out: Path) -> dict[str, Path]:
    """Write each table to ``out/<name>.parquet`` atomically; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, table in world.items():
        path = out / f"{name}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        paths[name] = path
    return paths
