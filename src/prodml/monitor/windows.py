"""Windows over monitored rows: by time (``7d``, ``12h``, ``30m``) or by row count (``5000``).

Example:
    >>> parse_every("7d"), parse_every("5000")
    (('time', 604800.0), ('rows', 5000))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from prodml.core.errors import ConfigError

__all__ = ["Window", "parse_every", "split"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]|rows?)?\s*$")


def parse_every(text: str | int) -> tuple[str, float]:
    """``("time", seconds)`` or ``("rows", n)`` from ``7d``, ``90m``, ``1w``, ``5000`` or ``5000rows``."""
    match = _PATTERN.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(
            f"--window {text!r} is not a window",
            hint="give a duration (30m, 12h, 7d, 1w) or a row count (5000)",
        )
    value, unit = float(match.group(1)), match.group(2)
    if unit is None or unit.startswith("row"):
        return "rows", int(value)
    return "time", value * _UNITS[unit]


@dataclass(frozen=True)
class Window:
    """One window of rows; ``label`` is its start (UTC) or its row range."""

    label: str
    rows: pd.DataFrame
    start: float | None = None  # epoch seconds, for time windows
    end: float | None = None


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def split(frame: pd.DataFrame, every: str | int) -> list[Window]:
    """Consecutive windows of ``frame`` (ordered by ``ts`` when it has one), oldest first.

    Time windows end at the newest row, so the last window is always a full one; row windows end at
    the last row, and a short first window holds the remainder.
    """
    kind, size = parse_every(every)
    if kind == "time":
        if "ts" not in frame.columns or frame["ts"].isna().all():
            raise ConfigError(
                f"--window {every} needs timestamps, and the rows have none",
                hint="use a row count (--window 5000), or name the time column",
            )
        frame = frame[frame["ts"].notna()].sort_values("ts", kind="stable")
        ts = frame["ts"].to_numpy(np.float64)
        end = float(np.nanmax(ts))
        index = np.floor((end - ts) / size).astype(np.int64)  # 0 = the newest window
        out = []
        for i in sorted(set(index.tolist()), reverse=True):
            start = end - (i + 1) * size
            out.append(Window(_stamp(start), frame[index == i], start, start + size))
        return out
    n, rows = len(frame), int(size)
    bounds = list(range(n, 0, -rows))[::-1]
    starts = [max(b - rows, 0) for b in bounds]
    return [Window(f"rows {s:,}–{b:,}", frame.iloc[s:b]) for s, b in zip(starts, bounds, strict=True)]
