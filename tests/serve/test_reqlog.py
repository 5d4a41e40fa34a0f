"""The request log: Parquet parts per input layout, buffering, flushing in a thread, feedback joins."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from prodml.serve.validation import NUMBERS, STRINGS


def test_request_log_writes_parquet_and_joins_feedback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prodml.serve.reqlog import RequestLog, join_feedback

    log = RequestLog(tmp_path, max_rows=4)
    names = (("age",), ("plan",))
    two = {
        NUMBERS: np.array([[30.0], [40.0]], np.float32),
        STRINGS: np.array([["pro"], ["basic"]], dtype=object),
    }
    one = {k: v[:1] for k, v in two.items()}
    out2 = [np.array([0, 1]), np.array([[0.9, 0.1], [0.3, 0.7]])]
    log.record("r1", "churn", "1", two, out2, 1.0, names)
    log.record("r2", "churn", "1", one, [np.array([0]), np.array([[0.8, 0.2]])], 2.0, names)
    log.record("r3", "churn", "1", two, out2, 3.0, names)
    assert log.dropped == 2  # bounded memory: the third request did not fit
    log.feedback("r1", 1)
    assert len(log.flush()) == 2
    joined = join_feedback(tmp_path).to_pylist()
    assert [(r["request_id"], r["row"], r["age"], r["plan"], r["label"]) for r in joined] == [
        ("r1", 0, 30.0, "pro", 1.0),
        ("r1", 1, 40.0, "basic", 1.0),
        ("r2", 0, 30.0, "pro", None),
    ]
    assert joined[1]["prediction"] == pytest.approx([0.3, 0.7])


def test_request_log_writes_one_part_per_input_layout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from prodml.serve.reqlog import RequestLog

    log = RequestLog(tmp_path)
    old, new = (("age",), ("plan",)), (("age", "fee"), ())
    out = [np.array([1]), np.array([[0.4, 0.6]], np.float32)]
    log.record(
        "a",
        "churn",
        "1",
        {NUMBERS: np.array([[1.0]], np.float32), STRINGS: np.array([["x"]], object)},
        out,
        1.0,
        old,
    )
    log.record("b", "churn", "2", {NUMBERS: np.array([[2.0, 3.0]], np.float32)}, out, 2.0, new)
    same = (("age", "fee"), ())  # equal to the layout in use, though another tuple: the same part
    log.record("c", "churn", "2", {NUMBERS: np.array([[4.0, 5.0]], np.float32)}, out, 3.0, same)
    parts = log.flush()
    assert [pq.read_table(p).column_names for p in parts] == [
        ["request_id", "row", "ts", "version", "variant", "model", "age", "plan", "prediction"],
        ["request_id", "row", "ts", "version", "variant", "model", "age", "fee", "prediction"],
    ]
    assert [r["fee"] for r in pq.read_table(parts[1]).to_pylist()] == [3.0, 5.0]
    assert log.pending == 0 and log.flush() == []


def test_request_log_buffers_every_request_and_flushes_in_a_thread(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from prodml.serve.reqlog import RequestLog

    log = RequestLog(tmp_path)
    layout = (("age",), ())
    for i in range(600):
        n = 1 + i % 3
        numbers = np.full((n, 1), i, np.float32)
        log.record(
            f"r{i}", "churn", "1", {NUMBERS: numbers}, [np.zeros(n), np.zeros((n, 2))], float(i), layout
        )
    assert log.pending == sum(1 + i % 3 for i in range(600))  # written at record time
    (part,) = asyncio.run(log.flush_async())
    table = pq.read_table(part)
    assert table.num_rows == sum(1 + i % 3 for i in range(600))
    ages = table.column("age").to_pylist()
    assert ages == [float(i) for i in range(600) for _ in range(1 + i % 3)]
    assert table.column("row").to_pylist()[:6] == [0, 0, 1, 0, 1, 2]


def test_request_log_keeps_every_row_while_a_flush_runs_and_across_layouts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from prodml.serve.reqlog import RequestLog

    log = RequestLog(tmp_path)
    one, two = (("age",), ()), (("age", "fee"), ())

    def record(i: int, layout: tuple[tuple[str, ...], tuple[str, ...]], prediction: np.ndarray) -> None:
        numbers = np.full((len(prediction), len(layout[0])), i, np.float32)
        log.record(f"r{i}", "churn", "1", {NUMBERS: numbers}, [prediction], float(i), layout)

    for i in range(3000):  # alternating layouts (a swap while old requests finish): two parts, not 3000
        record(i, one if i % 2 else two, np.zeros((1, 2), np.float32))
    record(3000, one, np.zeros((12_345, 2), np.float32))  # more rows than a chunk and than _ROWS
    record(3001, one, np.arange(12, dtype=np.float32).reshape(2, 2, 3))  # a 3-D output: another width
    during: list[str] = []

    async def flush_while_recording() -> list[Path]:
        flushing = asyncio.ensure_future(log.flush_async())
        await asyncio.sleep(0)  # the flush takes what was recorded so far
        while not flushing.done():  # requests go on arriving during the flush's steps
            record(4000 + len(during), one, np.ones((1, 2), np.float32))
            during.append(f"r{4000 + len(during)}")
            await asyncio.sleep(0)
        return await flushing

    first = [pq.read_table(p) for p in asyncio.run(flush_while_recording())]
    later = [pq.read_table(p) for p in log.flush()]
    assert len(first) == 3  # (one, width 2), (two, width 2), (one, width 6)
    assert sorted(t.num_rows for t in first) == [2, 1500, 1500 + 12_345]
    wide = next(t for t in first if t.schema.field("prediction").type.list_size == 6)
    assert wide.column("prediction").to_pylist()[1] == list(range(6, 12))
    big = next(t for t in first if t.num_rows > 12_345).to_pydict()
    assert [r for r, i in zip(big["row"], big["request_id"], strict=True) if i == "r3000"] == list(
        range(12_345)
    )
    assert during and [i for t in later for i in t.column("request_id").to_pylist()] == during  # none lost
