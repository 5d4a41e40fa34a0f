"""The transport-free core of inference: validate → (online features) → route → cache → run → log.

REST, gRPC and the batch and stream workers are thin adapters that turn their wire format into columns
(name → values) and call :meth:`DataPlane.infer`; errors are prodml errors that each transport maps once.

Example:
    >>> prediction = await plane.infer({"age": [42], "plan": ["pro"]}, request_id="r1")  # doctest: +SKIP
    >>> prediction.version, prediction.outputs[1].shape  # doctest: +SKIP
    ('3', (1, 2))
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prodml.serve.cache import Cache, cache_key
from prodml.serve.metrics import Metrics
from prodml.serve.model import LoadedModel, ModelManager
from prodml.serve.reqlog import Recorder
from prodml.serve.validation import Rows

__all__ = ["DataPlane", "Prediction"]

logger = logging.getLogger(__name__)

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
        self.backlog: Callable[[], int] = lambda: 0  # requests the transport holds (set by the server)
        self._log_failed = False  # said once

    def model(self, name: str | None = None, version: str | None = None) -> LoadedModel:
        return self.manager.get(name, version)

    async def infer(
        self,
        columns: Mapping[str, Sequence[Any] | np.ndarray] | Rows,
        *,
        request_id: str | None = None,
        name: str | None = None,
        version: str | None = None,
    ) -> Prediction:
        """Score ``columns`` (feature name → one value per row, or :class:`Rows`) with the served model.

        Raises:
            RequestError: the input breaks the model's schema (400 / INVALID_ARGUMENT).
            NotFound: another model or version was asked for.
            Unavailable: no model is loaded yet.
        """
        request_id = request_id or f"{_PREFIX}{next(_IDS):010x}"
        model = self.manager.get(name, version)  # held for the whole request: a swap cannot pull it away
        feeds, rows = model.validator.feeds(columns)
        # online features would join here, keyed by the entity column of the request
        if self.cache is None:
            outputs = await model.batcher.submit(feeds, rows, alone=self.backlog() <= 1)
        else:
            key = cache_key(model.version, feeds)
            found = await self.cache.get(key)
            self.metrics.cache.labels("miss" if found is None else "hit").inc()
            if found is None:
                found = await model.batcher.submit(feeds, rows, alone=self.backlog() <= 1)
                await self.cache.set(key, found)
            outputs = found
        self.metrics.rows += rows
        if self.log is not None:
            layout = model.validator.layout
            try:
                self.log.record(request_id, model.name, model.version, feeds, outputs, time.time(), layout)
            except Exception:  # the answer is ready: a log that cannot take it must not fail the request
                self.log.dropped += rows
                if not self._log_failed:
                    self._log_failed = True
                    logger.exception("the request log cannot record %s; its requests are dropped", model.name)
        return Prediction(outputs, model, request_id)
