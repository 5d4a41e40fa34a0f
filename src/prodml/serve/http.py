"""REST transport: Open Inference Protocol v2, KServe v1, MLflow scoring and ``/predict`` over one
:class:`DataPlane`; Prometheus ``/metrics``; the admin app on its own port.

Handlers read the body once, parse it with orjson and never let a pydantic model touch the hot path;
the OpenAPI document (``/openapi.json``) still describes every request body. Errors are JSON
``{"error": …, "fields": […]}`` with the status the prodml error carries; nothing leaks a trace.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from prodml import __version__
from prodml.core.errors import InvalidInput, ProdmlError
from prodml.serve import protocols as p
from prodml.serve.dataplane import DataPlane
from prodml.serve.validation import RequestError

__all__ = ["ServerState", "admin_app", "inference_app"]

logger = logging.getLogger("prodml.serve.access")
JSON = "application/json"
_ORJSON = orjson.OPT_SERIALIZE_NUMPY


@dataclass
class ServerState:
    """What the HTTP layer needs beyond the data plane."""

    plane: DataPlane
    max_body_bytes: int = 8 << 20
    draining: bool = False
    started_at: float = field(default_factory=time.time)


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj, option=_ORJSON), status_code=status, media_type=JSON, headers=headers)


def _error(status: int, message: str, fields: list[dict[str, str]] | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = fields
    return _json(body, status)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestError(
            f"the body is larger than {limit} bytes", [{"field": "body", "error": f"at most {limit} bytes"}]
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(
                f"the body is larger than {limit} bytes",
                [{"field": "body", "error": f"at most {limit} bytes"}],
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            f"the body is not valid JSON: {exc}", [{"field": "body", "error": "invalid JSON"}]
        ) from None


def _schema_body(example: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {JSON: {"schema": {"type": "object"}, "example": example}},
        }
    }


OIP_EXAMPLE = {
    "inputs": [
        {"name": "age", "shape": [1], "datatype": "FP32", "data": [42]},
        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
    ]
}


def inference_app(state: ServerState) -> FastAPI:
    """The public app: inference protocols, health, metadata, metrics, feedback."""
    plane = state.plane
    app = FastAPI(
        title="prodml inference server",
        version=__version__,
        description="Open Inference Protocol v2, KServe v1, MLflow scoring and /predict over "
        "one ONNX Runtime data plane.",
    )

    @app.exception_handler(ProdmlError)
    async def _prodml_error(_: Request, exc: ProdmlError) -> Response:
        plane.metrics.errors.labels(type(exc).__name__).inc()
        return _error(exc.http_status, exc.message, getattr(exc, "fields", None))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return _error(
            400,
            "invalid request",
            [{"field": ".".join(map(str, e["loc"])), "error": e["msg"]} for e in exc.errors()],
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        plane.metrics.errors.labels("internal").inc()
        logger.exception("unexpected error")
        return _error(500, "internal error")

    async def scored(protocol: str, request: Request, handler: Callable[[], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        plane.metrics.inflight.inc()
        code = 500
        try:
            response = await handler()
            code = response.status_code
            return response
        except ProdmlError as exc:
            code = exc.http_status
            raise
        finally:
            plane.metrics.inflight.dec()
            plane.metrics.requests.labels(protocol, str(code)).inc()
            plane.metrics.latency.labels(protocol).observe(time.perf_counter() - start)

    def request_id(request: Request) -> str:
        return request.headers.get("x-request-id") or uuid.uuid4().hex

    def headers(pred: Any) -> dict[str, str]:
        return {"x-model-name": pred.name, "x-model-version": pred.version, "x-request-id": pred.request_id}

    # --- Open Inference Protocol v2 -----------------------------------------------------------------

    @app.get("/v2", tags=["v2"])
    async def server_metadata() -> Response:
        return _json({"name": "prodml", "version": __version__, "extensions": ["binary_tensor_data"]})

    @app.get("/v2/health/live", tags=["v2"])
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready", tags=["v2"])
    async def ready() -> Response:
        ok = plane.manager.current is not None and not state.draining
        return _json({"ready": ok}, 200 if ok else 503)

    def metadata(name: str, version: str | None) -> Response:
        model = plane.model(name, version)
        inputs = [
            {"name": c["name"], "datatype": "BYTES" if c["dtype"] == "string" else "FP32", "shape": [-1, 1]}
            for c in model.package.schema["inputs"]
        ]
        outputs = [
            {
                "name": o["name"],
                "datatype": "INT64" if o["dtype"] == "int64" else "FP32",
                "shape": o.get("shape", [-1]),
            }
            for o in model.package.schema["outputs"]
        ]
        return _json(
            {
                "name": model.name,
                "versions": [model.version],
                "platform": "onnxruntime_onnx",
                "inputs": inputs,
                "outputs": outputs,
                "parameters": {"task": model.runtime.task, "classes": model.runtime.classes},
            }
        )

    @app.get("/v2/models/{name}", tags=["v2"])
    async def model_metadata(name: str) -> Response:
        return metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"])
    async def model_version_metadata(name: str, version: str) -> Response:
        return metadata(name, version)

    def model_ready(name: str, version: str | None) -> Response:
        try:
            plane.model(name, version)
        except ProdmlError as exc:
            return _json({"name": name, "ready": False}, 404 if exc.http_status == 404 else 503)
        return _json({"name": name, "ready": not state.draining}, 503 if state.draining else 200)

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    async def model_is_ready(name: str) -> Response:
        return model_ready(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"])
    async def model_version_is_ready(name: str, version: str) -> Response:
        return model_ready(name, version)

    async def oip_infer(request: Request, name: str, version: str | None) -> Response:
        async def handle() -> Response:
            raw = await _body(request, state.max_body_bytes)
            header_len = request.headers.get("inference-header-content-length")
            if header_len is not None:
                if not header_len.isdigit() or int(header_len) > len(raw):
                    raise RequestError(
                        "Inference-Header-Content-Length does not fit the body",
                        [{"field": "Inference-Header-Content-Length", "error": "out of range"}],
                    )
                body, tail = _loads(raw[: int(header_len)]), raw[int(header_len) :]
            else:
                body, tail = _loads(raw), b""
            columns, req = p.parse_oip(body, tail)
            given = req.get("id")
            rid: str = given if isinstance(given, str) else request_id(request)
            pred = await plane.infer(columns, request_id=rid, name=name, version=version)
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
                request_id=rid,
                binary=binary,
            )
            h = headers(pred)
            if binary:
                head = orjson.dumps(out, option=_ORJSON)
                h["inference-header-content-length"] = str(len(head))
                return Response(head + tail_out, media_type="application/octet-stream", headers=h)
            return _json(out, headers=h)

        return await scored("v2", request, handle)

    @app.post(
        "/v2/models/{name}/infer", tags=["v2"], openapi_extra=_schema_body(OIP_EXAMPLE, "OIP v2 request")
    )
    async def infer(name: str, request: Request) -> Response:
        return await oip_infer(request, name, None)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        tags=["v2"],
        openapi_extra=_schema_body(OIP_EXAMPLE, "OIP v2 request"),
    )
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await oip_infer(request, name, version)

    @app.post(
        "/v2/models/{name}/feedback",
        tags=["v2"],
        openapi_extra=_schema_body({"request_id": "abc", "label": 1}, "a label for a logged request"),
    )
    async def feedback(name: str, request: Request) -> Response:
        plane.model(name)
        body = _loads(await _body(request, state.max_body_bytes))
        items = body if isinstance(body, list) else [body]
        for i, item in enumerate(items):
            if not (
                isinstance(item, dict)
                and isinstance(item.get("request_id"), str)
                and isinstance(item.get("label"), int | float)
                and not isinstance(item.get("label"), bool)
            ):
                raise RequestError(
                    "feedback needs request_id (string) and label (number)",
                    [{"field": f"[{i}]", "error": "expected {request_id, label}"}],
                )
        if plane.log is None:
            raise InvalidInput("this server does not log requests, so feedback cannot be joined")
        for item in items:
            plane.log.feedback(item["request_id"], item["label"])
        return _json({"accepted": len(items)})

    # --- KServe v1 -----------------------------------------------------------------------------------

    @app.post(
        "/v1/models/{name}:predict",
        tags=["v1"],
        openapi_extra=_schema_body({"instances": [{"age": 42, "plan": "pro"}]}, "KServe v1 request"),
    )
    async def v1_predict(name: str, request: Request) -> Response:
        async def handle() -> Response:
            model = plane.model(name)
            body = _loads(await _body(request, state.max_body_bytes))
            pred = await plane.infer(
                p.columns_from_kserve_v1(body, model.validator.names),
                request_id=request_id(request),
                name=name,
            )
            preds = p.predictions(pred.outputs, pred.model.runtime.task, pred.model.runtime.classes)
            return _json({"predictions": preds, "model_version": pred.version}, headers=headers(pred))

        return await scored("v1", request, handle)

    # --- MLflow scoring protocol ---------------------------------------------------------------------

    @app.get("/ping", tags=["mlflow"])
    async def ping() -> Response:
        ok = plane.manager.current is not None and not state.draining
        return Response(b"\n", status_code=200 if ok else 503, media_type=JSON)

    @app.get("/health", tags=["mlflow"])
    async def health() -> Response:
        return await ping()

    @app.get("/version", tags=["mlflow"])
    async def version() -> Response:
        return Response(__version__.encode(), media_type="text/plain")

    @app.post(
        "/invocations",
        tags=["mlflow"],
        openapi_extra=_schema_body(
            {"dataframe_split": {"columns": ["age", "plan"], "data": [[42, "pro"]]}}, "MLflow scoring request"
        ),
    )
    async def invocations(request: Request) -> Response:
        async def handle() -> Response:
            raw = await _body(request, state.max_body_bytes)
            ctype = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
            params: dict[str, Any] = {}
            if ctype == "text/csv":
                try:
                    columns = p.columns_from_csv(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise RequestError(
                        "the CSV body is not UTF-8", [{"field": "body", "error": "not UTF-8"}]
                    ) from None
            elif ctype == JSON:
                columns, params = p.columns_from_mlflow(_loads(raw))
            else:
                raise RequestError(
                    f"unsupported content type {ctype!r}",
                    [{"field": "Content-Type", "error": "use application/json or text/csv"}],
                )
            pred = await plane.infer(columns, request_id=request_id(request))
            method = params.get("predict_method", "predict")
            style = "proba" if method == "predict_proba" else "label"
            preds = p.predictions(
                pred.outputs, pred.model.runtime.task, pred.model.runtime.classes, style=style
            )
            return _json({"predictions": preds}, headers=headers(pred))

        return await scored("mlflow", request, handle)

    # --- prodml's plain JSON -------------------------------------------------------------------------

    @app.post(
        "/predict",
        tags=["prodml"],
        openapi_extra=_schema_body({"records": [{"age": 42, "plan": "pro"}]}, "records to score"),
    )
    async def predict(request: Request) -> Response:
        async def handle() -> Response:
            body = _loads(await _body(request, state.max_body_bytes))
            records = body.get("records") if isinstance(body, dict) else body
            pred = await plane.infer(p.columns_from_records(records), request_id=request_id(request))
            preds = p.predictions(
                pred.outputs, pred.model.runtime.task, pred.model.runtime.classes, style="records"
            )
            return _json(
                {
                    "model": pred.name,
                    "version": pred.version,
                    "request_id": pred.request_id,
                    "predictions": preds,
                },
                headers=headers(pred),
            )

        return await scored("predict", request, handle)

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(plane.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def admin_app(state: ServerState, token: str | None) -> FastAPI:
    """Reload, cache flush and status on a separate port; every call needs ``Authorization: Bearer``."""
    app = FastAPI(title="prodml admin", openapi_url=None, docs_url=None, redoc_url=None)
    plane = state.plane

    def check(request: Request) -> Response | None:
        if not token:
            return _error(403, "admin endpoints are disabled: set PRODML_ADMIN_TOKEN")
        given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, token.encode()):
            return _error(401, "a valid admin token is required")
        return None

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        if (denied := check(request)) is not None:
            return denied
        try:
            version = await plane.manager.reload()
        except ProdmlError as exc:
            return _error(exc.http_status, exc.message)
        return _json({"version": version})

    @app.post("/admin/cache/flush")
    async def flush(request: Request) -> Response:
        if (denied := check(request)) is not None:
            return denied
        n = await plane.cache.clear() if plane.cache is not None else 0
        return _json({"flushed": n})

    @app.get("/admin/status")
    async def status(request: Request) -> Response:
        if (denied := check(request)) is not None:
            return denied
        model = plane.manager.current
        return _json(
            {
                "model": model.name if model else None,
                "version": model.version if model else None,
                "draining": state.draining,
                "last_registry_error": plane.manager.last_error,
                "uptime_s": time.time() - state.started_at,
            }
        )

    return app
