"""The inference endpoints as plain functions of (headers, body) → :class:`Reply`, and the lean ASGI
router that serves them without a framework in between.

FastAPI (in ``http``) owns everything else — metadata, health, OpenAPI, error pages — and documents these
routes too; :class:`FastPath` answers the four POST inference routes itself, which spares each request
FastAPI's middleware stack and per-request telemetry checks (measured: ~40% of a 1-row request).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from prodml.core.errors import InvalidInput, ProdmlError
from prodml.serve import protocols as p
from prodml.serve.dataplane import DataPlane, Prediction
from prodml.serve.validation import RequestError, Rows

__all__ = ["FastPath", "Handlers", "Reply", "ServerState", "read_body", "reply_headers"]

logger = logging.getLogger("prodml.serve.access")
JSON = "application/json"
_ORJSON = orjson.OPT_SERIALIZE_NUMPY

ASGIApp = Callable[..., Awaitable[None]]


@dataclass
class ServerState:
    """What the transports need beyond the data plane."""

    plane: DataPlane
    max_body_bytes: int = 8 << 20
    draining: bool = False
    started_at: float = field(default_factory=time.time)


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = JSON


def json_reply(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, orjson.dumps(obj, option=_ORJSON), headers or {})


def error_reply(status: int, message: str, fields: list[dict[str, str]] | None = None) -> Reply:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = fields
    return json_reply(body, status)


def loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            f"the body is not valid JSON: {exc}", [{"field": "body", "error": "invalid JSON"}]
        ) from None


def too_large_reply(limit: int) -> Reply:
    return error_reply(
        400, f"the body is larger than {limit} bytes", [{"field": "body", "error": f"at most {limit} bytes"}]
    )


def _pred_headers(pred: Prediction) -> dict[str, str]:
    return {"x-model-name": pred.name, "x-model-version": pred.version, "x-request-id": pred.request_id}


# printable ASCII but '%': what a header value may carry as it is (no CR/LF to split the response)
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(value: str) -> bytes:
    """A response header value as bytes: as it is when plain printable ASCII, else percent-encoded (a
    client's request id — OIP's ``id`` may hold any string — or a model name may not be)."""
    if not (value.isascii() and value.isprintable() and "%" not in value):
        value = quote(value, safe=_HEADER_SAFE)
    return value.encode("ascii")


def reply_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    """The reply's headers as the wire carries them, content type and length first (every transport)."""
    return [
        (b"content-type", reply.media_type.encode("ascii")),
        (b"content-length", b"%d" % len(reply.body)),
        *((name.encode("ascii"), header_value(value)) for name, value in reply.headers.items()),
    ]


def decode_headers(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers as uvicorn gives them (names lower-case bytes) → a dict of text."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in pairs}


def declared_too_large(declared: str | None, limit: int) -> bool:
    """A ``Content-Length`` that is not a plain number, or one above ``limit``."""
    if declared is None:
        return False
    return not declared.isdigit() or len(declared) > 18 or int(declared) > limit


class Handlers:
    """The inference endpoints. ``headers`` keys are lower-case."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.plane = state.plane

    async def scored(
        self, protocol: str, work: Callable[[], Awaitable[Reply]], headers: Mapping[str, str] | None = None
    ) -> Reply:
        """Run one request: metrics, and every error turned into its JSON reply (never a trace).

        Failed requests are logged (structured: request id, protocol, status, error); successful ones are
        counted, not logged, to keep logging off the latency budget.
        """
        metrics = self.plane.metrics
        start = time.perf_counter()
        metrics.inflight += 1
        try:
            reply = await work()
        except ProdmlError as exc:
            metrics.errors.labels(type(exc).__name__).inc()
            reply = error_reply(exc.http_status, exc.message, getattr(exc, "fields", None))
            logger.info(
                "request refused",
                extra={
                    "request_id": (headers or {}).get("x-request-id", "-"),
                    "protocol": protocol,
                    "status": exc.http_status,
                    "error": exc.message,
                },
            )
        except Exception:
            metrics.errors.labels("internal").inc()
            logger.exception(
                "unexpected error",
                extra={"request_id": (headers or {}).get("x-request-id", "-"), "protocol": protocol},
            )
            reply = error_reply(500, "internal error")
        finally:
            metrics.inflight -= 1
        metrics.done(protocol, reply.status, time.perf_counter() - start)
        return reply

    async def v2_infer(self, name: str, version: str | None, headers: Mapping[str, str], raw: bytes) -> Reply:
        async def work() -> Reply:
            header_len = headers.get("inference-header-content-length")
            if header_len is not None:
                if not header_len.isdigit() or int(header_len) > len(raw):
                    raise RequestError(
                        "Inference-Header-Content-Length does not fit the body",
                        [{"field": "Inference-Header-Content-Length", "error": "out of range"}],
                    )
                body, tail = loads(raw[: int(header_len)]), raw[int(header_len) :]
            else:
                body, tail = loads(raw), b""
            columns, req = p.parse_oip(body, tail)
            given = req.get("id")
            rid = given if isinstance(given, str) else headers.get("x-request-id")
            pred = await self.plane.infer(columns, request_id=rid, name=name, version=version)
            raw_params = req.get("parameters")
            params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
            binary = bool(params.get("binary_data_output")) or any(
                isinstance(o, dict)
                and isinstance(o.get("parameters"), dict)
                and o["parameters"].get("binary_data")
                for o in req.get("outputs") or []
            )
            out, tail_out = p.encode_oip(
                pred.outputs,
                pred.model.runtime.output_names,
                model=pred.name,
                version=pred.version,
                request_id=pred.request_id,
                binary=binary,
            )
            h = _pred_headers(pred)
            if binary:
                head = orjson.dumps(out, option=_ORJSON)
                h["inference-header-content-length"] = str(len(head))
                return Reply(200, head + tail_out, h, "application/octet-stream")
            return json_reply(out, headers=h)

        return await self.scored("v2", work, headers)

    async def v1_predict(self, name: str, headers: Mapping[str, str], raw: bytes) -> Reply:
        async def work() -> Reply:
            model = self.plane.model(name)
            rows = p.rows_from_kserve_v1(loads(raw), model.validator.names, raw=raw)
            pred = await self.plane.infer(rows, request_id=headers.get("x-request-id"), name=name)
            preds = p.predictions(pred.outputs, pred.model.runtime.task, pred.model.runtime.classes)
            return json_reply(
                {"predictions": preds, "model_version": pred.version}, headers=_pred_headers(pred)
            )

        return await self.scored("v1", work, headers)

    async def v1_explain(self, name: str, headers: Mapping[str, str], raw: bytes) -> Reply:
        async def work() -> Reply:
            from prodml.serve.explain import explain_rows

            model = self.plane.model(name)
            rows = p.rows_from_kserve_v1(loads(raw), model.validator.names, raw=raw)
            feeds, n = model.validator.feeds(rows)
            # up to thousands of rows through the graph: in a thread, so other requests go on meanwhile
            explanations = await asyncio.to_thread(explain_rows, model, feeds, n)
            return json_reply(
                {
                    "explanations": explanations,
                    "model_version": model.version,
                    "method": "permutation-sampled Shapley values vs the training baseline",
                },
                headers={"x-model-name": model.name, "x-model-version": model.version},
            )

        return await self.scored("v1-explain", work, headers)

    async def invocations(self, headers: Mapping[str, str], raw: bytes) -> Reply:
        async def work() -> Reply:
            ctype = headers.get("content-type", JSON).split(";")[0].strip().lower()
            params: dict[str, Any] = {}
            columns: dict[str, Any] | Rows
            if ctype == "text/csv":
                try:
                    columns = p.columns_from_csv(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise RequestError(
                        "the CSV body is not UTF-8", [{"field": "body", "error": "not UTF-8"}]
                    ) from None
            elif ctype == JSON:
                columns, params = p.columns_from_mlflow(loads(raw), raw=raw)
            else:
                raise RequestError(
                    f"unsupported content type {ctype!r}",
                    [{"field": "Content-Type", "error": "use application/json or text/csv"}],
                )
            pred = await self.plane.infer(columns, request_id=headers.get("x-request-id"))
            style = "proba" if params.get("predict_method") == "predict_proba" else "label"
            preds = p.predictions(
                pred.outputs, pred.model.runtime.task, pred.model.runtime.classes, style=style
            )
            return json_reply({"predictions": preds}, headers=_pred_headers(pred))

        return await self.scored("mlflow", work, headers)

    async def predict(self, headers: Mapping[str, str], raw: bytes) -> Reply:
        async def work() -> Reply:
            body = loads(raw)
            records = body.get("records") if isinstance(body, dict) else body
            rows = p.rows_from_records(records, body=raw)
            pred = await self.plane.infer(rows, request_id=headers.get("x-request-id"))
            preds = p.predictions(
                pred.outputs, pred.model.runtime.task, pred.model.runtime.classes, style="records"
            )
            return json_reply(
                {
                    "model": pred.name,
                    "version": pred.version,
                    "request_id": pred.request_id,
                    "predictions": preds,
                },
                headers=_pred_headers(pred),
            )

        return await self.scored("predict", work, headers)

    async def feedback(self, name: str, raw: bytes) -> Reply:
        async def work() -> Reply:
            self.plane.model(name)
            body = loads(raw)
            items = body if isinstance(body, list) else [body]
            for i, item in enumerate(items):
                label = item.get("label") if isinstance(item, dict) else None
                if not (
                    isinstance(item, dict)
                    and isinstance(item.get("request_id"), str)
                    and isinstance(label, int | float)
                    and not isinstance(label, bool)
                ):
                    raise RequestError(
                        "feedback needs request_id (string) and label (number)",
                        [{"field": f"[{i}]", "error": "expected {request_id, label}"}],
                    )
            if self.plane.log is None:
                raise InvalidInput("this server does not log requests, so feedback cannot be joined")
            for item in items:
                self.plane.log.feedback(item["request_id"], item["label"])
            return json_reply({"accepted": len(items)})

        return await self.scored("feedback", work)


_V2 = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_V1 = re.compile(r"^/v1/models/([^/]+):(predict|explain)$")


class FastPath:
    """ASGI app: the POST inference routes go straight to :class:`Handlers`; the rest to ``fallback``."""

    def __init__(self, handlers: Handlers, fallback: ASGIApp) -> None:
        self.handlers = handlers
        self.fallback = fallback
        self.limit = handlers.state.max_body_bytes

    def route(self, path: str, headers: Mapping[str, str]) -> Callable[[bytes], Awaitable[Reply]] | None:
        h = self.handlers
        if path == "/invocations":
            return lambda raw: h.invocations(headers, raw)
        if path == "/predict":
            return lambda raw: h.predict(headers, raw)
        if v2 := _V2.match(path):
            name, version = v2.group(1), v2.group(2)
            return lambda raw: h.v2_infer(name, version, headers, raw)
        if v1 := _V1.match(path):
            model = v1.group(1)
            if v1.group(2) == "explain":
                return lambda raw: h.v1_explain(model, headers, raw)
            return lambda raw: h.v1_predict(model, headers, raw)
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.fallback(scope, receive, send)
            return
        headers = decode_headers(scope["headers"])
        route = self.route(scope["path"], headers)
        if route is None:
            await self.fallback(scope, receive, send)
            return
        too_big = declared_too_large(headers.get("content-length"), self.limit)
        raw = None if too_big else await read_body(receive, self.limit)
        reply = too_large_reply(self.limit) if raw is None else await route(raw)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": reply_headers(reply),
            }
        )
        await send({"type": "http.response.body", "body": reply.body})


async def read_body(receive: Any, limit: int) -> bytes | None:
    """An ASGI request's body; None once it passes ``limit`` bytes, b"" if the client went away."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)
