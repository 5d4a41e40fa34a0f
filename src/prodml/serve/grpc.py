"""gRPC transport: ``inference.GRPCInferenceService`` (Open Inference Protocol v2) and the standard
``grpc.health.v1`` service, over the same :class:`DataPlane` as REST.

Inputs may come as typed ``contents`` or as ``raw_input_contents``; outputs are returned raw (as Triton
does), which both Triton's and KServe's clients read. Errors map once, from the prodml error's
``grpc_code``; a bad request is INVALID_ARGUMENT with the field errors in the message.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from prodml import __version__
from prodml.core.errors import ProdmlError
from prodml.serve.dataplane import DataPlane
from prodml.serve.labels import tensor_bytes
from prodml.serve.proto import inference_pb2 as pb
from prodml.serve.proto import inference_pb2_grpc as pb_grpc
from prodml.serve.protocols import Tensor, oip_columns, oip_tensor, tensor_metadata
from prodml.serve.ranges import flag_text
from prodml.serve.routing import HEADERS
from prodml.serve.validation import bad_field, detailed

__all__ = ["GrpcServer"]

logger = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"

_CONTENTS = dict.fromkeys(["INT8", "INT16", "INT32"], "int_contents") | {
    "INT64": "int64_contents",
    "BOOL": "bool_contents",
}
_CONTENTS |= dict.fromkeys(["UINT8", "UINT16", "UINT32"], "uint_contents") | {"UINT64": "uint64_contents"}
_CONTENTS |= {"FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _tensors(request: Any) -> list[Tensor]:
    """The request's inputs as :class:`Tensor` values; :func:`oip_columns` checks them as it does REST's."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise bad_field("raw_input_contents", f"{len(raw)} entries for {len(request.inputs)} inputs")
    tensors = []
    for i, t in enumerate(request.inputs):
        field = _CONTENTS.get(t.datatype)
        data = list(getattr(t.contents, field)) if field and not raw else []
        if t.datatype == "BYTES":
            data = [b.decode("utf-8", errors="replace") for b in data]
        tensors.append(Tensor(t.name, t.datatype, list(t.shape), data, raw[i] if raw else None))
    return tensors


class _Servicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def _abort(self, context: Any, exc: ProdmlError) -> None:
        message = detailed(exc)
        await context.abort(getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL), message)

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.plane.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version or None))
        except ProdmlError:
            return pb.ModelReadyResponse(ready=False)

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
        async def work() -> Any:
            model = self.plane.model(request.model_name, request.model_version or None)
            pred = await self.plane.infer(
                oip_columns(_tensors(request), shaped=model.validator.tensors is not None),
                request_id=request.id or None,
                name=request.model_name,
                version=request.model_version or None,
            )
            response = pb.ModelInferResponse(
                model_name=pred.name, model_version=pred.version, id=pred.request_id
            )
            response.parameters["variant"].string_param = pred.variant
            if pred.out_of_range:  # flagged (prodml.serve.ranges)
                response.parameters["out_of_range"].string_param = flag_text(pred.out_of_range)
            names = pred.model.runtime.output_names
            for name, output in zip(names, pred.model.labels.outputs(pred.outputs, names), strict=True):
                datatype, arr = oip_tensor(output)
                response.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
                response.raw_output_contents.append(tensor_bytes(datatype, arr))
            return response

        HEADERS.set(dict(context.invocation_metadata() or ()))  # a header stickiness key (lower-case keys)
        try:
            return await self.plane.serve("grpc", work, request.id or None)
        except ProdmlError as exc:
            await self._abort(context, exc)
            raise


class GrpcServer:
    """The gRPC server of one process; started and stopped with the HTTP servers."""

    def __init__(
        self,
        plane: DataPlane,
        *,
        host: str,
        port: int,
        max_message_bytes: int,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1),
        ]
        self.server = grpc.aio.server(options=options)
        self.servicer = _Servicer(plane)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if tls is None:
            self.port = self.server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials([(tls[1].read_bytes(), tls[0].read_bytes())])
            self.port = self.server.add_secure_port(address, credentials)
        self.plane = plane

    async def start(self) -> None:
        await self.server.start()
        await self.set_serving(self.plane.ready())

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE):
            await self.health.set(service, status)

    async def stop(self, grace_s: float) -> None:
        await self.set_serving(False)
        await self.server.stop(grace_s)
