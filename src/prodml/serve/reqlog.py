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
from prodml.serve.validation import NUMBERS, STRINGS

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
        self._layout: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._num = np.empty((0, 0), np.float32)
        self._str = np.empty((0, 0), dtype=object)
        self._meta: dict[str, np.ndarray] = {}
        self._n = 0
        self._rows = np.arange(max_rows, dtype=np.int32)
        self._model = ""
        self._feedback: list[dict[str, Any]] = []
        self.dropped = 0

    def _allocate(self, layout: tuple[tuple[str, ...], tuple[str, ...]], width: int) -> None:
        m = self.max_rows
        self._layout = layout
        numbers, strings = layout
        self._num = np.empty((m, len(numbers)), np.float32)
        self._str = np.empty((m, len(strings)), dtype=object)
        self._meta = {
            "request_id": np.empty(m, dtype=object),
            "row": np.empty(m, np.int32),
            "ts": np.empty(m, np.float64),
            "version": np.empty(m, dtype=object),
            "prediction": np.empty((m, width), np.float32),
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
        layout: tuple[tuple[str, ...], tuple[str, ...]],
    ) -> None:
        """Copy one request's validated inputs (two matrices, see ``Validator.feeds``) and its output.

        ``layout``: the numeric and the string column names, in matrix order (``Validator.layout``).
        """
        numbers, strings = feeds.get(NUMBERS), feeds.get(STRINGS)
        n = len(outputs[0])
        prediction = outputs[-1].reshape(n, -1)
        with self._lock:
            if self._layout is not layout and self._layout != layout:
                if self._n:
                    self._write(*self._take())  # a model swap changed the inputs: close the part
                self._allocate(layout, prediction.shape[1])
            start, end = self._n, self._n + n
            if end > self.max_rows:
                self.dropped += n
                return
            if numbers is not None:
                self._num[start:end] = numbers
            if strings is not None:
                self._str[start:end] = strings
            meta = self._meta
            meta["request_id"][start:end] = request_id
            meta["row"][start:end] = self._rows[:n]
            meta["ts"][start:end] = ts
            meta["version"][start:end] = version
            meta["prediction"][start:end] = prediction
            self._n = end
            self._model = model

    def _take(self) -> tuple[dict[str, Any], int]:
        n = self._n
        assert self._layout is not None
        numbers, strings = self._layout
        taken = {k: v[:n].copy() for k, v in self._meta.items()}
        taken |= {name: self._num[:n, i].copy() for i, name in enumerate(numbers)}
        taken |= {name: self._str[:n, i].copy() for i, name in enumerate(strings)}
        self._n = 0
        return taken, n

    def _write(self, columns: dict[str, Any], n: int) -> Path | None:
        if n == 0:
            return None
        prediction = columns.pop("prediction")
        table = pa.table(
            {
                **{k: columns[k] for k in ("request_id", "row", "ts", "version")},
                "model": pa.array([self._model] * n),
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

    @property
    def pending(self) -> int:
        """Rows recorded since the last flush."""
        return self._n

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
