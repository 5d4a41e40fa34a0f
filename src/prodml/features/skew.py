"""``prodml features skew``: served feature vectors recomputed on the offline path, per-feature differences.

A served vector is what the model saw for one row: the entity key, the request time and the feature
values (from the online store, or sent by the client). Each row is recomputed by
:func:`~prodml.features.materialize.features_at` — the same definitions and SQL that build training
frames — as of the request time, and compared column by column: numbers as float32 (what the model
takes) within ``rtol``/``atol``, NaN equal to NaN; strings exactly, null equal to "" (the model sees ""
for a missing category). A difference means train/serve skew: a stale store (events after the last
materialisation), a client sending other values, or a bug in one of the paths.

The served rows come from the request log (``<dir>/requests/*.parquet``: ``ts`` in epoch seconds, one
column per model input, plus the entity key column when the server logs it) or from any Parquet file
or directory with the entity key, a ``ts`` column (epoch seconds or a timestamp) and feature columns.

Example:
    >>> report = skew_report(Catalog(project), read_served(Path(".prodml/serve")))  # doctest: +SKIP
    >>> [(f.name, f.differing) for f in report.features if f.differing]  # doctest: +SKIP
    [('sessions_count_7d', 12)]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prodml.core.errors import DataError, FeatureError
from prodml.data.sources import Catalog, read_files
from prodml.features.materialize import features_at

__all__ = ["FeatureSkew", "SkewReport", "read_served", "skew_report"]

TS = "ts"
EXAMPLES = 5


@dataclass
class FeatureSkew:
    """Differences for one feature over the compared rows."""

    name: str
    rows: int
    differing: int
    max_abs: float | None = None
    mean_abs: float | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    """Up to five differing rows: entity, time, served and offline values."""

    @property
    def share(self) -> float:
        return self.differing / self.rows if self.rows else 0.0


@dataclass
class SkewReport:
    """Per-feature differences between served vectors and the offline path."""

    rows: int
    entity: str
    features: list[FeatureSkew]
    skipped: list[str] = field(default_factory=list)
    """Served columns that are not entity features (request-time features, the prediction, ...)."""
    seconds: float = 0.0

    def worst(self) -> float:
        """The largest share of differing rows over the features (0 when none differ)."""
        return max((f.share for f in self.features), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for f, d in zip(self.features, out["features"], strict=True):
            d["share"] = f.share
        return out


def read_served(path: Path) -> pa.Table:
    """Served rows from a request-log directory (its ``requests/`` parts) or a Parquet file/directory.

    Raises:
        DataError: nothing readable is there.
    """
    parts = path / "requests" if (path / "requests").is_dir() else path
    if not parts.exists():
        raise DataError(f"no served rows at {path}", hint="give the request-log directory or a Parquet file")
    return read_files(str(parts), "parquet", name="served")


def _times(column: pa.ChunkedArray) -> pa.Array:
    values = column.combine_chunks()
    if pa.types.is_timestamp(values.type):
        return values.cast(pa.timestamp("us", values.type.tz)).cast(pa.timestamp("us"))
    if pa.types.is_floating(values.type) or pa.types.is_integer(values.type):
        micros = np.round(values.to_numpy(zero_copy_only=False).astype(np.float64) * 1e6).astype(np.int64)
        return pa.array(micros, pa.timestamp("us"))  # epoch seconds (UTC) → naive UTC, as the sources
    raise DataError(f"column '{TS}' must be a timestamp or epoch seconds, not {values.type}")


def _float32(column: pa.ChunkedArray) -> np.ndarray:
    """Values as the model takes them (float32), widened back for arithmetic; null → NaN."""
    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float32).astype(np.float64)


def _text(column: pa.ChunkedArray) -> list[str]:
    return ["" if v is None else str(v) for v in column.to_pylist()]


def skew_report(catalog: Catalog, served: pa.Table, *, rtol: float = 1e-6, atol: float = 1e-6) -> SkewReport:
    """Recompute ``served`` rows offline as of their time and report differences per feature.

    Args:
        catalog: the project's sources.
        served: the entity key, ``ts`` and feature columns (see the module docstring).
        rtol, atol: numeric tolerance, on float32 values.

    Raises:
        DataError: the entity key or ``ts`` column is absent.
    """
    start = time.perf_counter()
    entity = catalog.project.entity or ""
    for needed in (entity, TS):
        if needed not in served.column_names:
            raise DataError(
                f"the served rows have no '{needed}' column",
                hint="log the entity key with each request (the server does when it fetches online features)"
                if needed == entity
                else "served rows need 'ts', the request time",
            )
    served = served.filter(pc.is_valid(served.column(entity)))
    keys = served.column(entity).combine_chunks()
    offline, _ = features_at(catalog, keys, _times(served.column(TS)))
    names = [n for n in offline.column_names[1:] if n in served.column_names]
    if not names:
        raise FeatureError(
            "the served rows share no feature with the project's entity features",
            hint="check that they were served by a model trained on this project's features",
        )
    skipped = [c for c in served.column_names if c not in names and c not in (entity, TS)]
    results = []
    times = served.column(TS).to_pylist()
    for name in names:
        s, o = served.column(name), offline.column(name)
        numeric = pa.types.is_floating(s.type) or pa.types.is_integer(s.type) or pa.types.is_boolean(s.type)
        feature = FeatureSkew(name, served.num_rows, 0)
        if numeric:
            a, b = _float32(s), _float32(o)
            differs = ~np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
            gap = np.abs(a - b)[differs]
            finite = gap[np.isfinite(gap)]
            if finite.size:
                feature.max_abs, feature.mean_abs = float(finite.max()), float(finite.mean())
            shown_s, shown_o = a, b
        else:
            ts_, to_ = _text(s), _text(o)
            differs = np.array([x != y for x, y in zip(ts_, to_, strict=True)], dtype=bool)
            shown_s, shown_o = np.array(ts_, dtype=object), np.array(to_, dtype=object)
        feature.differing = int(differs.sum())
        for i in np.flatnonzero(differs)[:EXAMPLES]:
            feature.examples.append(
                {
                    entity: keys[int(i)].as_py(),
                    TS: times[int(i)],
                    "served": _plain(shown_s[i]),
                    "offline": _plain(shown_o[i]),
                }
            )
        results.append(feature)
    return SkewReport(served.num_rows, entity, results, skipped, time.perf_counter() - start)


def _plain(value: Any) -> Any:
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    return value
