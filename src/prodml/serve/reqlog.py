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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prodml.core.files import atomic_path
from prodml.serve.validation import NUMBERS, STRINGS

__all__ = ["RequestLog", "join_feedback"]

logger = logging.getLogger(__name__)


Layout = tuple[tuple[str, ...], tuple[str, ...]]  # the numeric and the string columns, in matrix order


@dataclass(frozen=True, slots=True)
class _Entry:
    request_id: str
    model: str
    version: str
    ts: float
    layout: Layout
    numbers: np.ndarray | None
    strings: np.ndarray | None
    prediction: np.ndarray


class RequestLog:
    """Keeps each scored request's matrices as they are; ``flush`` concatenates them into one Parquet part.

    ``record`` appends one small tuple that references arrays the request built anyway (no copy, no per-row
    Python object), so logging costs the request about a microsecond; the column work happens in bulk at
    flush, off the event loop. At most ``max_rows`` rows wait: beyond, rows are dropped and counted until
    the next flush.
    """

    def __init__(self, directory: Path, *, max_rows: int = 50_000) -> None:
        self.directory = directory
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._entries: list[_Entry] = []
        self._n = 0
        self._feedback: list[dict[str, Any]] = []
        self.dropped = 0

    def record(
        self,
        request_id: str,
        model: str,
        version: str,
        feeds: dict[str, np.ndarray],
        outputs: list[np.ndarray],
        ts: float,
        layout: Layout,
    ) -> None:
        """Keep one request's validated inputs (two matrices, see ``Validator.feeds``) and its output.

        ``layout``: the numeric and the string column names, in matrix order (``Validator.layout``).
        """
        prediction = outputs[-1]
        n = len(prediction)
        entry = _Entry(
            request_id, model, version, ts, layout, feeds.get(NUMBERS), feeds.get(STRINGS), prediction
        )
        with self._lock:
            if self._n + n > self.max_rows:
                self.dropped += n
                return
            self._entries.append(entry)
            self._n += n

    def _table(self, entries: list[_Entry]) -> pa.Table:
        """One table of the entries' rows (all of one layout)."""
        counts = np.fromiter((len(e.prediction) for e in entries), np.int64, len(entries))
        numbers, strings = entries[0].layout
        columns: dict[str, Any] = {
            "request_id": np.repeat(np.array([e.request_id for e in entries], dtype=object), counts),
            "row": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
            "ts": np.repeat(np.fromiter((e.ts for e in entries), np.float64, len(entries)), counts),
            "version": np.repeat(np.array([e.version for e in entries], dtype=object), counts),
            "model": np.repeat(np.array([e.model for e in entries], dtype=object), counts),
        }
        if numbers:
            matrix = np.concatenate([e.numbers for e in entries if e.numbers is not None])
            columns |= {name: matrix[:, i] for i, name in enumerate(numbers)}
        if strings:
            text = np.concatenate([e.strings for e in entries if e.strings is not None])
            columns |= {name: text[:, i] for i, name in enumerate(strings)}
        prediction = np.concatenate([e.prediction.reshape(len(e.prediction), -1) for e in entries])
        prediction = np.ascontiguousarray(prediction, dtype=np.float32)
        columns["prediction"] = pa.FixedSizeListArray.from_arrays(prediction.ravel(), prediction.shape[1])
        return pa.table(columns)

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
        """Write what was recorded since the last flush: one part per input layout (a model swap may
        change the inputs), and the feedback. Only the hand-over happens under the lock."""
        with self._lock:
            entries, self._entries, self._n = self._entries, [], 0
            feedback, self._feedback = self._feedback, []
        written = [
            self._write_table("requests", self._table(list(group)))
            for _, group in itertools.groupby(entries, key=lambda e: e.layout)
        ]
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
