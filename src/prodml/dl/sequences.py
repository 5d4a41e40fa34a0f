"""Each customer's event history as a padded tensor, point-in-time correct, for the sequence models.

For every label row ``(customer, prediction_ts)`` the sequence holds that customer's sessions, payments
and tickets strictly **before** ``prediction_ts`` (never at or after it: those are the future the label
describes), within ``window_days``, the latest ``max_len`` of them in time order, right-padded.
One step has :data:`STEP_FEATURES`: the event kind (one-hot), its values (scaled), and how long before
the label time it happened.

Example:
    >>> data = event_sequences(world, max_len=64)  # doctest: +SKIP
    >>> data.events.shape, data.lengths.shape  # doctest: +SKIP
    ((12000, 64, 8), (12000,))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from prodml.core.errors import DataError

__all__ = ["STEP_FEATURES", "SequenceData", "event_sequences"]

STEP_FEATURES = (
    "is_session",
    "is_payment",
    "is_ticket",
    "log_duration_min",
    "log_amount",
    "payment_failed",
    "ticket_severity",
    "days_before",
)
_US_PER_DAY = 86_400 * 1_000_000


@dataclass
class SequenceData:
    """``events [N, T, F]`` float32, ``lengths [N]`` int64 (≥ 1 step), ``y [N]`` int64, ``times [N]``."""

    events: np.ndarray
    lengths: np.ndarray
    y: np.ndarray
    times: np.ndarray
    customers: np.ndarray


def _us(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(column.cast(pa.timestamp("us")).cast(pa.int64()).to_numpy(zero_copy_only=False))


def _events(world: dict[str, pa.Table]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All events as (customer, time in µs, step features without ``days_before``), sorted."""
    parts = []
    for kind, table in enumerate((world["sessions"], world["payments"], world["tickets"])):
        n = table.num_rows
        values = np.zeros((n, len(STEP_FEATURES)), np.float32)
        values[:, kind] = 1.0
        if kind == 0:
            values[:, 3] = np.log1p(table.column("duration_min").to_numpy()) / 3
        elif kind == 1:
            values[:, 4] = np.log1p(table.column("amount").to_numpy()) / 5
            values[:, 5] = table.column("failed").to_numpy(zero_copy_only=False).astype(np.float32)
        else:
            values[:, 6] = table.column("severity").to_numpy() / 3
        parts.append((table.column("customer_id").to_numpy(), _us(table.column("ts")), values))
    customer = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    values = np.concatenate([p[2] for p in parts])
    order = np.lexsort((ts, customer))
    return customer[order], ts[order], values[order]


def event_sequences(
    world: dict[str, pa.Table], *, max_len: int = 64, window_days: float = 90.0, label: str = "churned"
) -> SequenceData:
    """Build one sequence per row of ``world["labels"]`` (see the module docstring).

    Raises:
        DataError: a table the demo world has is missing.
    """
    missing = {"sessions", "payments", "tickets", "labels"} - set(world)
    if missing:
        raise DataError(
            f"event sequences need the tables {', '.join(sorted(missing))}",
            hint="pass the demo world (prodml.data.simulate.simulate) or tables shaped like it",
        )
    customer, ts, values = _events(world)
    labels = world["labels"]
    l_customer = labels.column("customer_id").to_numpy()
    l_time = _us(labels.column("prediction_ts"))
    n = labels.num_rows
    events = np.zeros((n, max_len, len(STEP_FEATURES)), np.float32)
    lengths = np.zeros(n, np.int64)
    first = np.searchsorted(customer, l_customer, side="left")
    last = np.searchsorted(customer, l_customer, side="right")
    window = int(window_days * _US_PER_DAY)
    for i in range(n):
        times = ts[first[i] : last[i]]
        hi = first[i] + int(np.searchsorted(times, l_time[i], side="left"))  # strictly before the label time
        lo = first[i] + int(np.searchsorted(times, l_time[i] - window, side="left"))
        lo = max(lo, hi - max_len)
        k = hi - lo
        if k:
            events[i, :k] = values[lo:hi]
            events[i, :k, 7] = (l_time[i] - ts[lo:hi]) / _US_PER_DAY / window_days
        lengths[i] = k
    # a customer with no events yet gets one all-zero step, so every row has a state to score
    return SequenceData(
        events=events,
        lengths=np.maximum(lengths, 1),
        y=labels.column(label).to_numpy().astype(np.int64),
        times=l_time,
        customers=l_customer,
    )
