"""What a server does with real-world inputs: extra columns, values beyond the training ranges, several
problems in one request — over REST (every protocol) and gRPC, with the project's defaults and with
``serve.out_of_range: reject`` / ``serve.extra_columns: reject``."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb  # one OIP proto registration per process
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.serve.conftest import Served
from tests.servers import ServeProcess

pytestmark = pytest.mark.integration


def _row(served: Served) -> dict[str, Any]:
    return dict(served.rows[0])


def _oip(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
        for k, v in row.items()
    ]


def _grpc(port: int, row: dict[str, Any]) -> Any:
    request = pb.ModelInferRequest(model_name="churn")
    for name, value in row.items():
        tensor = request.inputs.add(
            name=name, shape=[1], datatype="BYTES" if isinstance(value, str) else "FP64"
        )
        if isinstance(value, str):
            tensor.contents.bytes_contents.append(value.encode())
        else:
            tensor.contents.fp64_contents.append(float("nan") if value is None else float(value))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)


def _counter(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_defaults_ignore_extra_columns_and_flag_values_beyond_the_training_range(served: Served) -> None:
    row = _row(served)
    far = {**row, "age": 1e6}  # far beyond any age in training
    with (
        ServeProcess(served.root, served.env, "--no-log-requests") as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        server.wait_ready()
        # the raw record, with columns the model does not take, is scored as without them (MLflow does so)
        plain = client.post("/predict", json=[row]).json()["predictions"]
        assert (
            client.post("/predict", json=[{**row, "customer_id": "c-17", "note": [1]}]).json()["predictions"]
            == plain
        )
        assert "x-prodml-out-of-range" not in client.post("/predict", json=[row]).headers
        before = _counter(client.get("/metrics").text, "prodml_out_of_range_values_total")

        # beyond the range: scored, flagged on every protocol, counted per input
        for path, body in (
            ("/predict", [far, far]),
            ("/invocations", {"dataframe_records": [far, far]}),
            ("/v1/models/churn:predict", {"instances": [far, far]}),
        ):
            answer = client.post(path, json=body)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-prodml-out-of-range"] == "age=2"
        oip = client.post("/v2/models/churn/infer", json={"inputs": _oip(far)})
        assert oip.status_code == 200 and oip.json()["parameters"]["out_of_range"] == "age=1"
        assert oip.headers["x-prodml-out-of-range"] == "age=1"
        over_grpc = _grpc(server.grpc_port, far)
        assert over_grpc.parameters["out_of_range"].string_param == "age=1"
        assert "out_of_range" not in _grpc(server.grpc_port, row).parameters
        metrics = client.get("/metrics").text
        assert _counter(metrics, "prodml_out_of_range_values_total") - before == 8
        assert 'prodml_out_of_range_values_total{input="age"}' in metrics

        # several problems: all reported, in `fields` and in the one `error` string OIP clients print
        broken = {k: v for k, v in row.items() if k != "age"} | {"plan": "platinum", "monthly_fee": "long"}
        refused = client.post("/v2/models/churn/infer", json={"inputs": _oip(broken)})
        assert refused.status_code == 400
        fields = {f["field"] for f in refused.json()["fields"]}
        assert {"age", "plan", "monthly_fee"} <= fields
        error = refused.json()["error"]
        assert "age: required column is missing" in error and "unknown category 'platinum'" in error, error
        with pytest.raises(grpc.RpcError) as info:
            _grpc(server.grpc_port, broken)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "age: required column is missing" in info.value.details()
        assert "unknown category 'platinum'" in info.value.details()


def test_reject_settings_refuse_extra_columns_and_values_beyond_the_range(served: Served) -> None:
    row = _row(served)
    env = {**served.env, "PRODML_SERVE__OUT_OF_RANGE": "reject", "PRODML_SERVE__EXTRA_COLUMNS": "reject"}
    with ServeProcess(served.root, env, "--no-log-requests") as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.post("/predict", json=[row]).status_code == 200
            answer = client.post("/predict", json=[{**row, "age": 1e6, "customer_id": "c-17"}])
            assert answer.status_code == 400
            fields = {f["field"]: f["error"] for f in answer.json()["fields"]}
            assert fields["customer_id"] == "unknown column; the model does not take it"
            assert fields["age"].startswith("1 value(s) outside the training range [")
            oip = client.post("/v2/models/churn/infer", json={"inputs": _oip({**row, "age": 1e6})})
            assert (
                oip.status_code == 400 and "age: 1 value(s) outside the training range" in oip.json()["error"]
            )
        with pytest.raises(grpc.RpcError) as info:
            _grpc(server.grpc_port, {**row, "age": 1e6})
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "outside the training range" in info.value.details()
