"""REST and gRPC agree: the same OIP requests, good and each bad class, get the same outcome on both.

Each case is a list of input tensors (name, datatype, shape, values) sent as REST JSON (or the binary
extension when ``raw``) and as a gRPC ``ModelInfer`` (typed contents, or ``raw_input_contents``). Both
answers must match: the same probabilities, or 400 ↔ INVALID_ARGUMENT, 404 ↔ NOT_FOUND.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb  # OIP v2's messages as a standard client ships them
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.serve.conftest import Served
from tests.servers import ServeProcess

pytestmark = pytest.mark.integration

_NP = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "BOOL": "?"}
_TYPED = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}
_SAME = {200: "OK", 400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}


@dataclass
class Input:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any]


@dataclass
class Case:
    id: str
    inputs: Callable[[dict[str, Any]], list[Input]]  # one row of the served data → the tensors
    expect: int  # the REST status (gRPC: its code in _SAME)
    raw: bool = False
    model: str = "churn"
    version: str = ""


def typed(row: dict[str, Any], number: str = "FP32") -> list[Input]:
    return [Input(k, "BYTES" if isinstance(v, str) else number, [1], [v]) for k, v in row.items()]


def change(row: dict[str, Any], name: str, **what: Any) -> list[Input]:
    return [Input(**{**t.__dict__, **what}) if t.name == name else t for t in typed(row)]


def numeric(row: dict[str, Any]) -> str:
    return next(k for k, v in row.items() if not isinstance(v, str))


CASES = [
    Case("good", typed, 200),
    Case(
        "good, shape [N, 1]", lambda r: [Input(t.name, t.datatype, [1, 1], t.values) for t in typed(r)], 200
    ),
    Case("good, FP64", lambda r: typed(r, "FP64"), 200),
    Case("good, raw", typed, 200, raw=True),
    Case(
        "good, raw FP16",
        lambda r: [
            Input(
                t.name,
                t.datatype,
                t.shape,
                [float(round(t.values[0]))] if t.datatype != "BYTES" else t.values,
            )
            for t in typed(r, "FP16")
        ],
        200,
        raw=True,
    ),
    Case(
        "shape [1, 3] is no column",
        lambda r: change(r, numeric(r), shape=[1, 3], values=[1.0, 2.0, 3.0]),
        400,
    ),
    Case("shape and values disagree", lambda r: change(r, numeric(r), shape=[2]), 400),
    Case("BOOL for a number", lambda r: change(r, numeric(r), datatype="BOOL", values=[True]), 400),
    Case(
        "BOOL for a number, raw",
        lambda r: change(r, numeric(r), datatype="BOOL", values=[True]),
        400,
        raw=True,
    ),
    Case("text for a number", lambda r: change(r, numeric(r), datatype="BYTES", values=["1.5"]), 400),
    Case("a missing column", lambda r: typed(r)[1:], 400),
    Case("an unknown column (ignored)", lambda r: [*typed(r), Input("extra", "FP32", [1], [1.0])], 200),
    Case("a column twice", lambda r: [*typed(r), typed(r)[0]], 400),
    Case("an unsupported datatype", lambda r: change(r, numeric(r), datatype="FP8"), 400),
    Case("an unknown category", lambda r: change(r, "plan", values=["platinum"]), 400),
    Case("raw bytes too short", lambda r: change(r, numeric(r), shape=[2]), 400, raw=True),
    Case("another model", typed, 404, model="other"),
    Case("another version", typed, 404, version="9"),
]


def _raw(t: Input) -> bytes:
    if t.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in t.values)
    return np.array(t.values, dtype=_NP.get(t.datatype, "<f4")).tobytes()


def rest(client: httpx.Client, case: Case, tensors: list[Input]) -> tuple[int, Any]:
    path = f"/v2/models/{case.model}" + (f"/versions/{case.version}" if case.version else "") + "/infer"
    if case.raw:
        chunks = [_raw(t) for t in tensors]
        head = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": t.name,
                        "datatype": t.datatype,
                        "shape": t.shape,
                        "parameters": {"binary_data_size": len(c)},
                    }
                    for t, c in zip(tensors, chunks, strict=True)
                ]
            }
        )
        r = client.post(
            path, content=head + b"".join(chunks), headers={"inference-header-content-length": str(len(head))}
        )
    else:
        r = client.post(path, json={"inputs": [t.__dict__ | {"data": t.values} for t in tensors]})
    if r.status_code != 200:
        return r.status_code, None
    out = {o["name"]: o for o in r.json()["outputs"]}["probabilities"]
    return 200, np.array(out["data"], np.float32)


def grpc_call(stub: Any, case: Case, tensors: list[Input]) -> tuple[str, Any]:
    request = pb.ModelInferRequest(model_name=case.model, model_version=case.version)
    for t in tensors:
        tensor = request.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        if case.raw:
            request.raw_input_contents.append(_raw(t))
        elif t.datatype in _TYPED:
            values = [v.encode() for v in t.values] if t.datatype == "BYTES" else t.values
            getattr(tensor.contents, _TYPED[t.datatype]).extend(values)
    try:
        response = stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code().name, None
    names = [o.name for o in response.outputs]
    return "OK", np.frombuffer(response.raw_output_contents[names.index("probabilities")], "<f4")


@pytest.fixture(scope="module")
def server(served: Served) -> Iterator[ServeProcess]:
    with ServeProcess(served.root, served.env) as proc:
        proc.wait_ready()
        yield proc


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rest_and_grpc_give_the_same_outcome(server: ServeProcess, served: Served, case: Case) -> None:
    row = {k: (0.0 if v is None else v) for k, v in served.rows[0].items()}
    tensors = case.inputs(row)
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
    ):
        status, rest_out = rest(client, case, tensors)
        code, grpc_out = grpc_call(pb_grpc.GRPCInferenceServiceStub(channel), case, tensors)
    assert (status, code) == (case.expect, _SAME[case.expect])
    if status == 200:
        np.testing.assert_array_equal(rest_out, grpc_out)
