"""One micro-batch of request messages through the server's data plane: results and dead letters.

Every message of a batch is decoded; the record messages are merged into one set of columns and scored
with one :meth:`DataPlane.infer` call (validation, cache, runtime, metrics, request log: the server's own
path), so a batch of 1,000 one-row messages costs one validation and one ONNX Runtime call. When that
call refuses the batch (a message breaks the schema) or fails, each message is scored on its own, so the
broken ones go to the dead-letter topic with their own errors and the rest still get their results.
OIP request bodies (already columns, usually many rows) are scored one call each.

``Unavailable`` (no model loaded yet) is not a property of a message: it propagates, and the worker
waits for the model instead of sending the batch to the dead letters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from prodml.core.errors import InvalidInput, ProdmlError, Unavailable
from prodml.serve import DataPlane
from prodml.serve.dataplane import Prediction
from prodml.serve.protocols import columns_from_records, predictions
from prodml.serve.validation import short
from prodml.stream.messages import Dead, NotJson, Out, Request, decode, encode, where

__all__ = ["score_batch"]

logger = logging.getLogger(__name__)
PROTOCOL = "kafka"  # the label of the stream's requests in the server's metrics


async def score_batch(
    plane: DataPlane, messages: list[Any], *, id_field: str = "request_id"
) -> tuple[list[Out], list[Dead]]:
    """Decode and score ``messages``; return the results and the dead letters (in input order each).

    Raises:
        Unavailable: no model is loaded (nothing was produced; the batch can be retried as a whole).
    """
    requests: list[Request] = []
    dead: list[Dead] = []
    for m in messages:
        try:
            requests.append(decode(m, id_field))
        except NotJson as exc:
            dead.append(Dead(m, "not-json", str(exc)))
        except InvalidInput as exc:
            dead.append(Dead(m, "schema", exc.message, list(getattr(exc, "fields", []))))
    records = [r for r in requests if r.records is not None]
    outs: list[Out] = []
    if records:
        outs += await _records(plane, records, dead)
    for r in requests:
        if r.columns is not None:
            outs += await _one(plane, r, dead)
    return outs, dead


async def _records(plane: DataPlane, requests: list[Request], dead: list[Dead]) -> list[Out]:
    """All record messages in one data-plane call; one call per message when that call fails."""
    if len(requests) > 1:
        batch_id = f"stream:{where(requests[0].message)}+{len(requests)}"
        try:
            rows = [row for r in requests for row in r.records or ()]
            columns = columns_from_records(rows)
            # not inside DataPlane.serve: a refused batch is not a refused request (each message is
            # then scored, and counted, on its own); a scored one counts as one request
            start = time.perf_counter()
            prediction = await plane.infer(columns, request_id=batch_id)
            plane.metrics.done(PROTOCOL, 200, time.perf_counter() - start)
            return _outs(prediction, requests)
        except Unavailable:
            raise
        except InvalidInput:
            pass  # some message breaks the schema: find which, one by one
        except Exception:
            logger.exception("a batch of %d messages failed to score; scoring them one by one", len(requests))
    out: list[Out] = []
    for r in requests:
        out += await _one(plane, r, dead)
    return out


async def _one(plane: DataPlane, r: Request, dead: list[Dead]) -> list[Out]:
    try:
        columns = r.columns if r.columns is not None else columns_from_records(r.records)
        return await _infer(plane, [r], columns, r.request_id)
    except Unavailable:
        raise
    except InvalidInput as exc:
        dead.append(Dead(r.message, "schema", exc.message, list(getattr(exc, "fields", []))))
    except ProdmlError as exc:
        dead.append(Dead(r.message, "scoring", exc.message))
    except Exception as exc:
        logger.exception("scoring %s failed", where(r.message))
        dead.append(Dead(r.message, "scoring", f"{type(exc).__name__}: {short(exc, 200)}"))
    return []


async def _infer(plane: DataPlane, requests: list[Request], columns: Any, request_id: str) -> list[Out]:
    work: Callable[[], Awaitable[Prediction]] = lambda: plane.infer(columns, request_id=request_id)  # noqa: E731
    return _outs(await plane.serve(PROTOCOL, work, request_id), requests)


def _outs(prediction: Prediction, requests: list[Request]) -> list[Out]:
    """One output message per request, each with its rows of the prediction."""
    model = prediction.model
    runtime = model.runtime
    outputs: list[np.ndarray] = prediction.outputs
    rows = predictions(outputs, runtime.task, runtime.classes, style="records")
    out: list[Out] = []
    start = 0
    for r in requests:
        stop = start + r.rows
        # only an OIP response carries the raw outputs; records carry their predictions
        part = outputs if len(requests) == 1 or r.columns is None else [o[start:stop] for o in outputs]
        out.append(
            encode(
                r,
                part,
                rows[start:stop],
                model=model.name,
                version=model.version,
                output_names=runtime.output_names,
            )
        )
        start = stop
    return out
