"""gRPC transport: ``inference.GRPCInferenceService`` (Open Inference Protocol v2) and the standard
``grpc.health.v1`` service, over the same :class:`DataPlane` as REST.

Inputs may come as typed ``contents`` or as ``raw_input_contents``; outputs are returned raw (as Triton
does), which both Triton's and KServe's clients read. Errors map once, from the prodml error's
``grpc_code``; a bad request is INVALID_ARGUMENT with the field errors in the message.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from prodml import __version__
from prodml.core.errors import ProdmlError
from prodml.serve.dataplane import DataPlane
from prodml.serve.proto import inference_pb2 as pb
from prodml.serve.proto import inference_pb2_grpc as pb_grpc
from prodml.serve.protocols import decode_binary, oip_tensor, tensor_metadata
from prodml.serve.validation import RequestError

__all__ = ["GrpcServer"]

logger = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _columns(request: Any) -> dict[str, Any]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(
            "raw_input_contents must hold one entry per input",
            [{"field": "raw_input_contents", "error": f"{len(raw)} for {len(request.inputs)} inputs"}],
        )
    columns: dict[str, Any] = {}
    for i, tensor in enumerate(request.inputs):
        where = f"inputs[{i}] ({tensor.name})"
        datatype = tensor.datatype
        if datatype not in _CONTENTS:
            raise RequestError(
                f"{where}: unsupported datatype {datatype!r}",
                [{"field": where, "error": "unsupported datatype"}],
            )
        count = int(np.prod(list(tensor.shape))) if tensor.shape else 0
        if raw:
            values: Any = decode_binary(raw[i], datatype, count, where)  # the REST binary extension's rules
        else:
            contents = getattr(tensor.contents, _CONTENTS[datatype])
            values = (
                [b.decode("utf-8", errors="replace") for b in contents]
                if datatype == "BYTES"
                else np.asarray(contents, dtype=np.float64)
            )
        if len(values) != count:
            raise RequestError(
                f"{where}: shape {list(tensor.shape)} needs {count} values, got {len(values)}",
                [{"field": where, "error": "shape and data disagree"}],
            )
        columns[tensor.name] = values
    return columns


class _Servicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, plane: DataPlane, draining: Any) -> None:
        self.plane = plane
        self.draining = draining
        self.active = 0  # ModelInfer calls in progress (the batcher's view of gRPC concurrency)

    async def _abort(self, context: Any, exc: ProdmlError) -> None:
        message = exc.message
        fields = getattr(exc, "fields", None)
        if fields:
            message += ": " + "; ".join(f"{f['field']}: {f['error']}" for f in fields)
        await context.abort(getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL), message)

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.plane.manager.current is not None and not self.draining())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self.plane.model(request.name, request.version or None)
        except ProdmlError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not self.draining())

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(name="prodml", version=__version__, extensions=[])

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            model = self.plane.model(request.name, request.version or None)
        except ProdmlError as exc:
            await self._abort(context, exc)
            raise  # unreachable: abort raises
        tm = pb.ModelMetadataResponse.TensorMetadata
        inputs, outputs = ([tm(**t) for t in tensors] for tensors in tensor_metadata(model.package.schema))
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[model.version],
            platform="onnxruntime_onnx",
            inputs=inputs,
            outputs=outputs,
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        metrics = self.plane.metrics
        start = time.perf_counter()
        metrics.inflight += 1
        self.active += 1
        try:
            pred = await self.plane.infer(
                _columns(request),
                request_id=request.id or None,
                name=request.model_name,
                version=request.model_version or None,
            )
        except ProdmlError as exc:
            metrics.errors.labels(type(exc).__name__).inc()
            metrics.done("grpc", exc.grpc_code, time.perf_counter() - start)
            await self._abort(context, exc)
            raise
        except Exception:
            metrics.errors.labels("internal").inc()
            metrics.done("grpc", "INTERNAL", time.perf_counter() - start)
            raise
        finally:
            metrics.inflight -= 1
            self.active -= 1
        metrics.done("grpc", "OK", time.perf_counter() - start)
        response = pb.ModelInferResponse(model_name=pred.name, model_version=pred.version, id=pred.request_id)
        for name, output in zip(pred.model.runtime.output_names, pred.outputs, strict=True):
            datatype, arr = oip_tensor(output)
            response.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
            response.raw_output_contents.append(arr.tobytes())
        return response


class GrpcServer:
    """The gRPC server of one process; started and stopped with the HTTP servers."""

    def __init__(
        self, plane: DataPlane, *, host: str, port: int, max_message_bytes: int, draining: Any
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1),
        ]
        self.server = grpc.aio.server(options=options)
        self.servicer = _Servicer(plane, draining)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self.server.add_insecure_port(address)
        self.plane = plane

    async def start(self) -> None:
        await self.server.start()
        await self.set_serving(self.plane.manager.current is not None)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE):
            await self.health.set(service, status)

    async def stop(self, grace_s: float) -> None:
        await self.set_serving(False)
        await self.server.stop(grace_s)
