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
    """Buffers scored rows and writes them as Parquet parts; ``max_rows`` bounds memory."""

    def __init__(self, directory: Path, *, max_rows: int = 50_000) -> None:
        self.directory = directory
        self.max_rows = max_rows
        self._rows: list[dict[str, Any]] = []
        self._feedback: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.dropped = 0

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
            if len(self._rows) + n > self.max_rows:
                self.dropped += n
                return
            for i in range(n):
                row = {
                    "request_id": request_id,
                    "row": i,
                    "ts": ts,
                    "model": model,
                    "version": version,
                    "prediction": prediction[i].astype(float).tolist(),
                }
                row.update(
                    {k: (v[i, 0].item() if hasattr(v[i, 0], "item") else v[i, 0]) for k, v in feeds.items()}
                )
                self._rows.append(row)

    def feedback(self, request_id: str, label: Any, ts: float | None = None) -> None:
        with self._lock:
            self._feedback.append({"request_id": request_id, "label": float(label), "ts": ts or time.time()})

    def flush(self) -> list[Path]:
        with self._lock:
            rows, self._rows = self._rows, []
            feedback, self._feedback = self._feedback, []
        written = []
        for kind, batch in (("requests", rows), ("feedback", feedback)):
            if not batch:
                continue
            path = (
                self.directory
                / kind
                / f"part-{int(time.time() * 1000)}-{os.getpid()}-{next(self._seq)}.parquet"
            )
            with atomic_path(path) as tmp:
                pq.write_table(pa.Table.from_pylist(batch), tmp)
            written.append(path)
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
