"""The model runtime: an ONNX Runtime session over a verified package, warmed up at load, and an
adaptive micro-batcher that merges concurrent requests into one ``session.run``.

Batching is adaptive: a request that finds the runtime idle runs at once (no added latency at low load);
requests that arrive while a batch runs queue up and go together in the next one, up to ``max_rows``,
optionally waiting ``max_wait`` for more when the queue shows concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from prodml.export.package import ModelPackage
from prodml.serve.validation import NUMBERS, STRINGS

__all__ = ["MicroBatcher", "Runtime", "front_loaded"]

INLINE_ROWS = 256  # batches up to this size run on the event loop; larger ones in a thread


def front_loaded(graph: bytes, schema: dict[str, Any]) -> bytes:
    """The package's graph behind one ``Split`` per input kind: the runtime feeds two matrices (numbers,
    strings) instead of one tensor per column — measured 29 µs → 18 µs per 1-row call on a 27-input
    model — and the outputs are those of the package's graph, unchanged.

    Built at load from the verified bytes, so nothing unverified is ever run.
    """
    import onnx
    from onnx import TensorProto, compose, helper

    model = onnx.load_from_string(graph)
    kinds = (
        (NUMBERS, [c["name"] for c in schema["inputs"] if c["dtype"] != "string"], TensorProto.FLOAT),
        (STRINGS, [c["name"] for c in schema["inputs"] if c["dtype"] == "string"], TensorProto.STRING),
    )
    nodes, inputs, outputs, initializers = [], [], [], []
    for name, columns, elem in kinds:
        if not columns:
            continue
        inputs.append(helper.make_tensor_value_info(name, elem, [None, len(columns)]))
        outputs += [helper.make_tensor_value_info(c, elem, [None, 1]) for c in columns]
        if len(columns) == 1:
            nodes.append(helper.make_node("Identity", [name], columns))
        else:
            sizes = f"{name}_sizes"
            initializers.append(
                helper.make_tensor(sizes, TensorProto.INT64, [len(columns)], [1] * len(columns))
            )
            nodes.append(helper.make_node("Split", [name, sizes], columns, axis=1))
    front = helper.make_model(
        helper.make_graph(nodes, "prodml_front", inputs, outputs, initializer=initializers),
        opset_imports=model.opset_import,
        ir_version=model.ir_version,
    )
    columns_in = [c for _, cols, _ in kinds for c in cols]
    return bytes(compose.merge_models(front, model, io_map=[(c, c) for c in columns_in]).SerializeToString())


class Runtime:
    """Runs the package's ONNX graph on the validator's two matrices. Thread-safe (ORT sessions are)."""

    def __init__(self, package: ModelPackage, *, threads: int = 1) -> None:
        self.package = package
        self.schema = package.schema
        self.session = package.session(
            intra_op_threads=threads, graph=front_loaded(package.onnx, self.schema)
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.task: str = self.schema.get("task", "regression")
        self.classes: list[Any] | None = self.schema.get("classes")
        self.warm_up()

    def warm_up(self) -> None:
        """Run one row built from the schema, so the first request pays no lazy initialisation."""
        numbers = [[c.get("min") or 0.0 for c in self.schema["inputs"] if c["dtype"] != "string"]]
        strings = [
            [(c.get("categories") or [""])[0] for c in self.schema["inputs"] if c["dtype"] == "string"]
        ]
        feeds = {}
        if numbers[0]:
            feeds[NUMBERS] = np.array(numbers, dtype=np.float32)
        if strings[0]:
            feeds[STRINGS] = np.array(strings, dtype=object)
        self.run(feeds)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in graph order: ``[label, probabilities]`` for classifiers, ``[variable]`` otherwise."""
        return list(self.session.run(self.output_names, feeds))


@dataclass
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future[list[np.ndarray]]


class MicroBatcher:
    """Merges concurrent requests for one runtime into batches.

    Args:
        run: the runtime's ``run``.
        max_rows: the most rows merged into one call.
        max_wait_s: how long a batch may wait for more requests once others are queued.
        on_batch: called with each batch's row count (metrics).
    """

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
        *,
        max_rows: int = 64,
        max_wait_s: float = 0.002,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch or (lambda _: None)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._busy = 0  # runtime calls running in a thread
        self._task: asyncio.Task[None] | None = None

    async def submit(self, feeds: dict[str, np.ndarray], rows: int) -> list[np.ndarray]:
        """Run ``feeds`` (``rows`` rows) as part of a batch; return this request's slice of the outputs."""
        idle = self._busy == 0 and (self._queue is None or self._queue.empty())
        if rows >= self.max_rows or (idle and rows <= INLINE_ROWS):
            # alone: big enough, or nothing to merge with (a small batch runs on the loop at once, so
            # requests only queue, and merge, behind a call that runs in a thread)
            return await self._call(feeds, rows)
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(feeds, rows, future))
        return await future

    async def _call(self, feeds: dict[str, np.ndarray], rows: int) -> list[np.ndarray]:
        self._on_batch(rows)
        if rows <= INLINE_ROWS:
            return self._run(feeds)
        self._busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self._run, feeds)
        finally:
            self._busy -= 1

    async def _loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            rows = batch[0].rows
            while not queue.empty() and rows < self.max_rows:
                batch.append(queue.get_nowait())
                rows += batch[-1].rows
            if len(batch) > 1 and rows < self.max_rows and self.max_wait_s > 0:
                deadline = time.monotonic() + self.max_wait_s
                while rows < self.max_rows and (left := deadline - time.monotonic()) > 0:
                    try:
                        item = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                    batch.append(item)
                    rows += item.rows
            await self._execute(batch, rows)

    async def _execute(self, batch: list[_Pending], rows: int) -> None:
        try:
            if len(batch) == 1:
                outputs = await self._call(batch[0].feeds, rows)
                results = [outputs]
            else:
                names = batch[0].feeds.keys()
                merged = {n: np.concatenate([p.feeds[n] for p in batch]) for n in names}
                outputs = await self._call(merged, rows)
                bounds = np.cumsum([p.rows for p in batch])[:-1]
                split = [np.split(o, bounds) for o in outputs]
                results = [[parts[i] for parts in split] for i in range(len(batch))]
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
