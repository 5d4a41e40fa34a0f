"""The real server process over HTTP: every endpoint and payload form, bad input, admin, metrics."""

from __future__ import annotations

import csv
import io
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serve.conftest import Served
from tests.servers import ServeProcess


@pytest.fixture(scope="module")
def server(served: Served) -> Iterator[ServeProcess]:
    with ServeProcess(served.root, served.env) as proc:
        proc.wait_ready()
        yield proc


@pytest.fixture(scope="module")
def client(server: ServeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def records(served: Served, n: int = 3) -> list[dict[str, Any]]:
    return [dict(r) for r in served.rows[:n]]


def oip_inputs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": k,
            "shape": [len(rows), 1],
            "datatype": "BYTES" if isinstance(rows[0][k], str) else "FP32",
            "data": [r[k] for r in rows],
        }
        for k in rows[0]
    ]


def test_health_metadata_and_openapi(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    meta = client.get("/v2/models/churn").json()
    assert meta["name"] == "churn"
    assert meta["versions"] == ["1"]
    assert {"name": "plan", "datatype": "BYTES", "shape": [-1, 1]} in meta["inputs"]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert client.get("/v2/models/churn/versions/1").status_code == 200
    assert client.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}
    assert client.get("/v2/models/churn/versions/9/ready").status_code == 404
    assert client.get("/v2/models/other").status_code == 404
    assert client.get("/ping").status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/version").text
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/invocations",
        "/v1/models/{name}:predict",
        "/predict",
        "/v2/health/ready",
        "/v2/models/{name}/feedback",
    ):
        assert path in paths


def test_every_protocol_gives_the_same_probabilities(client: httpx.Client, served: Served) -> None:
    rows = records(served)
    cols = list(rows[0])
    predict = client.post("/predict", json={"records": rows})
    assert predict.status_code == 200
    assert predict.headers["x-model-version"] == "1"
    expected = [p["probability"] for p in predict.json()["predictions"]]
    assert all(0 <= p <= 1 for p in expected)

    v2 = client.post("/v2/models/churn/infer", json={"id": "req-7", "inputs": oip_inputs(rows)}).json()
    assert (v2["model_name"], v2["model_version"], v2["id"]) == ("churn", "1", "req-7")
    probs = np.asarray(v2["outputs"][1]["data"]).reshape(v2["outputs"][1]["shape"])
    np.testing.assert_allclose(probs[:, 1], expected, rtol=1e-6)
    assert (
        client.post("/v2/models/churn/versions/1/infer", json={"inputs": oip_inputs(rows)}).status_code == 200
    )

    # KServe v1: labels, as KServe's predict gives; probabilities when the request asks for them
    v1 = client.post("/v1/models/churn:predict", json={"instances": rows}).json()
    assert v1["predictions"] == [int(p >= 0.5) for p in expected]
    proba = {"instances": rows, "parameters": {"predict_proba": True}}
    v1_proba = client.post("/v1/models/churn:predict", json=proba).json()
    np.testing.assert_allclose([p[1] for p in v1_proba["predictions"]], expected, rtol=1e-6)
    ordered = client.post(
        "/v1/models/churn:predict", json={"instances": [[r[c] for c in cols] for r in rows]}
    )
    assert ordered.json()["predictions"] == v1["predictions"]
    bad = client.post("/v1/models/churn:predict", json={**proba, "parameters": {"predict_proba": "yes"}})
    assert bad.status_code == 400 and "parameters.predict_proba" in bad.text
    # OIP's label is the class too (the churn model's classes are integers: INT64)
    assert v2["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [3], "data": v1["predictions"]}

    for body in (
        {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in rows]}},
        {"dataframe_records": rows},
        {"instances": rows},
        {"inputs": {c: [r[c] for r in rows] for c in cols}},
    ):
        out = client.post("/invocations", json={**body, "params": {"predict_method": "predict_proba"}})
        assert out.status_code == 200, out.text
        np.testing.assert_allclose([p[1] for p in out.json()["predictions"]], expected, rtol=1e-6)
    labels = client.post("/invocations", json={"dataframe_records": rows}).json()["predictions"]
    assert labels == [int(p >= 0.5) for p in expected]

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows(rows)
    csv_out = client.post("/invocations", content=buf.getvalue(), headers={"content-type": "text/csv"})
    assert csv_out.status_code == 200, csv_out.text
    assert csv_out.json()["predictions"] == labels


def test_binary_tensor_extension(client: httpx.Client, served: Served) -> None:
    rows = records(served, 4)
    header: dict[str, Any] = {"inputs": [], "parameters": {"binary_data_output": True}}
    tail = b""
    for name in rows[0]:
        values = [r[name] for r in rows]
        if isinstance(values[0], str):
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
            dtype = "BYTES"
        else:
            raw = np.asarray([np.nan if v is None else v for v in values], dtype="<f4").tobytes()
            dtype = "FP32"
        header["inputs"].append(
            {"name": name, "shape": [4, 1], "datatype": dtype, "parameters": {"binary_data_size": len(raw)}}
        )
        tail += raw
    import json

    head = json.dumps(header).encode()
    response = client.post(
        "/v2/models/churn/infer",
        content=head + tail,
        headers={
            "inference-header-content-length": str(len(head)),
            "content-type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    n = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:n])
    label_size = meta["outputs"][0]["parameters"]["binary_data_size"]
    probs = np.frombuffer(response.content[n + label_size :], dtype="<f4").reshape(4, 2)
    expected = [p["probability"] for p in client.post("/predict", json=rows).json()["predictions"]]
    np.testing.assert_allclose(probs[:, 1], expected, rtol=1e-6)


BAD = [
    (
        "missing column",
        lambda r: {k: v for k, v in r.items() if k != "age"},
        "age",
        "required column is missing",
    ),
    ("wrong type", lambda r: {**r, "age": "forty"}, "age", "expected numbers"),
    ("boolean for a number", lambda r: {**r, "age": True}, "age", "expected numbers"),
    ("null where not allowed", lambda r: {**r, "plan": None}, "plan", "not nullable"),
    ("unknown category", lambda r: {**r, "plan": "platinum"}, "plan", "unknown category 'platinum'"),
    ("number for a string", lambda r: {**r, "plan": 3}, "plan", "expected strings"),
]


@pytest.mark.parametrize(("case", "mutate", "field", "error"), BAD, ids=[b[0] for b in BAD])
def test_bad_rows_get_field_errors_then_good_requests_succeed(
    client: httpx.Client, served: Served, case: str, mutate: Any, field: str, error: str
) -> None:
    row = mutate(dict(served.rows[0]))
    response = client.post("/predict", json=[row])
    assert response.status_code == 400, response.text
    body = response.json()
    assert any(f["field"] == field and error in f["error"] for f in body["fields"]), body
    assert "Traceback" not in response.text
    assert client.post("/predict", json=records(served, 1)).status_code == 200


def test_non_finite_and_malformed_bodies(client: httpx.Client, served: Served) -> None:
    rows = records(served, 1)
    inputs = oip_inputs(rows)
    age = next(i for i in inputs if i["name"] == "age")
    age["data"] = [float("inf")]
    import json

    raw = json.dumps({"inputs": inputs}, allow_nan=True).encode()  # Infinity is not JSON: 400
    assert client.post("/v2/models/churn/infer", content=raw).status_code == 400
    for body, expect in [
        (b"{oops", 400),
        (b"[]", 400),
        (b'{"inputs": "x"}', 400),
        (b'{"inputs": [1]}', 400),
        (b'{"inputs": [{"name": "age", "shape": [2], "datatype": "FP32", "data": [1]}]}', 400),
        (b'{"inputs": [{"name": "age", "shape": [1], "datatype": "COMPLEX", "data": [1]}]}', 400),
    ]:
        response = client.post("/v2/models/churn/infer", content=body)
        assert response.status_code == expect, (body, response.text)
        assert "error" in response.json()
    assert client.post("/invocations", json={"dataframe_split": {"columns": ["a"]}}).status_code == 400
    assert (
        client.post("/invocations", content=b"a,b", headers={"content-type": "text/xml"}).status_code == 400
    )
    assert client.post("/v1/models/churn:predict", json={"instances": []}).status_code == 400
    assert client.post("/predict", json=records(served, 1)).status_code == 200


def test_size_limits(client: httpx.Client, served: Served) -> None:
    cols = list(served.rows[0])
    row = [served.rows[0][c] for c in cols]
    response = client.post(
        "/invocations", json={"dataframe_split": {"columns": cols, "data": [row] * 10_001}}
    )
    assert response.status_code == 400
    assert "at most 10000 rows" in response.text
    huge = b'{"records": [' + b" " * (9 << 20) + b"]}"
    assert client.post("/predict", content=huge).status_code == 400
    assert client.post("/predict", json=records(served, 1)).status_code == 200


def test_feedback_and_request_ids(client: httpx.Client, served: Served) -> None:
    out = client.post("/predict", json=records(served, 2), headers={"x-request-id": "abc-1"})
    assert out.headers["x-request-id"] == "abc-1"
    assert out.json()["request_id"] == "abc-1"
    assert client.post("/v2/models/churn/feedback", json={"request_id": "abc-1", "label": 1}).json() == {
        "accepted": 1
    }
    assert client.post("/v2/models/churn/feedback", json={"label": 1}).status_code == 400


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_count_requests_and_cache(client: httpx.Client, served: Served) -> None:
    before = _samples(client.get("/metrics").text)
    for _ in range(3):
        assert client.post("/predict", json=records(served, 1)).status_code == 200
    after = _samples(client.get("/metrics").text)

    def rise(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert rise('prodml_requests_total{code="200",protocol="predict"}') == 3
    assert rise('prodml_request_seconds_count{protocol="predict"}') == 3
    assert rise('prodml_cache_total{result="hit"}') >= 2  # the same row three times: the last two hit
    assert after['prodml_model_info{model="churn",version="1"}'] == 1.0


def test_admin_needs_the_token_on_its_own_port(server: ServeProcess, client: httpx.Client) -> None:
    assert client.post("/admin/reload").status_code == 404  # not on the public port
    assert httpx.post(f"{server.admin_url}/admin/reload").status_code == 401
    assert (
        httpx.post(f"{server.admin_url}/admin/reload", headers={"authorization": "Bearer nope"}).status_code
        == 401
    )
    ok = httpx.post(
        f"{server.admin_url}/admin/reload",
        headers={"authorization": "Bearer test-token-0123456789"},
        timeout=30,
    )
    assert ok.json() == {"version": "1"}
    flushed = httpx.post(
        f"{server.admin_url}/admin/cache/flush", headers={"authorization": "Bearer test-token-0123456789"}
    )
    assert flushed.json()["flushed"] >= 1
    status = httpx.get(
        f"{server.admin_url}/admin/status", headers={"authorization": "Bearer test-token-0123456789"}
    ).json()
    assert status["version"] == "1"


def _triton_inputs(module: Any, rows: list[dict[str, Any]]) -> list[Any]:
    inputs = []
    for name in rows[0]:
        values = [r[name] for r in rows]
        if isinstance(values[0], str):
            arr = np.array([[v] for v in values], dtype=object)
            tensor = module.InferInput(name, [len(rows), 1], "BYTES")
        else:
            arr = np.array([[np.nan if v is None else v] for v in values], dtype=np.float32)
            tensor = module.InferInput(name, [len(rows), 1], "FP32")
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    return inputs


def test_tritons_client_over_rest_and_grpc(
    server: ServeProcess, client: httpx.Client, served: Served
) -> None:
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    rows = records(served, 5)
    expected = [p["probability"] for p in client.post("/predict", json=rows).json()["predictions"]]
    rest = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert rest.is_server_live()
    assert rest.is_model_ready("churn")
    out = rest.infer("churn", _triton_inputs(thttp, rows))
    np.testing.assert_allclose(out.as_numpy("probabilities")[:, 1], expected, rtol=1e-6)
    binary = rest.infer(
        "churn",
        _triton_inputs(thttp, rows),
        outputs=[thttp.InferRequestedOutput("probabilities", binary_data=True)],
    )
    np.testing.assert_allclose(binary.as_numpy("probabilities")[:, 1], expected, rtol=1e-6)

    grpc_client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("churn")
    assert not grpc_client.is_model_ready("churn", "7")
    meta = grpc_client.get_model_metadata("churn")
    assert meta.versions == ["1"]
    assert [o.name for o in meta.outputs] == ["label", "probabilities"]
    result = grpc_client.infer("churn", _triton_inputs(tgrpc, rows), request_id="g-1")
    np.testing.assert_allclose(result.as_numpy("probabilities")[:, 1], expected, rtol=1e-6)
    assert result.get_response().model_version == "1"
    assert result.get_response().id == "g-1"


def test_grpc_errors_and_health(server: ServeProcess, served: Served) -> None:
    import grpc
    import tritonclient.grpc as tgrpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tritonclient.utils import InferenceServerException

    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    rows = records(served, 1)
    with pytest.raises(InferenceServerException, match=r"INVALID_ARGUMENT.*age: required column is missing"):
        client.infer("churn", [i for i in _triton_inputs(tgrpc, rows) if i.name() != "age"])
    rows[0]["plan"] = "platinum"
    with pytest.raises(InferenceServerException, match=r"INVALID_ARGUMENT.*unknown category"):
        client.infer("churn", _triton_inputs(tgrpc, rows))
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        client.infer("other", _triton_inputs(tgrpc, records(served, 1)))
    assert client.infer("churn", _triton_inputs(tgrpc, records(served, 1))).as_numpy("label").shape == (1,)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            status = stub.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_kserve_v1_explain_adds_up_to_the_prediction(client: httpx.Client, served: Served) -> None:
    rows = records(served, 2)
    out = client.post("/v1/models/churn:explain", json={"instances": rows})
    assert out.status_code == 200, out.text
    body = out.json()
    expected = [p["probability"] for p in client.post("/predict", json=rows).json()["predictions"]]
    for explanation, prediction in zip(body["explanations"], expected, strict=True):
        values = explanation["shap_values"]
        assert set(values) == set(rows[0])
        assert explanation["prediction"] == pytest.approx(prediction, abs=1e-5)
        assert sum(values.values()) == pytest.approx(
            explanation["prediction"] - explanation["base_value"], abs=1e-4
        )
    assert client.post("/v1/models/churn:explain", json={"instances": [rows[0]] * 11}).status_code == 400


def test_grpc_message_size_is_capped(server: ServeProcess) -> None:
    import tritonclient.grpc as tgrpc
    from tritonclient.utils import InferenceServerException

    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    big = tgrpc.InferInput("plan", [1, 1], "BYTES")
    big.set_data_from_numpy(np.array([["x" * (9 << 20)]], dtype=object))
    with pytest.raises(InferenceServerException, match="RESOURCE_EXHAUSTED"):
        client.infer("churn", [big])
    assert client.is_server_ready()
