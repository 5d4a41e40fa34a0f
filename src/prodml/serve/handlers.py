"""The REST endpoints as one route table each: inference (OIP v2, KServe v1, MLflow scoring, ``/predict``,
health, metadata, metrics) and admin. Every endpoint only translates its wire format to columns and the
data plane's answer back; the data plane does the rest.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from prodml import __version__
from prodml.core.errors import ConfigError, ProdmlError
from prodml.serve import protocols as p
from prodml.serve.dataplane import DataPlane, Prediction
from prodml.serve.http import JSON, Call, Reply, Route, bearer, json_reply
from prodml.serve.ranges import flag_text
from prodml.serve.routing import HEADERS
from prodml.serve.tensors import single_input
from prodml.serve.validation import bad_field, short

if TYPE_CHECKING:
    from prodml.registry.deployment import Deployment

__all__ = ["admin_routes", "inference_routes"]

logger = logging.getLogger("prodml.serve.admin")
ROWS = [{"age": 42, "plan": "pro"}]
OIP_EXAMPLE = {
    "inputs": [
        {"name": "age", "shape": [1], "datatype": "FP32", "data": [42]},
        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
    ]
}


def _headers(pred: Prediction) -> dict[str, str]:
    headers = {
        "x-model-name": pred.name,
        "x-model-version": pred.version,
        "x-request-id": pred.request_id,
        "x-prodml-variant": pred.variant,
    }
    if pred.out_of_range:  # flagged values (prodml.serve.ranges)
        headers["x-prodml-out-of-range"] = flag_text(pred.out_of_range)
    return headers


def inference_routes(plane: DataPlane) -> list[Route]:
    """The public routes of one server."""

    def scored(protocol: str, work: Callable[[Call], Awaitable[Reply]]) -> Callable[[Call], Awaitable[Reply]]:
        async def endpoint(call: Call) -> Reply:
            HEADERS.set(call.headers)  # a header stickiness key (routing)
            return await plane.serve(protocol, lambda: work(call), call.headers.get("x-request-id"))

        return endpoint

    async def v2_infer(call: Call) -> Reply:
        raw, header_len = call.body, call.headers.get("inference-header-content-length")
        if header_len is not None:
            if not (header_len.isascii() and header_len.isdigit() and int(header_len) <= len(raw)):
                raise bad_field("Inference-Header-Content-Length", "out of range of the body")
            tensors, req = p.oip_request(Call({}, {}, raw[: int(header_len)]).json(), raw[int(header_len) :])
        else:
            tensors, req = p.oip_request(call.json())
        given = req.get("id")
        rid = given if isinstance(given, str) else call.headers.get("x-request-id")
        shaped = plane.model(call.params["name"], call.params.get("version")).validator.tensors is not None
        pred = await plane.infer(
            p.oip_columns(tensors, shaped=shaped),
            request_id=rid,
            name=call.params["name"],
            version=call.params.get("version"),
        )
        binary = p.wants_binary(req)
        out, tail = p.encode_oip(
            pred.outputs,
            pred.model.runtime.output_names,
            model=pred.name,
            version=pred.version,
            request_id=pred.request_id,
            binary=binary,
            labels=pred.model.labels,
        )
        out["parameters"] = {"variant": pred.variant}
        if pred.out_of_range:
            out["parameters"]["out_of_range"] = flag_text(pred.out_of_range)
        if not binary:
            return json_reply(out, headers=_headers(pred))
        head = orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = {**_headers(pred), "inference-header-content-length": str(len(head))}
        return Reply(200, head + tail, headers, "application/octet-stream")

    async def v1_predict(call: Call) -> Reply:
        validator, body = plane.model(call.params["name"]).validator, call.json()
        style = "proba" if p.kserve_v1_proba(body) else "label"  # labels, as KServe's predict gives
        columns = single_input(validator.tensors, body) or p.columns_from_kserve_v1(body, validator.names)
        pred = await plane.infer(
            columns, request_id=call.headers.get("x-request-id"), name=call.params["name"]
        )
        runtime = pred.model.runtime
        preds = p.predictions(pred.outputs, runtime.task, runtime.classes, style=style)
        reply = {"predictions": preds, "model_version": pred.version, "variant": pred.variant}
        return json_reply(reply, headers=_headers(pred))

    async def v1_explain(call: Call) -> Reply:
        names = plane.model(call.params["name"]).validator.names
        model, explanations = await plane.explain(
            p.columns_from_kserve_v1(call.json(), names), name=call.params["name"]
        )
        return json_reply(
            {
                "explanations": explanations,
                "model_version": model.version,
                "method": "permutation-sampled Shapley values vs the training baseline",
            },
            headers={"x-model-name": model.name, "x-model-version": model.version},
        )

    async def invocations(call: Call) -> Reply:
        ctype = call.headers.get("content-type", JSON).split(";")[0].strip().lower()
        params: dict[str, Any] = {}
        if ctype == "text/csv":
            try:
                text = call.body.decode("utf-8")
            except UnicodeDecodeError:
                raise bad_field("body", "the CSV body is not UTF-8") from None
            columns = p.columns_from_csv(text, plane.model().validator.max_rows)
        elif ctype == JSON:
            columns, params = p.columns_from_mlflow(call.json())
        else:
            raise bad_field("Content-Type", f"unsupported {short(ctype)!r}: use application/json or text/csv")
        pred = await plane.infer(columns, request_id=call.headers.get("x-request-id"))
        style = "proba" if params.get("predict_method") == "predict_proba" else "label"
        preds = p.predictions(pred.outputs, pred.model.runtime.task, pred.model.runtime.classes, style=style)
        return json_reply({"predictions": preds}, headers=_headers(pred))

    async def predict(call: Call) -> Reply:
        body = call.json()
        records = body.get("records") if isinstance(body, dict) else body
        pred = await plane.infer(p.columns_from_records(records), request_id=call.headers.get("x-request-id"))
        preds = p.predictions(
            pred.outputs, pred.model.runtime.task, pred.model.runtime.classes, style="records"
        )
        return json_reply(
            {
                "model": pred.name,
                "version": pred.version,
                "variant": pred.variant,
                "request_id": pred.request_id,
                "predictions": preds,
            },
            headers=_headers(pred),
        )

    async def feedback(call: Call) -> Reply:
        return json_reply({"accepted": plane.feedback(call.params["name"], call.json())})

    async def server_metadata(_: Call) -> Reply:
        return json_reply({"name": "prodml", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(_: Call) -> Reply:
        return json_reply({"live": True})

    async def ready(_: Call) -> Reply:
        ok = plane.ready()
        return json_reply({"ready": ok}, 200 if ok else 503)

    async def model_metadata(call: Call) -> Reply:
        model = plane.model(call.params["name"], call.params.get("version"))
        inputs, outputs = p.tensor_metadata(model.package.schema)
        return json_reply(
            {
                "name": model.name,
                "versions": [model.version],
                "platform": "onnxruntime_onnx",
                "inputs": inputs,
                "outputs": outputs,
                "parameters": {"task": model.runtime.task, "classes": model.runtime.classes},
            }
        )

    async def model_ready(call: Call) -> Reply:
        name = call.params["name"]
        try:
            ok = plane.model_ready(name, call.params.get("version"))
        except ProdmlError:
            return json_reply({"name": name, "ready": False}, 404)
        return json_reply({"name": name, "ready": ok}, 200 if ok else 503)

    async def ping(_: Call) -> Reply:
        return Reply(200 if plane.ready() else 503, b"\n")

    async def version(_: Call) -> Reply:
        return Reply(200, __version__.encode(), media_type="text/plain")

    async def metrics(_: Call) -> Reply:
        return Reply(200, plane.metrics.render(), media_type="text/plain; version=0.0.4")

    def post(tag: str, protocol: str, path: str, work: Any, summary: str, example: dict[str, Any]) -> Route:
        return Route("POST", path, scored(protocol, work), tag, summary, example, guarded=True)

    split = {"dataframe_split": {"columns": ["age", "plan"], "data": [[42, "pro"]]}}
    label = {"request_id": "abc", "label": 1}
    return [
        Route("GET", "/v2", server_metadata, "v2", "server metadata"),
        Route("GET", "/v2/health/live", live, "v2", "liveness"),
        Route("GET", "/v2/health/ready", ready, "v2", "readiness"),
        Route("GET", "/v2/models/{name}", model_metadata, "v2", "model metadata"),
        Route("GET", "/v2/models/{name}/versions/{version}", model_metadata, "v2", "version metadata"),
        Route("GET", "/v2/models/{name}/ready", model_ready, "v2", "model readiness"),
        Route("GET", "/v2/models/{name}/versions/{version}/ready", model_ready, "v2", "version readiness"),
        post("v2", "v2", "/v2/models/{name}/infer", v2_infer, "OIP v2 inference", OIP_EXAMPLE),
        post(
            "v2",
            "v2",
            "/v2/models/{name}/versions/{version}/infer",
            v2_infer,
            "OIP v2 inference",
            OIP_EXAMPLE,
        ),
        post("v2", "feedback", "/v2/models/{name}/feedback", feedback, "a label for a logged request", label),
        post("v1", "v1", "/v1/models/{name}:predict", v1_predict, "KServe v1", {"instances": ROWS}),
        post(
            "v1", "v1-explain", "/v1/models/{name}:explain", v1_explain, "Shapley values", {"instances": ROWS}
        ),
        Route("GET", "/ping", ping, "mlflow", "readiness"),
        Route("GET", "/health", ping, "mlflow", "readiness"),
        Route("GET", "/version", version, "mlflow", "server version"),
        post("mlflow", "mlflow", "/invocations", invocations, "MLflow scoring (JSON or CSV)", split),
        post("prodml", "predict", "/predict", predict, "records to score", {"records": ROWS}),
        Route("GET", "/metrics", metrics, "ops", "Prometheus metrics"),
    ]


def _write_spec(plane: DataPlane, body: Any) -> Deployment:
    """``POST /admin/deployment``: store a new deployment spec in the registry, as ``prodml rollout set``
    does. The body is the spec (``variants``, ``stickiness``) with ``why``, ``who`` and ``revision`` (the
    revision it was based on; a change made meanwhile refuses it)."""
    from prodml.registry.deployment import DeploymentStore, parse_spec
    from prodml.registry.mlflow import Registry

    manager = plane.manager
    if manager.ref is None or manager.tracking_uri is None:
        raise ConfigError("this server serves a local package: it has no deployment to change")
    if not isinstance(body, dict) or not isinstance(body.get("why"), str) or not body["why"].strip():
        raise ConfigError(
            "the body must be a deployment spec object with a 'why'",
            hint='e.g. {"variants": [...], "why": "A/B of version 3", "revision": 7}',
        )
    fields = {k: v for k, v in body.items() if k not in ("why", "who", "revision")}
    spec = parse_spec(orjson.dumps(fields).decode(), where="the request body")
    store = DeploymentStore(manager._registry or Registry(manager.tracking_uri), manager._name())
    return store.write(
        spec,
        action="set",
        why=body["why"],
        expect_revision=body.get("revision"),
        by=f"{body.get('who') or 'unknown'} (admin port)",
    )


def admin_routes(plane: DataPlane, token: str, started_at: float) -> list[Route]:
    """Deployment change, reload, cache flush and status; every call needs ``Authorization: Bearer
    <token>``. A refused call is logged and answered only after a pause that doubles with each failure in
    a row (up to 2 s)."""
    failures = [0]

    def guarded(work: Callable[[Call], Awaitable[Reply]]) -> Callable[[Call], Awaitable[Reply]]:
        async def endpoint(call: Call) -> Reply:
            given = bearer(call.headers.get("authorization"))
            if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                failures[0] += 1
                logger.warning(
                    "admin call refused: %s", "no bearer token" if given is None else "wrong token"
                )
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures[0], 6)))
                return json_reply(
                    {"error": "a valid admin token is required"}, 401, {"www-authenticate": "Bearer"}
                )
            failures[0] = 0
            return await work(call)

        return endpoint

    async def reload(_: Call) -> Reply:
        return json_reply({"version": await plane.manager.reload()})

    async def flush(_: Call) -> Reply:
        return json_reply({"flushed": await plane.cache.clear() if plane.cache is not None else 0})

    async def status(_: Call) -> Reply:
        model = plane.manager.current
        return json_reply(
            {
                "model": model.name if model else None,
                "version": model.version if model else None,
                "draining": plane.draining,
                "last_registry_error": plane.manager.last_error,
                "deployment": plane.router.describe(),
                "last_registry_check": plane.manager.last_check,
                "uptime_s": time.time() - started_at,
            }
        )

    async def deploy(call: Call) -> Reply:
        spec = await asyncio.to_thread(_write_spec, plane, call.json())
        return json_reply({"revision": spec.revision, "version": await plane.manager.reload()})

    return [
        Route("POST", "/admin/deployment", guarded(deploy)),
        Route("POST", "/admin/reload", guarded(reload)),
        Route("POST", "/admin/cache/flush", guarded(flush)),
        Route("GET", "/admin/status", guarded(status)),
    ]
