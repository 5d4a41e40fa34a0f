"""The request/response log: rotated Parquet files keyed by request id, and feedback joined to it.

Rows are buffered in memory and written by :meth:`RequestLog.flush` (called on a timer and at shutdown)
into ``<dir>/requests/part-<time>-<pid>-<n>.parquet``, atomically. Labels that arrive later are written
to ``<dir>/feedback/`` and :func:`join_feedback` joins both by request id (DuckDB).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prodml.core.files import atomic_path

__all__ = ["RequestLog", "join_feedback"]

logger = logging.getLogger(__name__)


class RequestLog:
    """Copies scored rows into preallocated column buffers; ``flush`` writes them as one Parquet part.

    ``record`` costs one slice assignment per column (no per-row Python objects), so logging stays off the
    latency budget; when the buffer is full, rows are dropped and counted until the next flush.
    """

    def __init__(self, directory: Path, *, max_rows: int = 50_000) -> None:
        self.directory = directory
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._layout: tuple[str, ...] | None = None
        self._cols: dict[str, np.ndarray] = {}
        self._meta: dict[str, np.ndarray] = {}
        self._n = 0
        self._feedback: list[dict[str, Any]] = []
        self.dropped = 0

    def _allocate(self, feeds: dict[str, np.ndarray], prediction: np.ndarray) -> None:
        m = self.max_rows
        self._layout = tuple(feeds)
        self._cols = {
            k: np.empty(m, dtype=object if v.dtype == object else np.float32) for k, v in feeds.items()
        }
        self._meta = {
            "request_id": np.empty(m, dtype=object),
            "row": np.empty(m, np.int32),
            "ts": np.empty(m, np.float64),
            "version": np.empty(m, dtype=object),
            "prediction": np.empty((m, prediction.shape[1]), np.float32),
        }
        self._n = 0

    def record(
        self,
        request_id: str,
        model: str,
        version: str,
        feeds: dict[str, np.ndarray],
        outputs: list[np.ndarray],
        ts: float,
    ) -> None:
        n = len(next(iter(feeds.values())))
        prediction = outputs[-1].reshape(n, -1)
        with self._lock:
            if self._layout != tuple(feeds):
                if self._n:
                    self._write(*self._take())  # a model swap changed the inputs: close the part
                self._allocate(feeds, prediction)
            start, end = self._n, self._n + n
            if end > self.max_rows:
                self.dropped += n
                return
            for name, arr in feeds.items():
                self._cols[name][start:end] = arr.ravel()
            meta = self._meta
            meta["request_id"][start:end] = request_id
            meta["row"][start:end] = np.arange(n)
            meta["ts"][start:end] = ts
            meta["version"][start:end] = version
            meta["prediction"][start:end] = prediction
            self._n = end
            self._model = model

    def _take(self) -> tuple[dict[str, Any], int]:
        n = self._n
        taken = {k: v[:n].copy() for k, v in self._meta.items()} | {
            k: v[:n].copy() for k, v in self._cols.items()
        }
        self._n = 0
        return taken, n

    def _write(self, columns: dict[str, Any], n: int) -> Path | None:
        if n == 0:
            return None
        prediction = columns.pop("prediction")
        table = pa.table(
            {
                **{k: columns[k] for k in ("request_id", "row", "ts", "version")},
                "model": pa.array([getattr(self, "_model", "")] * n),
                **{k: v for k, v in columns.items() if k not in ("request_id", "row", "ts", "version")},
                "prediction": pa.FixedSizeListArray.from_arrays(prediction.ravel(), prediction.shape[1]),
            }
        )
        return self._write_table("requests", table)

    def _write_table(self, kind: str, table: pa.Table) -> Path:
        path = (
            self.directory / kind / f"part-{int(time.time() * 1000)}-{os.getpid()}-{next(self._seq)}.parquet"
        )
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path

    def feedback(self, request_id: str, label: Any, ts: float | None = None) -> None:
        with self._lock:
            self._feedback.append({"request_id": request_id, "label": float(label), "ts": ts or time.time()})

    def flush(self) -> list[Path]:
        """Write what was recorded since the last flush (copied under the lock, written outside it)."""
        with self._lock:
            columns, n = self._take() if self._layout is not None else ({}, 0)
            feedback, self._feedback = self._feedback, []
        written = [p for p in [self._write(columns, n)] if p is not None]
        if feedback:
            written.append(self._write_table("feedback", pa.Table.from_pylist(feedback)))
        return written


def join_feedback(directory: Path) -> pa.Table:
    """Every logged row with its label where one arrived (LEFT JOIN on request id)."""
    import duckdb

    requests = str(directory / "requests" / "*.parquet")
    feedback = directory / "feedback"
    con = duckdb.connect()
    if not any(feedback.glob("*.parquet")):
        return con.sql(
            f"SELECT *, NULL AS label FROM read_parquet('{requests}', union_by_name=true)"
        ).to_arrow_table()
    return con.sql(
        f"SELECT r.*, f.label FROM read_parquet('{requests}', union_by_name=true) r "
        f"LEFT JOIN read_parquet('{feedback}/*.parquet') f USING (request_id)"
    ).to_arrow_table()
