"""Kafka message values ↔ prediction requests and results, and dead letters.

A request message's value is JSON, one of:

- a record: ``{"tenure": 12, "plan": "pro", ...}`` (one row), optionally with its request id in
  ``id_field`` (default ``request_id``), which is taken out before validation;
- a list of records: ``[{...}, {...}]`` (one row each);
- an Open Inference Protocol v2 request body: ``{"id": "r1", "inputs": [{"name": ..., "shape": [N],
  "datatype": ..., "data": [...]}]}`` (decoded by the server's own ``oip_request`` / ``oip_columns``).

Its request id is the id field (records) or ``id`` (OIP), else the message key, else
``topic/partition/offset``. The result goes to the output topic under that key, with the model in the
value and in the headers (``prodml-model``, ``prodml-version``, ``prodml-request-id``)::

    {"request_id": "r1", "model": "churn", "version": "3", "predictions": [{"label": 1, "probability": 0.83}]}

(an OIP request gets an OIP v2 response body instead). The value is what the server's ``/predict``
answers for the same rows; the header ``prodml-worker`` names the worker (host-pid).

A dead letter keeps the original key and value byte for byte (so it can be replayed as is) and says
what happened in headers: ``prodml-error-reason`` (``not-json`` | ``schema`` | ``scoring``),
``prodml-error`` (the message), ``prodml-error-fields`` (JSON field errors for ``schema``), and
``prodml-source-topic`` / ``-partition`` / ``-offset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from prodml.core.errors import InvalidInput
from prodml.serve.protocols import encode_oip, oip_columns, oip_request
from prodml.stream.kafka import Headers, Message

__all__ = ["Dead", "NotJson", "Out", "Request", "dead_letter", "decode", "encode"]

Reason = Literal["not-json", "schema", "scoring"]


class NotJson(ValueError):
    """The message value is not a JSON document."""


@dataclass(slots=True)
class Request:
    """One decoded request message."""

    message: Message
    request_id: str
    records: list[dict[str, Any]] | None = None  # a record or a list of records
    columns: dict[str, Any] | None = None  # an OIP request's columns
    rows: int = 0


@dataclass(slots=True)
class Dead:
    """A message for the dead-letter topic, with why."""

    message: Message
    reason: Reason
    error: str
    fields: list[dict[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Out:
    """A result to produce: key (the request id), value, headers."""

    key: bytes | None
    value: bytes
    headers: Headers


def where(message: Message) -> str:
    return f"{message.topic()}/{message.partition()}/{message.offset()}"


def decode(message: Message, id_field: str = "request_id") -> Request:
    """A message → its request.

    Raises:
        NotJson: the value is empty or not JSON.
        InvalidInput: JSON of another shape, or an OIP body that does not decode.
    """
    value = message.value()
    if not value:
        raise NotJson("the message has no value")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise NotJson(f"the value is not JSON: {exc}") from None
    key = message.key()
    if type(body) is dict:
        if "inputs" in body and isinstance(body["inputs"], list):
            tensors, request = oip_request(body)
            columns = oip_columns(tensors)
            rid = request.get("id")
            request_id = rid if isinstance(rid, str) and rid else _key_or_where(key, message)
            rows = len(next(iter(columns.values())))
            return Request(message, request_id, columns=columns, rows=rows)
        rid = body.pop(id_field, None)
        request_id = (
            str(rid) if rid is not None and not isinstance(rid, dict | list) else _key_or_where(key, message)
        )
        return Request(message, request_id, records=[body], rows=1)
    if type(body) is list and body:
        return Request(message, _key_or_where(key, message), records=body, rows=len(body))
    raise InvalidInput(
        "expected a JSON object (a record or an OIP v2 request) or a non-empty list of records",
        fields=[{"field": "value", "error": f"got {type(body).__name__}"}],
    )


def _key_or_where(key: bytes | None, message: Message) -> str:
    if key:
        return key.decode("utf-8", errors="replace")
    return where(message)


def encode(
    request: Request,
    outputs: list[np.ndarray],
    predictions: Sequence[Any],
    *,
    model: str,
    version: str,
    output_names: list[str],
) -> Out:
    """One request's result: ``predictions`` (records) or ``outputs`` (OIP) → the output message."""
    rid = request.request_id
    if request.columns is not None:
        body, _ = encode_oip(
            outputs, output_names, model=model, version=version, request_id=rid, binary=False
        )
        value = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        value = orjson.dumps(
            {"request_id": rid, "model": model, "version": version, "predictions": predictions}
        )
    headers = [
        ("prodml-model", model.encode()),
        ("prodml-version", version.encode()),
        ("prodml-request-id", rid.encode()),
    ]
    return Out(rid.encode(), value, headers)


def dead_letter(dead: Dead) -> Out:
    """The dead-letter message: the original key and value, and why in headers."""
    m = dead.message
    headers: Headers = [
        ("prodml-error-reason", dead.reason.encode()),
        ("prodml-error", dead.error.encode("utf-8", errors="replace")[:2000]),
        ("prodml-source-topic", str(m.topic()).encode()),
        ("prodml-source-partition", str(m.partition()).encode()),
        ("prodml-source-offset", str(m.offset()).encode()),
    ]
    if dead.fields:
        headers.append(("prodml-error-fields", orjson.dumps(dead.fields[:50])))
    return Out(m.key(), m.value() or b"", headers)
