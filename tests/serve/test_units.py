"""Unit tests of the serving pieces that need no process: validation, protocols, cache, batching."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodml.serve.cache import CircuitBreaker, LRUCache, cache_key
from prodml.serve.metrics import Metrics
from prodml.serve.protocols import columns_from_csv, columns_from_mlflow, parse_oip, predictions
from prodml.serve.runtime import GATHER_ROWS, INLINE_ROWS, MicroBatcher
from prodml.serve.validation import NUMBERS, STRINGS, RequestError, Rows, Validator, may_hold_booleans

SCHEMA = {
    "inputs": [
        {"name": "age", "dtype": "float", "nullable": False},
        {"name": "gap", "dtype": "float", "nullable": True},
        {"name": "plan", "dtype": "string", "nullable": False, "categories": ["basic", "pro"]},
    ]
}


def test_validator_builds_one_float32_and_one_string_matrix() -> None:
    validator = Validator(SCHEMA)
    feeds, rows = validator.feeds({"age": [30, 41.5], "gap": [None, 2], "plan": ["pro", "basic"]})
    assert rows == 2
    assert (validator.numeric_names, validator.string_names) == (["age", "gap"], ["plan"])
    numbers = feeds[NUMBERS]
    assert numbers.dtype == np.float32
    assert numbers.shape == (2, 2)
    assert numbers.flags.c_contiguous
    assert numbers[:, 0].tolist() == [30.0, 41.5]
    assert np.isnan(numbers[0, 1])
    assert feeds[STRINGS].tolist() == [["pro"], ["basic"]]
    # the per-column path (taken when something is unusual) gives the same matrices
    slow, _ = validator.feeds({"age": np.array([30, 41.5]), "gap": [None, 2.0], "plan": ["pro", "basic"]})
    np.testing.assert_array_equal(slow[NUMBERS], numbers)


@pytest.mark.parametrize(
    ("columns", "field", "error"),
    [
        ({"age": [1], "plan": ["pro"]}, "gap", "missing"),
        ({"age": [1], "gap": [1], "plan": ["pro"], "x": [1]}, "x", "unknown column"),
        ({"age": [float("nan")], "gap": [1], "plan": ["pro"]}, "age", "not nullable"),
        ({"age": [float("inf")], "gap": [1], "plan": ["pro"]}, "age", "infinite"),
        ({"age": ["1"], "gap": [1], "plan": ["pro"]}, "age", "expected numbers"),
        ({"age": [1], "gap": [1], "plan": ["gold"]}, "plan", "unknown category 'gold'"),
        ({"age": [1, 2], "gap": [1], "plan": ["pro"]}, "age", "values"),
    ],
)
def test_validator_field_errors(columns: dict[str, list[object]], field: str, error: str) -> None:
    with pytest.raises(RequestError) as info:
        Validator(SCHEMA).feeds(columns)
    assert any(f["field"] == field and error in f["error"] for f in info.value.fields), info.value.fields


_VALUES = st.one_of(
    st.integers(-5, 5),
    st.integers(2**53, 2**60),  # beyond what Arrow converts exactly: the row path must defer
    # finite in float64; the first two are infinite in float32 and refused by every path, the last is not
    st.sampled_from([1e39, 2.0**128 - 2.0**103, float(np.nextafter(2.0**128 - 2.0**103, 0))]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.none(),
    st.booleans(),
    st.sampled_from(["pro", "basic", "gold", "", "1.5"]),
)


@settings(max_examples=400, deadline=None)
@given(
    order=st.permutations(["age", "gap", "plan"]),
    data=st.lists(st.lists(_VALUES, min_size=3, max_size=3), min_size=0, max_size=4),
    # (values of up to 4 rows: 1 row takes the plain-Python path, more the columnar one)
    as_records=st.booleans(),
    extra=st.booleans(),
    policy=st.sampled_from(["reject", "map"]),
)
def test_row_path_accepts_and_builds_exactly_what_the_column_path_does(
    order: list[str], data: list[list[object]], as_records: bool, extra: bool, policy: str
) -> None:
    """The lean row path may only hand back what the per-column path would build; else it defers."""
    validator = Validator(SCHEMA, unknown_category=policy, max_rows=3)
    names = order + ["x"] * extra
    rows = [row + [1.0] * extra for row in data]
    # the body's bytes: one without true/false takes Arrow's conversion
    body = orjson.dumps(rows)
    given_rows = (
        Rows([dict(zip(names, r, strict=True)) for r in rows], body=body)
        if as_records
        else Rows(rows, tuple(names), body=body)
    )
    try:
        expected = validator.feeds(given_rows.columns())
    except RequestError as exc:
        refused = exc.fields
    else:
        refused = None
    if refused is not None:
        with pytest.raises(RequestError) as info:
            validator.feeds(given_rows)
        assert info.value.fields == refused
        return
    got, n = validator.feeds(given_rows)
    assert n == expected[1]
    assert got.keys() == expected[0].keys()
    np.testing.assert_array_equal(got[NUMBERS], expected[0][NUMBERS])
    assert got[NUMBERS].dtype == np.float32 and got[NUMBERS].flags.c_contiguous
    assert got[STRINGS].tolist() == expected[0][STRINGS].tolist()


@pytest.mark.parametrize("body", [None, b'{"no": "bools"}'])
@pytest.mark.parametrize("n", [1, 3])
def test_clean_rows_take_the_lean_path(n: int, body: bytes | None) -> None:
    validator = Validator(SCHEMA)
    data = [[30.0 + i, None if i % 2 else 1.5, "pro"] for i in range(n)]
    for rows in (
        Rows(data, ("age", "gap", "plan"), body=body),
        Rows([dict(zip(("plan", "age", "gap"), (r[2], r[0], r[1]), strict=True)) for r in data], body=body),
    ):
        lean = validator._rows(rows)
        assert lean is not None  # not deferred to the per-column path
        feeds, rows_seen = lean
        assert rows_seen == n
        assert feeds[NUMBERS][:, 0].tolist() == [30.0 + i for i in range(n)]
        assert feeds[STRINGS].ravel().tolist() == ["pro"] * n


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"true", b"false", b"e", b"ue", b"ru", b"als", b"1.5e-05", b",", b"null"])),
    st.integers(0, 5000),
)
def test_the_boolean_scan_finds_exactly_the_words_true_and_false(parts: list[bytes], pad: int) -> None:
    for body in (b"".join(parts), b"0" * pad + b"".join(parts), b"".join(parts) + b" " * pad):
        assert may_hold_booleans(body) == (b"true" in body or b"false" in body), body[:80]


def test_unknown_categories_can_be_mapped_and_rows_are_capped() -> None:
    feeds, _ = Validator(SCHEMA, unknown_category="map").feeds({"age": [1], "gap": [1], "plan": ["gold"]})
    assert feeds[STRINGS].tolist() == [["gold"]]
    with pytest.raises(RequestError, match="exceed the limit of 2"):
        Validator(SCHEMA, max_rows=2).feeds({"age": [1] * 3, "gap": [1] * 3, "plan": ["pro"] * 3})


def test_oip_json_nested_and_binary_parse_to_the_same_columns() -> None:
    flat = {
        "inputs": [
            {"name": "age", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "plan", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["bc"]]},
        ]
    }
    columns, _ = parse_oip(flat)
    assert columns == {"age": [1, 2], "plan": ["a", "bc"]}
    age = np.array([1, 2], "<f4").tobytes()
    plan = struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc"
    binary = {
        "inputs": [
            {"name": "age", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": len(age)}},
            {
                "name": "plan",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(plan)},
            },
        ]
    }
    columns, _ = parse_oip(binary, age + plan)
    assert columns["age"].tolist() == [1.0, 2.0]
    assert columns["plan"] == ["a", "bc"]
    with pytest.raises(RequestError, match="not claimed"):
        parse_oip(binary, age + plan + b"x")


def test_mlflow_and_csv_forms() -> None:
    split, _ = columns_from_mlflow({"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}})
    records, params = columns_from_mlflow(
        {
            "dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}],
            "params": {"predict_method": "predict_proba"},
        }
    )
    assert isinstance(split, Rows) and isinstance(records, Rows)
    expected = {"a": [1, 2], "b": ["x", "y"]}
    assert {k: list(v) for k, v in split.columns().items()} == records.columns() == expected
    with pytest.raises(RequestError, match=r"dataframe_split.data\[1\]: expected a list of 2 values"):
        columns_from_mlflow({"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2]]}})
    with pytest.raises(RequestError, match=r"dataframe_split.columns: column names must be strings"):
        columns_from_mlflow({"dataframe_split": {"columns": ["a", 2], "data": [[1, "x"]]}})
    mismatched, _ = columns_from_mlflow({"dataframe_records": [{"a": 1}, {"b": 2}]})
    assert isinstance(mismatched, Rows)
    with pytest.raises(RequestError, match=r"dataframe_records\[1\]: has different columns"):
        mismatched.columns()
    assert params == {"predict_method": "predict_proba"}
    assert columns_from_csv("a,b\n1,x\n,y\n") == {"a": [1.0, None], "b": ["x", "y"]}
    with pytest.raises(RequestError, match="exactly one"):
        columns_from_mlflow({"instances": [], "inputs": []})


def test_prediction_styles() -> None:
    outputs = [np.array([1, 0]), np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)]
    assert predictions(outputs, "binary", [0, 1], style="label") == [1, 0]
    records = predictions(outputs, "binary", ["stay", "churn"], style="records")
    assert records[0]["label"] == "churn"
    assert records[0]["probability"] == pytest.approx(0.8)
    assert predictions([np.array([[1.5], [2.5]])], "regression", None) == [1.5, 2.5]


def test_cache_key_depends_on_version_and_values() -> None:
    feeds = {"a": np.array([[1.0]], np.float32), "p": np.array([["x"]], dtype=object)}
    assert cache_key("1", feeds) == cache_key("1", {k: v.copy() for k, v in feeds.items()})
    assert cache_key("1", feeds) != cache_key("2", feeds)
    assert cache_key("1", feeds) != cache_key("1", {**feeds, "p": np.array([["y"]], dtype=object)})
    joined = {"p": np.array([["a\x1fb"], ["c"]], dtype=object)}  # texts are length-prefixed, not joined
    assert cache_key("1", joined) != cache_key("1", {"p": np.array([["a"], ["b\x1fc"]], dtype=object)})


def test_lru_evicts_and_expires() -> None:
    async def scenario() -> None:
        cache = LRUCache(max_items=2, ttl_s=60)
        for k in "abc":
            await cache.set(k, [np.array([ord(k)])])
        assert await cache.get("a") is None
        assert (await cache.get("c"))[0].tolist() == [99]  # type: ignore[index]
        expiring = LRUCache(ttl_s=0.01)
        await expiring.set("k", [np.array([1])])
        await asyncio.sleep(0.02)
        assert await expiring.get("k") is None

    asyncio.run(scenario())


def test_circuit_breaker_opens_after_five_failures_and_probes_after_cooldown() -> None:
    breaker = CircuitBreaker(threshold=5, cooldown_s=0.05)
    for _ in range(4):
        breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    import time

    time.sleep(0.06)
    assert breaker.allow()  # one probe
    assert not breaker.allow()
    breaker.success()
    assert breaker.allow()


def _slow_when_big(calls: list[int], answer: Any) -> Any:
    """A runtime ``run`` that records each call's rows and holds the runtime thread for 50 ms on a call of
    more than 256 rows, so that smaller requests queue behind it."""
    import time

    def run(feeds: dict[str, np.ndarray], lone: bool = False) -> list[np.ndarray]:
        calls.append(len(feeds["x"]))
        if len(feeds["x"]) > 256:
            time.sleep(0.05)
        return [answer(feeds["x"])]

    return run


def test_micro_batcher_merges_requests_that_queue_behind_a_running_call() -> None:

    calls: list[int] = []
    run = _slow_when_big(calls, lambda x: x * 2)

    async def scenario() -> list[list[np.ndarray]]:
        batcher = MicroBatcher(run, max_rows=1000)
        big = asyncio.ensure_future(batcher.submit({"x": np.ones((300, 1), np.float32)}, 300))
        await asyncio.sleep(0.01)
        small = [batcher.submit({"x": np.full((2, 1), i, np.float32)}, 2) for i in range(10)]
        results = await asyncio.gather(*small)
        await big
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    for i, out in enumerate(results):
        assert out[0].ravel().tolist() == [2 * i, 2 * i]
    assert calls[0] == 300
    assert calls[1:] == [20]  # all ten queued behind the running call, then ran as one batch


def test_micro_batcher_never_merges_past_max_rows() -> None:

    calls: list[int] = []
    run = _slow_when_big(calls, lambda x: x + 1)

    async def scenario() -> list[list[np.ndarray]]:
        batcher = MicroBatcher(run, max_rows=10)
        big = asyncio.ensure_future(batcher.submit({"x": np.zeros((300, 1), np.float32)}, 300))
        await asyncio.sleep(0.01)
        sizes = [4, 4, 4, 12, 1]
        queued = [batcher.submit({"x": np.full((n, 1), i, np.float32)}, n) for i, n in enumerate(sizes)]
        results = await asyncio.gather(*queued)
        await big
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert calls == [300, 8, 4, 12, 1]  # 4 + 4, then 4 (a 12 would pass 10), 12 alone, then 1
    assert [r[0].ravel().tolist() for r in results] == [[i + 1.0] * n for i, n in enumerate([4, 4, 4, 12, 1])]


def test_micro_batcher_runs_an_idle_request_at_once() -> None:
    calls: list[int] = []

    async def scenario() -> None:
        batcher = MicroBatcher(lambda f, lone: (calls.append(len(f["x"])), [f["x"]])[1], max_rows=64)
        for _ in range(3):
            await batcher.submit({"x": np.ones((1, 1), np.float32)}, 1)
        await batcher.close()

    asyncio.run(scenario())
    assert calls == [1, 1, 1]


def test_micro_batcher_lets_only_a_large_lone_request_use_every_core() -> None:
    seen: list[tuple[int, bool]] = []

    def run(feeds: dict[str, np.ndarray], lone: bool = False) -> list[np.ndarray]:
        seen.append((len(feeds["x"]), lone))
        return [feeds["x"]]

    async def scenario() -> None:
        batcher = MicroBatcher(run, max_rows=1000)
        for rows, alone in [(1, True), (100, True), (100, False), (300, True), (300, False)]:
            await batcher.submit({"x": np.ones((rows, 1), np.float32)}, rows, alone=alone)
        await batcher.close()

    asyncio.run(scenario())
    assert seen == [(1, False), (100, True), (100, False), (300, True), (300, False)]


def test_micro_batcher_sends_concurrent_requests_to_the_runtime_thread() -> None:
    import threading

    calls: list[tuple[str, int]] = []
    gate = threading.Event()

    def run(feeds: dict[str, np.ndarray], lone: bool = False) -> list[np.ndarray]:
        calls.append((threading.current_thread().name, len(feeds["x"])))
        gate.wait(5)  # the first call holds the thread until every request is queued
        if (feeds["x"] < 0).any():
            raise ValueError("negative")
        return [feeds["x"] + 1]

    async def scenario() -> tuple[list[list[np.ndarray]], BaseException]:
        batcher = MicroBatcher(run, max_rows=1000)
        busy = []
        for i in range(6):
            # the first (large) holds the thread; the small ones queue behind it rather than on the loop
            rows = GATHER_ROWS if i == 0 else 1
            one = {"x": np.full((rows, 1), i, np.float32)}
            busy.append(asyncio.ensure_future(batcher.submit(one, rows, alone=False)))
            await asyncio.sleep(0.05 if i == 0 else 0)  # the first is on the thread before the others queue
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*busy)
        failed = await asyncio.gather(
            batcher.submit({"x": np.full((GATHER_ROWS, 1), -1, np.float32)}, GATHER_ROWS, alone=False),
            return_exceptions=True,
        )
        await batcher.close()
        return results, failed[0]

    results, failed = asyncio.run(scenario())
    assert [r[0][0].item() for r in results] == [1, 2, 3, 4, 5, 6]
    assert calls == [("prodml-runtime", GATHER_ROWS), ("prodml-runtime", 5), ("prodml-runtime", GATHER_ROWS)]
    assert isinstance(failed, ValueError)  # the run's error, handed to the request


def _recording_run(calls: list[tuple[str, int]]) -> Any:
    import threading

    def run(feeds: dict[str, np.ndarray], lone: bool = False) -> list[np.ndarray]:
        calls.append((threading.current_thread().name, len(feeds["x"])))
        if (feeds["x"] < 0).any():
            raise ValueError("negative")
        return [feeds["x"] * 10]

    return run


def test_micro_batcher_gathers_small_concurrent_requests_into_one_call_on_the_loop() -> None:
    calls: list[tuple[str, int]] = []
    batches: list[int] = []

    async def scenario() -> tuple[list[list[np.ndarray]], list[Any], bool]:
        batcher = MicroBatcher(_recording_run(calls), max_rows=8, on_batch=batches.append)
        # requests of one loop turn, each in company (alone=False): 3 + 1 + 2 + 2 rows fit max_rows, the
        # fifth would pass it and goes to the runtime thread
        sizes = [3, 1, 2, 2, 2]
        small = [
            batcher.submit({"x": np.full((n, 1), i, np.float32)}, n, alone=False) for i, n in enumerate(sizes)
        ]
        results = await asyncio.gather(*small)
        failed = await asyncio.gather(
            *(batcher.submit({"x": np.full((1, 1), v, np.float32)}, 1, alone=False) for v in (-1, 5)),
            return_exceptions=True,
        )
        started = batcher._thread is not None
        await batcher.close()
        return results, failed, started

    results, failed, started = asyncio.run(scenario())
    assert [r[0].ravel().tolist() for r in results] == [[0] * 3, [10], [20] * 2, [30] * 2, [40] * 2]
    # one call on the loop once the turn's requests were in; the one past max_rows on the thread (which
    # of the two ran first depends on when the new thread got the GIL)
    assert sorted(calls[:2]) == [("MainThread", 8), ("prodml-runtime", 2)]
    assert calls[2] == ("MainThread", 2)  # a failing batch: its error goes to each of its requests
    assert [type(f).__name__ for f in failed] == ["ValueError", "ValueError"]
    assert started
    assert sorted(batches) == [2, 2, 8]  # every call counted once in the batch-size metric


def test_micro_batcher_never_gathers_more_on_the_loop_than_it_runs_inline() -> None:
    calls: list[tuple[str, int]] = []

    async def scenario() -> list[list[np.ndarray]]:
        batcher = MicroBatcher(_recording_run(calls), max_rows=4096)  # batches may be large on the thread
        rows = GATHER_ROWS - 1
        requests = [
            batcher.submit({"x": np.full((rows, 1), i, np.float32)}, rows, alone=False) for i in range(40)
        ]
        results = await asyncio.gather(*requests)
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert [r[0][0].item() for r in results] == [10.0 * i for i in range(40)]
    on_loop = [n for where, n in calls if where == "MainThread"]
    assert on_loop == [(INLINE_ROWS // (GATHER_ROWS - 1)) * (GATHER_ROWS - 1)]  # 4 requests, 252 rows
    assert sum(n for _, n in calls) == 40 * (GATHER_ROWS - 1)  # the rest ran on the thread


def test_micro_batcher_with_a_wait_for_company_sends_small_requests_to_the_thread() -> None:
    calls: list[tuple[str, int]] = []

    async def scenario() -> None:
        batcher = MicroBatcher(_recording_run(calls), max_rows=64, max_wait_s=0.01)
        await asyncio.gather(
            *(batcher.submit({"x": np.full((1, 1), i, np.float32)}, 1, alone=False) for i in range(3))
        )
        await batcher.close()

    asyncio.run(scenario())
    assert {where for where, _ in calls} == {"prodml-runtime"}
    assert sum(n for _, n in calls) == 3


def test_a_cancelled_request_leaves_the_rest_of_its_gathered_batch_answered() -> None:
    calls: list[tuple[str, int]] = []

    async def scenario() -> tuple[list[Any], bool]:
        batcher = MicroBatcher(_recording_run(calls), max_rows=64)
        tasks = [
            asyncio.ensure_future(batcher.submit({"x": np.full((1, 1), i, np.float32)}, 1, alone=False))
            for i in range(3)
        ]
        await asyncio.sleep(0)  # every task has queued its request; the batch runs after this turn
        tasks[1].cancel()  # its client went away
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return results, batcher._thread is None

    results, no_thread = asyncio.run(scenario())
    assert results[0][0].item() == 0.0 and results[2][0].item() == 20.0
    assert isinstance(results[1], asyncio.CancelledError)
    assert calls == [("MainThread", 3)] and no_thread


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


def test_loop_metrics_render_as_prometheus_families() -> None:
    metrics = Metrics()
    metrics.done("v2", 200, 0.001)  # on a bound: counted in that bucket ("le")
    metrics.done("v2", 200, 0.0003)
    metrics.done("grpc", "INVALID_ARGUMENT", 3.0)
    metrics.rows += 5
    metrics.batch_rows.observe(5)
    text = metrics.render().decode()
    assert 'prodml_requests_total{code="200",protocol="v2"} 2.0' in text
    assert 'prodml_requests_total{code="INVALID_ARGUMENT",protocol="grpc"} 1.0' in text
    assert 'prodml_request_seconds_bucket{le="0.0005",protocol="v2"} 1.0' in text
    assert 'prodml_request_seconds_bucket{le="0.001",protocol="v2"} 2.0' in text
    assert 'prodml_request_seconds_bucket{le="2.5",protocol="grpc"} 0.0' in text
    assert 'prodml_request_seconds_bucket{le="+Inf",protocol="grpc"} 1.0' in text
    assert 'prodml_request_seconds_count{protocol="v2"} 2.0' in text
    assert "prodml_rows_total 5.0" in text
    assert 'prodml_batch_rows_bucket{le="4.0"} 0.0' in text
    assert 'prodml_batch_rows_bucket{le="8.0"} 1.0' in text
    assert "prodml_inflight_requests 0.0" in text


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
        ["request_id", "row", "ts", "version", "model", "age", "plan", "prediction"],
        ["request_id", "row", "ts", "version", "model", "age", "fee", "prediction"],
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


def test_a_retired_batcher_ends_its_thread_and_runs_late_requests_inline() -> None:
    import threading

    where: list[str] = []

    def run(feeds: dict[str, np.ndarray], lone: bool = False) -> list[np.ndarray]:
        where.append(threading.current_thread().name)
        return [feeds["x"]]

    async def scenario() -> None:
        batcher = MicroBatcher(run)
        await batcher.submit({"x": np.ones((GATHER_ROWS, 1), np.float32)}, GATHER_ROWS, alone=False)
        thread = batcher._thread
        assert thread is not None and thread.is_alive()
        batcher.retire()  # a model swap
        await asyncio.to_thread(thread.join, 5)
        assert not thread.is_alive()
        await batcher.submit({"x": np.ones((1, 1), np.float32)}, 1, alone=False)

    asyncio.run(scenario())
    assert where == ["prodml-runtime", "MainThread"]


def test_a_retired_batcher_runs_a_large_late_request_off_the_loop() -> None:
    import threading

    where: list[str] = []

    def run(feeds: dict[str, np.ndarray], lone: bool = False) -> list[np.ndarray]:
        where.append(threading.current_thread().name)
        return [feeds["x"]]

    async def scenario() -> None:
        batcher = MicroBatcher(run)
        batcher.retire()
        await batcher.submit({"x": np.ones((300, 1), np.float32)}, 300, alone=False)
        assert batcher._thread is None  # no runtime thread started for a retired model

    asyncio.run(scenario())
    assert len(where) == 1 and where[0] not in ("MainThread", "prodml-runtime")


def test_micro_batcher_waits_max_wait_for_company_once_a_batch_has_some() -> None:

    calls: list[int] = []
    run = _slow_when_big(calls, lambda x: x)

    async def scenario() -> None:
        batcher = MicroBatcher(run, max_rows=1000, max_wait_s=0.5)
        big = asyncio.ensure_future(batcher.submit({"x": np.zeros((300, 1), np.float32)}, 300))
        await asyncio.sleep(0.01)
        first = [
            asyncio.ensure_future(batcher.submit({"x": np.ones((1, 1), np.float32)}, 1)) for _ in range(2)
        ]
        await asyncio.sleep(0.1)  # the thread took the two and waits for more
        late = batcher.submit({"x": np.ones((1, 1), np.float32)}, 1)
        await asyncio.gather(big, *first, late)
        await batcher.close()

    asyncio.run(scenario())
    assert calls == [300, 3]  # the late request joined the waiting batch


def _request_id_prefix() -> str:
    from prodml.serve import dataplane

    return dataplane._PREFIX


def test_generated_request_ids_differ_across_forked_workers() -> None:
    import multiprocessing

    from prodml.serve import dataplane

    with multiprocessing.get_context("fork").Pool(1) as pool:  # how `serve --workers N` starts workers
        child = pool.apply(_request_id_prefix)
    assert child != dataplane._PREFIX and len(child) == 12


def test_lone_request_threads_are_the_workers_share_of_the_cores_unless_set(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from prodml.core.project import Serve
    from prodml.serve import model as model_module
    from prodml.serve.model import ModelManager

    def manager(**serve: object) -> ModelManager:
        return ModelManager(
            ref=None,
            package_dir=tmp_path,
            cache_dir=tmp_path,
            tracking_uri=None,
            serve=Serve.model_validate(serve),
            metrics=Metrics(),
        )

    monkeypatch.setattr(model_module, "usable_cpus", lambda: 8)
    assert manager().lone_threads() == 4  # at most 4
    assert manager(workers=4).lone_threads() == 2
    assert manager(workers=16).lone_threads() == 1
    assert manager(workers=4, lone_threads=3).lone_threads() == 3


def test_usable_cpus_follow_the_cgroup_quota(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from prodml.serve.model import usable_cpus

    here = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    assert usable_cpus(quota) == here
    quota.write_text("100000 100000\n")  # limits.cpu: 1
    assert usable_cpus(quota) == 1
    quota.write_text("50000 100000\n")  # half a CPU still runs one thread
    assert usable_cpus(quota) == 1
    quota.write_text(f"{(here + 8) * 100000} 100000\n")  # a quota above the affinity
    assert usable_cpus(quota) == here
    assert usable_cpus(tmp_path / "absent") == here


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


def test_a_request_log_that_fails_drops_the_rows_not_the_request(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prodml.serve.dataplane import DataPlane
    from prodml.serve.reqlog import RequestLog

    class Broken(RequestLog):
        def record(self, *args: object, **kwargs: object) -> None:
            raise ValueError("disk on fire")

    class Model:
        name, version = "churn", "1"
        validator = Validator({"inputs": [{"name": "age", "dtype": "float", "nullable": False}]})

        class batcher:  # stands in for the MicroBatcher
            @staticmethod
            async def submit(feeds: dict[str, np.ndarray], rows: int, *, alone: bool) -> list[np.ndarray]:
                return [feeds[NUMBERS] * 2]

    class Manager:
        @staticmethod
        def get(name: object = None, version: object = None) -> Model:
            return Model()

    log = Broken(tmp_path)
    plane = DataPlane(Manager(), metrics=Metrics(), log=log)  # type: ignore[arg-type]
    for _ in range(2):
        answer = asyncio.run(plane.infer({"age": [20.0, 21.0]}))
        assert answer.outputs[0].ravel().tolist() == [40.0, 42.0]
    assert log.dropped == 4


def test_after_warm_arrow_a_first_request_loads_no_module() -> None:
    import subprocess
    import sys

    code = """
import sys
from prodml.serve.validation import Rows, Validator, warm_arrow
validator = Validator({"inputs": [{"name": "x", "dtype": "float", "nullable": True}]})
warm_arrow()
loaded = set(sys.modules)
feeds, rows = validator.feeds(Rows([[1.5], [None]], names=("x",), field="data", body=b"[[1.5],[null]]"))
assert rows == 2 and feeds["__prodml_numbers"][0, 0] == 1.5
print(sorted(set(sys.modules) - loaded))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
