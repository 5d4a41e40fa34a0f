"""Shadow traffic: a sample of requests mirrored to another version, off the response path.

The data plane answers from the primary first; then :meth:`Mirror.offer` puts the request's columns on
a bounded queue (a full queue drops the request and counts it) and returns at once. One background task
takes requests from the queue, validates them with the shadow's own validator (its schema may differ)
and runs the shadow's runtime in a thread. So a failing or slow shadow changes neither a response nor
its latency: its errors and latency are only counted (``prodml_variant_*`` with variant ``shadow``),
with its agreement with the primary's answer (``prodml_shadow_agreement``) and its drops
(``prodml_shadow_dropped``) — what ``prodml rollout shadow-report`` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from prodml.core.errors import ProdmlError

if TYPE_CHECKING:
    from prodml.serve.metrics import Metrics
    from prodml.serve.model import LoadedModel

__all__ = ["Mirror"]

logger = logging.getLogger(__name__)

Item = tuple[str, "LoadedModel", Mapping[str, Sequence[Any] | np.ndarray], list[np.ndarray]]


class Mirror:
    """The shadow queue of one server process.

    Args:
        metrics: where shadow outcomes are counted.
        observe: counts a variant's prediction scores (the router's).
        max_queue: requests that may wait; more are dropped (counted).
    """

    def __init__(self, metrics: Metrics, observe: Any, *, max_queue: int = 256) -> None:
        self.metrics = metrics
        self.observe = observe
        self.max_queue = max_queue
        self._queue: asyncio.Queue[Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def offer(
        self,
        variant: str,
        model: LoadedModel,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        primary: list[np.ndarray],
    ) -> None:
        """Queue one request for the shadow ``model``; never waits, never raises."""
        if self._queue is None:
            self._queue = asyncio.Queue(self.max_queue)
            self._task = asyncio.get_running_loop().create_task(self._work())
        try:
            self._queue.put_nowait((variant, model, columns, primary))
        except asyncio.QueueFull:
            self.dropped += 1
            self.metrics.shadow_dropped.labels(model.version).inc()

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            variant, model, columns, primary = await self._queue.get()
            start = time.perf_counter()
            code = "200"
            try:
                feeds, _ = model.validator.feeds(columns)
                outputs = await asyncio.to_thread(model.runtime.run, feeds)
                self.observe(variant, model, outputs)
                if model.runtime.task in ("binary", "multiclass") and len(primary) > 1:
                    same = int(np.sum(np.asarray(outputs[0]).ravel() == np.asarray(primary[0]).ravel()))
                    rows = int(np.asarray(primary[0]).size)
                    agreement = self.metrics.shadow_agreement
                    agreement.labels(model.version, "agree").inc(same)
                    agreement.labels(model.version, "disagree").inc(rows - same)
            except ProdmlError as exc:
                code = str(exc.http_status)
            except Exception:  # the shadow's failure is counted, never raised: nobody waits for it
                code = "500"
                logger.debug("shadow %s failed", model.version, exc_info=True)
            self.metrics.variant_requests.labels(variant, model.version, code).inc()
            self.metrics.variant_latency.labels(variant, model.version).observe(time.perf_counter() - start)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
