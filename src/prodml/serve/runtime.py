"""The model runtime: an ONNX Runtime session over a verified package, warmed up at load, and the
micro-batcher, prodml's one batching policy (see :class:`MicroBatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from prodml.export.package import ModelPackage
from prodml.serve.tensors import same_shapes, tensor_entries, warm_feeds
from prodml.serve.validation import NUMBERS, STRINGS

__all__ = ["MicroBatcher", "Runtime", "front_loaded"]

QUEUE_ROWS = 64  # requests from this size go to the runtime thread (ORT parallelises trees from ~50 rows)


def front_loaded(graph: bytes, schema: dict[str, Any]) -> bytes:
    """The package's graph fed by two matrices (numbers, strings) instead of one tensor per column.

    Every ``Concat`` (on axis 1) of input columns of one kind — how converted column transformers gather
    their pass-through columns — becomes one ``Gather`` of those columns from the matrix, and every other
    use of an input column reads it with a one-column ``Gather``. On the 27-input benchmark pipeline a
    1-row call drops from 29 µs (one tensor per column) to 11 µs. The nodes after the front are the
    package's own, so the outputs are unchanged (tested against the package's graph).

    Built at load from the verified bytes, so nothing unverified is ever run.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(graph)
    g = model.graph
    numbers = [c["name"] for c in schema["inputs"] if c["dtype"] != "string"]
    strings = [c["name"] for c in schema["inputs"] if c["dtype"] == "string"]
    where = {n: (NUMBERS, j) for j, n in enumerate(numbers)}
    where |= {n: (STRINGS, j) for j, n in enumerate(strings)}
    indices: list[Any] = []

    def gather(kind: str, columns: list[int], outputs: list[str]) -> Any:
        name = f"{outputs[0]}__prodml_columns"
        indices.append(numpy_helper.from_array(np.array(columns, np.int64), name))
        return helper.make_node("Gather", [kind, name], outputs, axis=1)

    nodes = []
    for node in g.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        sources = [where[i] for i in node.input if i in where]
        if (
            node.op_type == "Concat"
            and axis in (1, -1)
            and node.input
            and len(sources) == len(node.input)
            and len({kind for kind, _ in sources}) == 1
        ):
            nodes.append(gather(sources[0][0], [j for _, j in sources], list(node.output)))
        else:
            nodes.append(node)
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    front = [gather(kind, [j], [name]) for name, (kind, j) in where.items() if name in used]
    inputs = []
    if numbers:
        inputs.append(helper.make_tensor_value_info(NUMBERS, TensorProto.FLOAT, [None, len(numbers)]))
    if strings:
        inputs.append(helper.make_tensor_value_info(STRINGS, TensorProto.STRING, [None, len(strings)]))
    rewritten = helper.make_graph(
        front + nodes,
        g.name,
        inputs,
        list(g.output),
        initializer=[*g.initializer, *indices],
        value_info=list(g.value_info),
    )
    out = helper.make_model(rewritten, opset_imports=model.opset_import, ir_version=model.ir_version)
    return bytes(out.SerializeToString())


class Runtime:
    """Runs the package's ONNX graph on the validator's two matrices. Thread-safe (ORT sessions are).

    Two sessions over the same graph: a one-thread session for batches (under concurrency the other cores
    parse the next requests), and, with ``lone_threads > 1``, a wider one for a large request alone in the
    server, which would otherwise leave the other cores idle. ONNX Runtime splits a tree ensemble's trees
    across threads from ~50 rows (100 rows of the benchmark model: 139 → 91 µs on 2 threads), and its pool
    stops spinning when a run ends, so the wide session holds no core between requests.
    """

    def __init__(self, package: ModelPackage, *, lone_threads: int = 1) -> None:
        self.package = package
        self.schema = package.schema
        self.tensors = tensor_entries(self.schema)  # fed by name: the package's graph as it is
        graph = package.onnx if self.tensors else front_loaded(package.onnx, self.schema)
        self.session = package.session(graph=graph)
        self.wide = package.session(intra_op_threads=lone_threads, graph=graph) if lone_threads > 1 else None
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
        if self.tensors:
            feeds = warm_feeds(self.tensors)
        self.run(feeds)
        if self.wide is not None:
            self.run(feeds, lone=True)

    def run(self, feeds: dict[str, np.ndarray], *, lone: bool = False) -> list[np.ndarray]:
        """Outputs in graph order: ``[label, probabilities]`` for classifiers, ``[variable]`` otherwise.

        ``lone``: nothing else runs in the server now, so the wide session may use every core.
        """
        session = self.wide if lone and self.wide is not None else self.session
        return list(session.run(self.output_names, feeds))


@dataclass
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    lone: bool  # alone in the server when queued: the wide session may take every core
    future: asyncio.Future[list[np.ndarray]]  # answered on its own loop (future.get_loop())


class MicroBatcher:
    """Runs requests on the model; the one batching policy, with two paths.

    1. **Run now**, on the event loop: a request of fewer than ``QUEUE_ROWS`` rows when it is the only
       request in flight (``alone``, the data plane's count) and the runtime thread is idle. ONNX Runtime
       takes ~11 µs for one row here: less than a hand-off to a thread and back.
    2. **Batch with what is queued**: every other request goes to one runtime thread, which runs everything
       queued (up to ``max_rows`` rows, waiting up to ``max_wait_s`` for company once a batch has some) as
       one ``session.run``. ONNX Runtime releases the GIL, so the loop parses the next requests while a
       batch runs; a large request alone in the server runs on the wide session (every core).

    Args:
        run: the runtime's ``run``.
        max_rows: the most rows merged into one call.
        max_wait_s: how long a batch may wait for more requests once others are queued.
        on_batch: called on the event loop with each batch's row count (metrics).
    """

    def __init__(
        self,
        run: Callable[..., list[np.ndarray]],
        *,
        max_rows: int = 256,
        max_wait_s: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch or (lambda _: None)
        self._inbox: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._handed = 0  # requests on the runtime thread, not yet answered
        self._retired = False  # a swapped-out model's batcher: no new thread, requests run now
        self._carry: _Pending | None = None  # taken from the queue, first of the next batch (thread only)

    async def submit(
        self, feeds: dict[str, np.ndarray], rows: int, *, alone: bool = True
    ) -> list[np.ndarray]:
        """Run ``feeds`` (``rows`` rows), now or in a batch; return this request's outputs."""
        if self._retired or (alone and rows < QUEUE_ROWS and self._handed == 0):
            self._on_batch(rows)
            return self._run(feeds)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="prodml-runtime", daemon=True)
            self._thread.start()
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._inbox.put(_Pending(feeds, rows, alone and self._handed == 0, future))
        self._handed += 1
        try:
            return await future
        finally:
            self._handed -= 1

    def _take(self) -> tuple[list[_Pending], int] | None:
        """The next batch: what is queued now, up to ``max_rows`` (on the runtime thread). A request that
        would take a batch past ``max_rows``, or whose tensors differ from the first's beyond axis 0
        (sequences of other lengths), starts the next one; one larger than ``max_rows`` runs alone."""
        first, self._carry = self._carry or self._inbox.get(), None
        if first is None:
            return None
        batch, rows = [first], first.rows
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_rows:
            try:
                left = deadline - time.monotonic()
                item = (
                    self._inbox.get(timeout=left) if left > 0 and len(batch) > 1 else self._inbox.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                self._inbox.put(None)  # close after this batch
                break
            if rows + item.rows > self.max_rows or not same_shapes(first.feeds, item.feeds):
                self._carry = item
                break
            batch.append(item)
            rows += item.rows
        return batch, rows

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            batch, rows = taken
            try:
                if len(batch) == 1:
                    results: list[list[np.ndarray]] | None = [self._run(batch[0].feeds, lone=batch[0].lone)]
                else:
                    names = batch[0].feeds.keys()
                    outputs = self._run({n: np.concatenate([p.feeds[n] for p in batch]) for n in names})
                    ends = np.cumsum([p.rows for p in batch]).tolist()
                    results = [
                        [o[end - p.rows : end] for o in outputs] for p, end in zip(batch, ends, strict=True)
                    ]
                error = None
            except Exception as exc:
                results, error = None, exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                batch[0].future.get_loop().call_soon_threadsafe(self._answer, batch, rows, results, error)

    def _answer(
        self,
        batch: list[_Pending],
        rows: int,
        results: list[list[np.ndarray]] | None,
        error: Exception | None,
    ) -> None:
        for i, p in enumerate(batch):
            if p.future.done():  # cancelled: its client went away, or shutdown gave up on it
                continue
            if results is None:
                p.future.set_exception(error or RuntimeError("the runtime failed"))
            else:
                p.future.set_result(results[i])
        self._on_batch(rows)  # after every request has its answer: metrics cannot strand one

    def retire(self) -> None:
        """No more batches: the runtime thread ends after what is queued; later requests run now."""
        self._retired = True
        if self._thread is not None:
            self._inbox.put(None)

    async def close(self) -> None:
        self.retire()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
