"""The request/response log: rotated Parquet files keyed by request id, and feedback joined to it.

Rows are buffered in memory and written by :meth:`RequestLog.flush` (called on a timer and at shutdown)
into ``<dir>/requests/part-<time>-<pid>-<n>.parquet``, atomically. Labels that arrive later are written
to ``<dir>/feedback/`` and :func:`join_feedback` joins both by request id (DuckDB).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prodml.core.files import atomic_path
from prodml.serve.validation import NUMBERS, STRINGS

__all__ = ["Entry", "Recorder", "RequestLog", "join_feedback", "with_variant"]

logger = logging.getLogger(__name__)


Layout = tuple[tuple[str, ...], tuple[str, ...]]  # the numeric and the string columns, in matrix order
_ROWS = np.arange(10_000, dtype=np.int32)  # row numbers within a request, shared


# One request: (request_id, model, version, variant, ts, layout, numbers, strings, prediction). A plain
# tuple of strings, numbers and arrays, which the garbage collector stops tracking after one pass.
# ``variant``: the deployment spec's variant that answered (see serve.routing), "primary" without a spec.
Entry = tuple[str, str, str, str, float, Layout, np.ndarray | None, np.ndarray | None, np.ndarray]
_TEXT_SLICE = 1024  # strings converted to Arrow per step (~0.1 ms): bounds how long the loop is held
_CHUNK_ROWS = 2048  # rows per preallocated chunk of the request log's buffers


class _Chunk:
    """Preallocated buffers for up to ``capacity`` rows of one layout."""

    __slots__ = ("capacity", "n", "numbers", "prediction", "request", "row", "strings")

    def __init__(self, layout: Layout, width: int, capacity: int) -> None:
        numbers, strings = layout
        self.numbers = np.empty((capacity, len(numbers)), np.float32)
        self.strings = np.empty((capacity, len(strings)), dtype=object)
        self.request = np.empty(capacity, np.int32)  # each row's request, an index into _Columns' lists
        self.row = np.empty(capacity, np.int32)
        self.prediction = np.empty((capacity, width), np.float32)
        self.capacity, self.n = capacity, 0


class _Columns:
    """The rows of one input layout and output width, in chunks of preallocated buffers; becomes one
    Parquet part. Chunks are small (``_CHUNK_ROWS``), so a new one is quick to allocate inside a request
    (a buffer for the whole ``max_rows`` took ~11 ms with 20 text columns)."""

    def __init__(self, layout: Layout, width: int) -> None:
        self.layout, self.width = layout, width
        self.chunks: list[_Chunk] = []
        self.ids: list[str] = []
        self.models: list[str] = []
        self.versions: list[str] = []
        self.variants: list[str] = []
        self.ts: list[float] = []

    def add(
        self,
        request_id: str,
        model: str,
        version: str,
        variant: str,
        ts: float,
        numbers: np.ndarray | None,
        strings: np.ndarray | None,
        prediction: np.ndarray,
    ) -> None:
        """One request's rows, copied in while they are still in the CPU's cache (a few microseconds)."""
        n = len(prediction)
        chunk = self.chunks[-1] if self.chunks else None
        if chunk is None or chunk.n + n > chunk.capacity:
            chunk = _Chunk(self.layout, self.width, max(_CHUNK_ROWS, n))
            self.chunks.append(chunk)
        start, end = chunk.n, chunk.n + n
        chunk.request[start:end] = len(self.ids)
        self.ids.append(request_id)
        self.models.append(model)
        self.versions.append(version)
        self.variants.append(variant)
        self.ts.append(ts)
        chunk.row[start:end] = _ROWS[:n] if n <= len(_ROWS) else np.arange(n)
        if numbers is not None:
            chunk.numbers[start:end] = numbers
        if strings is not None:
            chunk.strings[start:end] = strings
        chunk.prediction[start:end] = prediction.reshape(n, self.width)
        chunk.n = end

    def _joined(self, field: str) -> np.ndarray:
        parts = [getattr(c, field)[: c.n] for c in self.chunks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def table(self) -> pa.Table:
        table: pa.Table | None = None
        for table in self.convert():  # noqa: B007 - run the steps; the last one yields the table
            pass
        assert table is not None
        return table

    def convert(self) -> Iterator[pa.Table | None]:
        """The Arrow table, built in steps: each ``None`` yielded is a point where the event loop may serve
        requests (text is converted ``_TEXT_SLICE`` strings per step); the last item is the table."""
        request = self._joined("request")
        yield None
        string_matrix = self._joined("strings")
        yield None
        texts: list[pa.Array] = []

        def text(values: Any) -> Iterator[None]:
            parts = []
            for i in range(0, len(values), _TEXT_SLICE):
                parts.append(pa.array(values[i : i + _TEXT_SLICE], pa.string()))
                yield None
            texts.append(pa.concat_arrays(parts) if parts else pa.array([], pa.string()))

        numbers, strings = self.layout
        for values in (
            self.ids,
            self.versions,
            self.variants,
            self.models,
            *(string_matrix[:, i] for i in range(len(strings))),
        ):
            yield from text(values)
        ids, versions, variants, models, *string_columns = texts
        columns: dict[str, Any] = {
            # one string per request, not per row: a 100-row request converts 1 id, not 100
            "request_id": pa.DictionaryArray.from_arrays(request, ids),
            "row": self._joined("row"),
            "ts": np.array(self.ts, np.float64)[request],
            "version": pa.DictionaryArray.from_arrays(request, versions),
            "variant": pa.DictionaryArray.from_arrays(request, variants),
            "model": pa.DictionaryArray.from_arrays(request, models),
        }
        yield None
        matrix = self._joined("numbers")
        columns |= {name: matrix[:, i] for i, name in enumerate(numbers)}
        columns |= dict(zip(strings, string_columns, strict=True))
        prediction = self._joined("prediction")
        columns["prediction"] = pa.FixedSizeListArray.from_arrays(prediction.ravel(), self.width)
        yield pa.table(columns)


class Recorder:
    """What every request log sink shares: the row cap, the labels and the ``record`` entry point.

    Every call comes from the server's event loop thread (requests, labels, the 0.1 s housekeeping), so
    nothing here takes a lock.

    ``record`` checks the cap — at most ``max_rows`` rows wait; beyond, rows are dropped and counted in
    ``dropped`` (a flush in progress holds the rows it took besides: up to twice as many in all) — and
    hands the request to the sink's ``_keep``. A sink that works in batches defines ``absorb``, which the
    server calls every 0.1 s; labels wait in a list for the sink (``_take_feedback``).
    """

    def __init__(self, *, max_rows: int = 50_000) -> None:
        self.max_rows = max_rows
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
        variant: str = "primary",
    ) -> None:
        """Keep one request's validated inputs (two matrices, see ``Validator.feeds``) and its output.

        ``layout``: the numeric and the string column names, in matrix order (``Validator.layout``).
        ``variant``: the deployment spec's variant that answered ("primary" without a spec).
        """
        prediction = outputs[-1]
        n = len(prediction)
        if n == 0:
            return
        if self.pending + n > self.max_rows:
            self.dropped += n
            return
        self._keep(
            (
                request_id,
                model,
                version,
                variant,
                ts,
                layout,
                feeds.get(NUMBERS),
                feeds.get(STRINGS),
                prediction,
            )
        )

    def _keep(self, entry: Entry) -> None:
        """Take one request that fits under the cap."""
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Rows recorded and not yet handed on."""
        raise NotImplementedError

    def feedback(self, request_id: str, label: Any, ts: float | None = None) -> None:
        """A label for a logged request, joined to it later by request id."""
        self._feedback.append({"request_id": request_id, "label": float(label), "ts": ts or time.time()})

    def _take_feedback(self) -> list[dict[str, Any]]:
        labels, self._feedback = self._feedback, []
        return labels

    def absorb(self, limit: int = 64) -> bool:
        """Hand up to ``limit`` recorded requests on to the sink; True while more wait. The default: the
        sink took each request in ``_keep`` already."""
        return False

    async def absorb_async(self, limit: int = 64) -> None:
        """:meth:`absorb` everything, yielding to requests between batches of ``limit``."""
        while self.absorb(limit):
            await asyncio.sleep(0)

    def flush(self) -> list[Path]:
        """Deliver everything recorded (at shutdown)."""
        raise NotImplementedError

    async def flush_async(self) -> list[Path]:
        """Deliver everything recorded, on a running server (every 10 s, or when many rows wait)."""
        raise NotImplementedError


class RequestLog(Recorder):
    """The request/response log as Parquet parts.

    ``record`` copies a request's rows straight into preallocated column buffers, on the event loop
    thread (its only caller) while the arrays are still in the CPU's cache, and the request's arrays are
    freed at once. Copying them every 0.1 s in batches instead, or keeping them until the flush, cost
    more per request and showed more in p99 at half load in alternating runs here: by then the arrays
    had left the cache. :meth:`flush`
    converts the filled buffers to Arrow in short steps and has a thread write one Parquet part per
    input layout.
    """

    def __init__(self, directory: Path, *, max_rows: int = 50_000) -> None:
        super().__init__(max_rows=max_rows)
        self.directory = directory
        self._seq = itertools.count()
        # rows by (input layout, output width): one part each (a swap may change the inputs while the old
        # version's last requests finish); _current is the one the last request used
        self._parts: dict[tuple[Layout, int], _Columns] = {}
        self._current: _Columns | None = None
        self._rows = 0  # rows in the buffers
        # the first conversion of dictionary and list arrays loads parts of Arrow: pay it at start, not in
        # a flush under load (the server pays Arrow's other first conversions in warm_arrow)
        warm = _Columns(((), ()), 1)
        warm.add("", "", "", "", 0.0, None, None, np.zeros((1, 1), np.float32))
        warm.table()

    def _keep(self, entry: Entry) -> None:
        request_id, model, version, variant, ts, layout, numbers, strings, prediction = entry
        n = len(prediction)
        width = prediction.size // n
        columns = self._current
        if columns is None or columns.layout is not layout or columns.width != width:
            columns = self._parts.get((layout, width))
            if columns is None:
                columns = self._parts[(layout, width)] = _Columns(layout, width)
            self._current = columns
        columns.add(request_id, model, version, variant, ts, numbers, strings, prediction)
        self._rows += n

    @property
    def pending(self) -> int:
        """Rows recorded since the last flush."""
        return self._rows

    def _hand_over(self) -> tuple[list[_Columns], list[dict[str, Any]]]:
        parts = list(self._parts.values())  # each holds one request at least
        self._parts, self._current, self._rows = {}, None, 0
        return parts, self._take_feedback()

    def _write_table(self, kind: str, table: pa.Table) -> Path:
        path = (
            self.directory / kind / f"part-{int(time.time() * 1000)}-{os.getpid()}-{next(self._seq)}.parquet"
        )
        with atomic_path(path) as tmp:
            # dictionaries only for text (floats rarely repeat: trying costs more than it saves), LZ4:
            # a 20k-row part writes in 7 ms instead of 72 with the defaults, and is smaller
            text = [
                f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_dictionary(f.type)
            ]
            pq.write_table(table, tmp, compression="lz4", use_dictionary=text)
        return path

    def _tables(self) -> Iterator[tuple[str, pa.Table] | None]:
        """What was recorded since the last flush as (kind, table) to write: one requests table per
        input layout, and the labels; ``None`` between the steps of a conversion."""
        parts, feedback = self._hand_over()
        for part in parts:
            table = None
            for table in part.convert():
                if table is None:
                    yield None
            yield "requests", table
        if feedback:
            yield "feedback", pa.Table.from_pylist(feedback)

    def flush(self) -> list[Path]:
        """Write everything recorded since the last flush: one part per input layout, and the feedback."""
        return [self._write_table(*item) for item in self._tables() if item is not None]

    async def flush_async(self) -> list[Path]:
        """:meth:`flush` for a running server: the conversion to Arrow yields to requests between steps
        (it needs the GIL, which a thread would hold for up to its switch interval), and the Parquet
        writing — which releases the GIL — happens in a thread."""
        written = []
        for item in self._tables():
            if item is None:
                await asyncio.sleep(0)
            else:
                written.append(await asyncio.to_thread(self._write_table, *item))
        return written


def with_variant(table: pa.Table) -> pa.Table:
    """``table`` with a ``variant`` column: logs written before it existed (or rows without one) read as
    ``"primary"``, the only variant a server without a deployment spec has."""
    import pyarrow.compute as pc

    if "variant" not in table.column_names:
        return table.append_column("variant", pa.array(["primary"] * table.num_rows, pa.string()))
    column = table.column("variant").cast(pa.string())
    return table.set_column(table.column_names.index("variant"), "variant", pc.fill_null(column, "primary"))


def join_feedback(directory: Path) -> pa.Table:
    """Every logged row with its label where one arrived (LEFT JOIN on request id); ``variant`` is
    ``"primary"`` for rows logged before the column existed."""
    return with_variant(_join_feedback(directory))


def _join_feedback(directory: Path) -> pa.Table:
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
