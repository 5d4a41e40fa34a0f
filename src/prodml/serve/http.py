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
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from prodml import __version__
from prodml.core.errors import ProdmlError
from prodml.serve.handlers import (
    JSON,
    FastPath,
    Handlers,
    Reply,
    ServerState,
    error_reply,
    json_reply,
    read_body,
    too_large_reply,
)
from prodml.serve.protocols import tensor_metadata

__all__ = ["ServerState", "admin_app", "inference_app"]

logger = logging.getLogger("prodml.serve.access")
# FastAPI's built-in OpenTelemetry hooks look up providers on every request; prodml exports Prometheus.
NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}


def _response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers)


def _json(obj: Any, status: int = 200) -> Response:
    return _response(json_reply(obj, status))


def _error(status: int, message: str, fields: list[dict[str, str]] | None = None) -> Response:
    return _response(error_reply(status, message, fields))


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


def inference_app(state: ServerState) -> Any:
    """The public ASGI app: the inference routes on the lean path, the rest (health, metadata, metrics,
    OpenAPI) on FastAPI."""
    plane = state.plane
    handlers = Handlers(state)
    app = FastAPI(
        title="prodml inference server",
        version=__version__,
        description="Open Inference Protocol v2, KServe v1, MLflow scoring and /predict over one "
        "ONNX Runtime data plane.",
        telemetry=NO_TELEMETRY,
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
        fields = [{"field": ".".join(map(str, e["loc"])), "error": e["msg"]} for e in exc.errors()]
        return _error(400, "invalid request", fields)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        plane.metrics.errors.labels("internal").inc()
        logger.exception("unexpected error")
        return _error(500, "internal error")

    def headers(request: Request) -> dict[str, str]:
        return {k.lower(): v for k, v in request.headers.items()}

    async def via(request: Request, call: Callable[[bytes], Awaitable[Reply]]) -> Response:
        """The documented POST routes, when reached here rather than on the FastPath."""
        raw = await read_body(request.receive, state.max_body_bytes)
        return _response(too_large_reply(state.max_body_bytes) if raw is None else await call(raw))

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
        inputs, outputs = tensor_metadata(model.package.schema)
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

    oip = _schema_body(OIP_EXAMPLE, "OIP v2 request (JSON, or the binary tensor data extension)")

    @app.post("/v2/models/{name}/infer", tags=["v2"], openapi_extra=oip)
    async def infer(name: str, request: Request) -> Response:
        return await via(request, lambda raw: handlers.v2_infer(name, None, headers(request), raw))

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], openapi_extra=oip)
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await via(request, lambda raw: handlers.v2_infer(name, version, headers(request), raw))

    @app.post(
        "/v2/models/{name}/feedback",
        tags=["v2"],
        openapi_extra=_schema_body({"request_id": "abc", "label": 1}, "a label for a logged request"),
    )
    async def feedback(name: str, request: Request) -> Response:
        return await via(request, lambda raw: handlers.feedback(name, raw))

    # --- KServe v1 -----------------------------------------------------------------------------------

    @app.post(
        "/v1/models/{name}:predict",
        tags=["v1"],
        openapi_extra=_schema_body({"instances": [{"age": 42, "plan": "pro"}]}, "KServe v1 request"),
    )
    async def v1_predict(name: str, request: Request) -> Response:
        return await via(request, lambda raw: handlers.v1_predict(name, headers(request), raw))

    @app.post(
        "/v1/models/{name}:explain",
        tags=["v1"],
        openapi_extra=_schema_body({"instances": [{"age": 42, "plan": "pro"}]}, "rows to explain (≤ 10)"),
    )
    async def v1_explain(name: str, request: Request) -> Response:
        return await via(request, lambda raw: handlers.v1_explain(name, headers(request), raw))

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
        return await via(request, lambda raw: handlers.invocations(headers(request), raw))

    # --- prodml's plain JSON -------------------------------------------------------------------------

    @app.post(
        "/predict",
        tags=["prodml"],
        openapi_extra=_schema_body({"records": [{"age": 42, "plan": "pro"}]}, "records to score"),
    )
    async def predict(request: Request) -> Response:
        return await via(request, lambda raw: handlers.predict(headers(request), raw))

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(plane.metrics.render(), media_type="text/plain; version=0.0.4")

    return FastPath(handlers, app)


def admin_app(state: ServerState, token: str | None) -> FastAPI:
    """Reload, cache flush and status on a separate port; every call needs ``Authorization: Bearer``."""
    app = FastAPI(
        title="prodml admin", openapi_url=None, docs_url=None, redoc_url=None, telemetry=NO_TELEMETRY
    )
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
                "last_registry_check": plane.manager.last_check,
                "uptime_s": time.time() - state.started_at,
            }
        )

    return app
