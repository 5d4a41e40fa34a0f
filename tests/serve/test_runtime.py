"""The runtime: the front-loaded graph gives the package graph's outputs, the wide session the same; the
micro-batcher's two paths (run now, batch with what is queued)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from prodml.export.onnx import onnx_inputs, to_onnx
from prodml.export.package import ModelPackage
from prodml.export.schema import infer_schema
from prodml.serve.runtime import QUEUE_ROWS, MicroBatcher, Runtime, front_loaded
from prodml.serve.validation import NUMBERS, STRINGS
from prodml.train.pipeline import build_pipeline
from tests.export.test_onnx import TARGETS, X, project


def _session(graph: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("estimator", "task"),
    [
        ("logistic_regression", "binary"),
        ("hist_gradient_boosting", "multiclass"),
        ("random_forest", "regression"),
        ("lightgbm", "binary"),
    ],
)
def test_front_loaded_graph_gives_the_package_graph_outputs(estimator: str, task: str) -> None:
    frame = X[["plan", "gap", "age", "fee", "visits"]]  # schema order differs from the graph's
    pipe = build_pipeline(project(estimator, task), list(frame.columns), ["plan"]).fit(frame, TARGETS[task])
    graph = to_onnx(pipe, frame.head(50)).SerializeToString()
    schema = infer_schema(frame, ["plan"], task=task, classes=None, target="y")
    front = front_loaded(graph, schema)
    numeric = [c["name"] for c in schema["inputs"] if c["dtype"] != "string"]
    matrices = {
        NUMBERS: frame[numeric].to_numpy(np.float32),
        STRINGS: frame[["plan"]].to_numpy(object),
    }
    expected = _session(graph).run(None, onnx_inputs(frame))
    got = _session(front).run(None, matrices)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    # columns are read straight from the matrices: no Concat of raw input columns is left
    columns = {c["name"] for c in schema["inputs"]}
    for node in onnx.load_from_string(front).graph.node:
        if node.op_type == "Concat":
            assert not set(node.input) <= columns, node


def test_a_lone_request_on_the_wide_session_gets_the_same_answer() -> None:
    frame = X[["plan", "gap", "age", "fee", "visits"]]
    pipe = build_pipeline(project("hist_gradient_boosting", "binary"), list(frame.columns), ["plan"])
    pipe.set_params(model__max_iter=100)  # enough trees for ONNX Runtime to split them across threads
    pipe.fit(frame, TARGETS["binary"])
    graph = to_onnx(pipe, frame.head(50)).SerializeToString()
    schema = infer_schema(frame, ["plan"], task="binary", classes=[0, 1], target="y")
    runtime = Runtime(ModelPackage(Path(), graph, schema, {}, {}, {}, ""), lone_threads=2)
    assert runtime.wide is not None
    numeric = [c["name"] for c in schema["inputs"] if c["dtype"] != "string"]
    feeds = {NUMBERS: frame[numeric].to_numpy(np.float32), STRINGS: frame[["plan"]].to_numpy(object)}
    narrow, wide = runtime.run(feeds), runtime.run(feeds, lone=True)
    np.testing.assert_array_equal(wide[0], narrow[0])
    # per-thread partial sums of the trees round differently in float32's last bits, no more
    np.testing.assert_allclose(wide[1], narrow[1], rtol=0, atol=1e-6)
    assert runtime.wide.get_session_options().intra_op_num_threads == 2
    used: list[int] = []
    wide_session = runtime.wide

    class Spy:  # records which session ran
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            used.append(len(next(iter(feeds.values()))))
            return list(wide_session.run(names, feeds))

    runtime.wide = Spy()
    runtime.run(feeds)
    assert used == []
    np.testing.assert_array_equal(runtime.run(feeds, lone=True)[0], wide[0])
    assert used == [len(frame)]
    assert Runtime(ModelPackage(Path(), graph, schema, {}, {}, {}, ""), lone_threads=1).wide is None


def _recording(calls: list[tuple[str, int, bool]], hold: threading.Event | None = None) -> Any:
    """A runtime ``run`` that records (thread, rows, lone) per call; ``hold`` keeps the first call waiting
    until it is set, so that later requests queue behind it. Negative values fail the call."""

    def run(feeds: dict[str, np.ndarray], lone: bool = False) -> list[np.ndarray]:
        calls.append((threading.current_thread().name, len(feeds["x"]), lone))
        if hold is not None and len(calls) == 1:
            hold.wait(5)
        if (feeds["x"] < 0).any():
            raise ValueError("negative")
        return [feeds["x"] * 10]

    return run


def _x(rows: int, value: float = 1.0) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 1), value, np.float32)}


def _runtime_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "prodml-runtime"]


def test_a_small_request_alone_runs_now_on_the_loop() -> None:
    calls: list[tuple[str, int, bool]] = []

    async def scenario() -> None:
        batcher = MicroBatcher(_recording(calls))
        for _ in range(3):
            await batcher.submit(_x(1), 1, alone=True)
        await batcher.close()

    asyncio.run(scenario())
    assert calls == [("MainThread", 1, False)] * 3


def test_large_or_concurrent_requests_go_to_the_runtime_thread_and_only_a_lone_one_takes_every_core() -> None:
    calls: list[tuple[str, int, bool]] = []

    async def scenario() -> None:
        batcher = MicroBatcher(_recording(calls), max_rows=1000)
        for rows, alone in [(QUEUE_ROWS, True), (QUEUE_ROWS, False), (1, False)]:
            await batcher.submit(_x(rows), rows, alone=alone)
        await batcher.close()

    asyncio.run(scenario())
    assert calls == [
        ("prodml-runtime", QUEUE_ROWS, True),
        ("prodml-runtime", QUEUE_ROWS, False),
        ("prodml-runtime", 1, False),
    ]


def test_requests_that_queue_behind_a_running_call_run_as_one_batch_and_share_its_error() -> None:
    calls: list[tuple[str, int, bool]] = []
    hold = threading.Event()
    batches: list[int] = []

    async def scenario() -> tuple[list[Any], list[Any]]:
        batcher = MicroBatcher(_recording(calls, hold), max_rows=1000, on_batch=batches.append)
        big = asyncio.ensure_future(batcher.submit(_x(300), 300))
        while not calls:  # the big one is running on the thread
            await asyncio.sleep(0.01)
        small = [asyncio.ensure_future(batcher.submit(_x(2, i), 2, alone=True)) for i in range(5)]
        await asyncio.sleep(0.05)
        hold.set()
        results = await asyncio.gather(big, *small)
        failing = [batcher.submit(_x(QUEUE_ROWS, v), QUEUE_ROWS, alone=False) for v in (-1, 2)]
        failed = await asyncio.gather(*failing, return_exceptions=True)
        await batcher.close()
        return results, failed

    results, failed = asyncio.run(scenario())
    assert [r[0].ravel().tolist() for r in results[1:]] == [[10.0 * i] * 2 for i in range(5)]
    assert calls[:2] == [("prodml-runtime", 300, True), ("prodml-runtime", 10, False)]
    assert isinstance(failed[0], ValueError)  # a failing call's error goes to its requests
    assert sum(batches) == 300 + 10 + 2 * QUEUE_ROWS  # every call counted once


def test_a_batch_never_passes_max_rows() -> None:
    calls: list[tuple[str, int, bool]] = []
    hold = threading.Event()

    async def scenario() -> list[list[np.ndarray]]:
        batcher = MicroBatcher(_recording(calls, hold), max_rows=10)
        big = asyncio.ensure_future(batcher.submit(_x(300, 0), 300))
        while not calls:
            await asyncio.sleep(0.01)
        sizes = [4, 4, 4, 12, 1]
        queued = [
            asyncio.ensure_future(batcher.submit(_x(n, i), n, alone=False)) for i, n in enumerate(sizes)
        ]
        await asyncio.sleep(0.05)
        hold.set()
        results = await asyncio.gather(*queued)
        await big
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert [n for _, n, _ in calls] == [300, 8, 4, 12, 1]  # 4 + 4, then 4 (a 12 would pass 10), 12 alone, 1
    assert [r[0].ravel().tolist() for r in results] == [
        [10.0 * i] * n for i, n in enumerate([4, 4, 4, 12, 1])
    ]


def test_a_batch_waits_max_wait_for_company_once_it_has_some() -> None:
    calls: list[tuple[str, int, bool]] = []
    hold = threading.Event()

    async def scenario() -> None:
        batcher = MicroBatcher(_recording(calls, hold), max_rows=1000, max_wait_s=0.5)
        big = asyncio.ensure_future(batcher.submit(_x(300), 300))
        while not calls:
            await asyncio.sleep(0.01)
        first = [asyncio.ensure_future(batcher.submit(_x(1), 1, alone=False)) for _ in range(2)]
        await asyncio.sleep(0.01)
        hold.set()
        await asyncio.sleep(0.1)  # the thread took the two and waits for more
        late = batcher.submit(_x(1), 1, alone=False)
        await asyncio.gather(big, *first, late)
        await batcher.close()

    asyncio.run(scenario())
    assert [n for _, n, _ in calls] == [300, 3]  # the late request joined the waiting batch


def test_a_cancelled_request_leaves_the_rest_of_its_batch_answered() -> None:
    calls: list[tuple[str, int, bool]] = []
    hold = threading.Event()

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(_recording(calls, hold), max_rows=1000)
        big = asyncio.ensure_future(batcher.submit(_x(300), 300))
        while not calls:
            await asyncio.sleep(0.01)
        tasks = [asyncio.ensure_future(batcher.submit(_x(1, i), 1, alone=False)) for i in range(3)]
        await asyncio.sleep(0.01)
        tasks[1].cancel()  # its client went away
        hold.set()
        results = await asyncio.gather(big, *tasks, return_exceptions=True)
        await batcher.close()
        return results[1:]

    results = asyncio.run(scenario())
    assert results[0][0].item() == 0.0 and results[2][0].item() == 20.0
    assert isinstance(results[1], asyncio.CancelledError)


def test_a_retired_batcher_ends_its_thread_and_runs_late_requests_now() -> None:
    calls: list[tuple[str, int, bool]] = []

    async def scenario() -> None:
        batcher = MicroBatcher(_recording(calls))
        await batcher.submit(_x(QUEUE_ROWS), QUEUE_ROWS, alone=False)
        (thread,) = _runtime_threads()
        batcher.retire()  # a model swap
        await asyncio.to_thread(thread.join, 5)
        assert not thread.is_alive()
        await batcher.submit(_x(300), 300, alone=False)
        assert _runtime_threads() == []  # no new thread for a retired model

    asyncio.run(scenario())
    assert [where for where, _, _ in calls] == ["prodml-runtime", "MainThread"]
