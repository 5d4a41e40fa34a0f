"""The transport-free core of inference: validate → (online features) → cache → run → log, plus what
every transport asks besides (readiness, explanations, feedback) and the per-request metrics.

REST, gRPC and the batch and stream workers are thin adapters: they turn their wire format into columns
(name → values), call the data plane inside :meth:`DataPlane.serve` (which counts, times and records
each request's outcome) and map the prodml errors it raises once, to their status codes.

Example:
    >>> prediction = await plane.infer({"age": [42], "plan": ["pro"]}, request_id="r1")  # doctest: +SKIP
    >>> prediction.version, prediction.outputs[1].shape  # doctest: +SKIP
    ('3', (1, 2))
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from prodml.core.errors import InvalidInput, ProdmlError, Unavailable
from prodml.serve.cache import Cache, cache_key
from prodml.serve.metrics import Metrics
from prodml.serve.model import LoadedModel, ModelManager
from prodml.serve.online import with_key
from prodml.serve.reqlog import Recorder
from prodml.serve.routing import CHOSEN, Router
from prodml.serve.validation import NUMBERS, STRINGS, bad_field

__all__ = ["DataPlane", "Prediction"]

logger = logging.getLogger(__name__)
access = logging.getLogger("prodml.serve.access")
T = TypeVar("T")

# request ids when the client gives none: a per-process random prefix and a counter (cheaper than uuid4);
# a forked worker draws its own prefix, so ids stay unique across the workers of one server
_IDS = itertools.count()
_PREFIX = secrets.token_hex(6)


def _new_prefix() -> None:
    global _PREFIX
    _PREFIX = secrets.token_hex(6)


os.register_at_fork(after_in_child=_new_prefix)


@dataclass
class Prediction:
    """The outputs of one request, in graph order, and the model version that produced them."""

    outputs: list[np.ndarray]
    model: LoadedModel
    request_id: str
    variant: str = "primary"  # the deployment's variant that answered
    out_of_range: dict[str, int] = field(default_factory=dict)  # input → values beyond training's range

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def name(self) -> str:
        return self.model.name


class DataPlane:
    """One inference path for every transport."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        metrics: Metrics,
        cache: Cache | None = None,
        log: Recorder | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.cache = cache
        self.log = log
        self.draining = False  # set on SIGTERM: readiness answers 503 from then on
        self.inflight = 0  # requests inside infer: the batching policy's one count
        self._log_failed = False  # said once
        self.router = Router(manager, metrics)  # the deployment spec's variants (see routing)
        if hasattr(manager, "on_check"):  # a registry-backed manager: follow the spec after each check
            manager.on_check.append(self.router.refresh)

    # --- what every transport asks ----------------------------------------------------------------

    def ready(self) -> bool:
        """Whether this server takes traffic: a model is loaded and it is not draining."""
        return self.manager.current is not None and not self.draining

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether ``name`` (``version``) is served and the server is not draining.

        Raises:
            NotFound: another model or version was asked for.
        """
        try:
            self.manager.get(name, version)
        except Unavailable:
            return False
        return not self.draining

    def model(self, name: str | None = None, version: str | None = None) -> LoadedModel:
        return self.manager.get(name, version)

    async def serve(
        self, protocol: str, work: Callable[[], Awaitable[T]], request_id: str | None = None
    ) -> T:
        """Run one request's ``work``, counting its outcome in the metrics (HTTP status, or gRPC code for
        ``protocol`` ``grpc``); errors are logged (structured, with the request id) and re-raised for the
        transport to map."""
        ok, attr = ("OK", "grpc_code") if protocol == "grpc" else (200, "http_status")
        start = time.perf_counter()
        status: int | str = ok
        self.metrics.inflight.inc()
        CHOSEN.set(None)
        try:
            return await work()
        except ProdmlError as exc:
            status = getattr(exc, attr)
            self.metrics.errors.labels(type(exc).__name__).inc()
            extra = {
                "request_id": request_id or "-",
                "protocol": protocol,
                "status": status,
                "error": exc.message,
            }
            access.info("request refused", extra=extra)
            raise
        except Exception:
            status = "INTERNAL" if protocol == "grpc" else 500
            self.metrics.errors.labels("internal").inc()
            logger.exception(
                "unexpected error", extra={"request_id": request_id or "-", "protocol": protocol}
            )
            raise
        finally:
            self.metrics.inflight.dec()
            self.metrics.done(protocol, status, time.perf_counter() - start)
            self.router.done(status, time.perf_counter() - start)

    # --- inference --------------------------------------------------------------------------------

    async def infer(
        self,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        *,
        request_id: str | None = None,
        name: str | None = None,
        version: str | None = None,
    ) -> Prediction:
        """Score ``columns`` (feature name → one value per row) with the served model.

        Raises:
            InvalidInput: the input breaks the model's schema (400 / INVALID_ARGUMENT).
            NotFound: another model or version was asked for.
            Unavailable: no model is loaded yet.
        """
        request_id = request_id or f"{_PREFIX}{next(_IDS):010x}"
        # held for the whole request: a swap cannot pull it away
        variant, model = self.router.pick(columns, name, version)
        keys = None
        if model.online is not None and model.online.wants(columns):  # the entity key, not every input
            keys = columns[model.online.entity]
            columns = await model.online.join(columns)
        feeds, rows = model.validator.feeds(columns)
        outside = model.validator.outside(feeds)  # flagged and counted (serve.out_of_range)
        for column, n in outside.items():
            self.metrics.out_of_range.labels(column).inc(n)
        self.inflight += 1
        try:
            key = cache_key(model.version, feeds) if self.cache is not None else ""
            outputs = await self.cache.get(key) if self.cache is not None else None
            if self.cache is not None:
                self.metrics.cache.labels("miss" if outputs is None else "hit").inc()
            if outputs is None:
                outputs = await model.batcher.submit(feeds, rows, alone=self.inflight == 1)
                if self.cache is not None:
                    await self.cache.set(key, outputs)
        finally:
            self.inflight -= 1
        self.metrics.rows.inc(rows)
        self.router.observe(variant, model, outputs)
        self.router.mirror_request(columns, outputs)  # a shadow, if any: queued, never awaited
        if model.sketch is not None:  # live drift: keeps references until the server's tick bins them
            model.sketch.observe(feeds.get(NUMBERS), feeds.get(STRINGS), outputs[-1])
        if self.log is not None:
            try:
                logged, layout = feeds, model.validator.layout
                if keys is not None:  # the entity key goes into the log with the features it fetched
                    logged, layout = with_key(feeds, layout, model.online.entity, keys)
                self.log.record(
                    request_id, model.name, model.version, logged, outputs, time.time(), layout, variant
                )
            except Exception:  # the answer is ready: a log that cannot take it must not fail the request
                self.log.dropped += rows
                if not self._log_failed:
                    self._log_failed = True
                    logger.exception("the request log cannot record %s; its requests are dropped", model.name)
        return Prediction(outputs, model, request_id, variant, outside)

    async def explain(
        self, columns: Mapping[str, Sequence[Any]], *, name: str | None = None
    ) -> tuple[LoadedModel, list[dict[str, Any]]]:
        """Shapley-value estimates per row (see :mod:`prodml.serve.explain`), computed in a thread."""
        from prodml.serve.explain import explain_rows

        model = self.manager.get(name)
        if model.validator.tensors is not None:
            raise InvalidInput(
                f"'{model.name}' takes tensors: explanations are computed for column models only"
            )
        feeds, rows = model.validator.feeds(columns)
        return model, await asyncio.to_thread(explain_rows, model, feeds, rows)

    def feedback(self, name: str, body: Any) -> int:
        """Record labels (``{request_id, label}``, or a list of them) for logged requests; their count."""
        self.manager.get(name)
        items = body if isinstance(body, list) else [body]
        for i, item in enumerate(items):
            label = item.get("label") if isinstance(item, dict) else None
            if not (
                isinstance(item, dict)
                and isinstance(item.get("request_id"), str)
                and type(label) in (int, float)
            ):
                raise bad_field(f"[{i}]", "feedback needs request_id (string) and label (number)")
        if self.log is None:
            raise InvalidInput("this server does not log requests, so feedback cannot be joined")
        for item in items:
            self.log.feedback(item["request_id"], item["label"])
        return len(items)
