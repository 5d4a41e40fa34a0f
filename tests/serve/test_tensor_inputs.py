"""Tensor-input packages served end to end: a GRU package from examples/dl/churn_sequences.py (events
``[N, T, 8]`` float with a dynamic T, lengths ``[N]`` int64) in a real ``prodml serve`` process, over
OIP REST (JSON and binary) and gRPC with Triton's clients, the JSON protocols, and refused requests."""

from __future__ import annotations

import asyncio
import runpy
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from prodml.core.errors import ConfigError, InvalidInput
from prodml.data.examples import write_example
from prodml.export.package import ModelPackage, load_package
from prodml.serve.protocols import Tensor, oip_columns
from prodml.serve.runtime import MicroBatcher
from prodml.serve.tensors import tensor_entries
from prodml.serve.validation import NUMBERS, STRINGS, Validator
from tests.servers import ServeProcess

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dl" / "churn_sequences.py"
NAME = "churn_sequences"
ENV = {"PRODML_ADMIN_TOKEN": "test-token-0123456789"}


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("tensor") / NAME
        main = runpy.run_path(str(EXAMPLE))["main"]
        main(["--customers", "150", "--days", "120", "--epochs", "1", "--max-len", "16", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def package(package_dir: Path) -> ModelPackage:
    return load_package(package_dir, None)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tensor-project")
    write_example(root, "churn", customers=50, days=120, seed=1)
    return root


@pytest.fixture(scope="module")
def server(project: Path, package_dir: Path) -> Iterator[ServeProcess]:
    with ServeProcess(project, ENV, "--package", str(package_dir)) as proc:
        proc.wait_ready()
        yield proc


@pytest.fixture
def client(server: ServeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def sequences(rows: int, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    events = rng.random((rows, steps, 8), dtype=np.float32)
    lengths = rng.integers(1, steps + 1, size=rows).astype(np.int64)
    return events, lengths


def expected(package: ModelPackage, events: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The package's graph in ONNX Runtime in this process: what the server must answer."""
    return np.asarray(package.session().run(None, {"events": events, "lengths": lengths})[1])


def infer_body(events: np.ndarray, lengths: np.ndarray, *, nested: bool = True) -> dict[str, Any]:
    data = events.tolist() if nested else events.ravel().tolist()
    return {
        "inputs": [
            {"name": "events", "shape": list(events.shape), "datatype": "FP32", "data": data},
            {"name": "lengths", "shape": list(lengths.shape), "datatype": "INT64", "data": lengths.tolist()},
        ]
    }


def probabilities(body: dict[str, Any]) -> np.ndarray:
    [out] = [o for o in body["outputs"] if o["name"] == "probabilities"]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def triton_inputs(module: Any, events: np.ndarray, lengths: np.ndarray) -> list[Any]:
    a = module.InferInput("events", list(events.shape), "FP32")
    a.set_data_from_numpy(events)
    b = module.InferInput("lengths", list(lengths.shape), "INT64")
    b.set_data_from_numpy(lengths)
    return [a, b]


# --- over the wire -----------------------------------------------------------------------------------


def test_metadata_reports_the_declared_shapes_and_datatypes(
    server: ServeProcess, client: httpx.Client
) -> None:
    import tritonclient.grpc as tgrpc

    meta = client.get(f"/v2/models/{NAME}").json()
    assert meta["inputs"] == [
        {"name": "events", "datatype": "FP32", "shape": [-1, -1, 8]},
        {"name": "lengths", "datatype": "INT64", "shape": [-1]},
    ]
    grpc_meta = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}").get_model_metadata(NAME)
    assert [(i.name, i.datatype, list(i.shape)) for i in grpc_meta.inputs] == [
        ("events", "FP32", [-1, -1, 8]),
        ("lengths", "INT64", [-1]),
    ]


def test_oip_rest_json_nested_flat_and_binary_answer_as_onnx_runtime(
    server: ServeProcess, client: httpx.Client, package: ModelPackage
) -> None:
    import tritonclient.http as thttp

    events, lengths = sequences(4, 7)
    want = expected(package, events, lengths)
    for nested in (True, False):
        out = client.post(f"/v2/models/{NAME}/infer", json=infer_body(events, lengths, nested=nested))
        assert out.status_code == 200, out.text
        np.testing.assert_allclose(probabilities(out.json()), want, rtol=1e-5, atol=1e-6)
    rest = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")  # binary tensor data both ways
    result = rest.infer(
        NAME,
        triton_inputs(thttp, events, lengths),
        outputs=[thttp.InferRequestedOutput("probabilities", binary_data=True)],
    )
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-5, atol=1e-6)


def test_oip_grpc_with_tritons_client(server: ServeProcess, package: ModelPackage) -> None:
    import tritonclient.grpc as tgrpc

    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    for rows, steps in ((1, 1), (5, 16)):
        events, lengths = sequences(rows, steps, seed=rows)
        result = client.infer(NAME, triton_inputs(tgrpc, events, lengths), request_id=f"t-{rows}")
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), expected(package, events, lengths), rtol=1e-5, atol=1e-6
        )
        assert result.as_numpy("label").shape == (rows,)


def test_the_json_protocols_carry_tensors_as_nested_lists(
    client: httpx.Client, package: ModelPackage
) -> None:
    events, lengths = sequences(2, 3, seed=3)
    want = expected(package, events, lengths)
    records = [{"events": e.tolist(), "lengths": int(n)} for e, n in zip(events, lengths, strict=True)]
    proba = {"predict_proba": True}  # KServe v1 answers labels unless asked for probabilities
    v1 = client.post(f"/v1/models/{NAME}:predict", json={"instances": records, "parameters": proba})
    assert v1.status_code == 200, v1.text
    np.testing.assert_allclose(v1.json()["predictions"], want, rtol=1e-5, atol=1e-6)
    mlflow = client.post(
        "/invocations",
        json={
            "inputs": {"events": events.tolist(), "lengths": lengths.tolist()},
            "params": {"predict_method": "predict_proba"},
        },
    )
    assert mlflow.status_code == 200, mlflow.text
    np.testing.assert_allclose(mlflow.json()["predictions"], want, rtol=1e-5, atol=1e-6)
    predict = client.post("/predict", json=records)
    assert predict.status_code == 200, predict.text
    got = [p["probability"] for p in predict.json()["predictions"]]
    np.testing.assert_allclose(got, want[:, 1], rtol=1e-5, atol=1e-6)
    csv = client.post(
        "/invocations", content=b"events,lengths\n0.5,1\n", headers={"content-type": "text/csv"}
    )
    assert csv.status_code == 400
    assert csv.json()["fields"][0]["field"] == "events"
    assert "expected float [-1, -1, 8]" in csv.json()["fields"][0]["error"]
    explain = client.post(f"/v1/models/{NAME}:explain", json={"instances": records})
    assert explain.status_code == 400
    assert "takes tensors" in explain.text


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (
            {"events": ([1, 5, 4], "FP32")},
            "events",
            "shape [1, 5, 4] does not fit; expected float [-1, -1, 8]",
        ),
        ({"events": ([1, 17, 8], "FP32")}, "events", "too large; at most [-1, 16, 8]"),
        ({"lengths": ([1], "FP32", [2.5])}, "lengths", "values are not int64"),
        ({"lengths": ([1], "INT64", [9])}, "lengths", "at most 5, the size of events's axis 1"),
        ({"lengths": ([2], "INT64", [1, 1])}, "events, lengths", "disagree on the batch size"),
        ({"events": ([1, 5, 8], "BYTES")}, "inputs[0] (events).datatype", "takes numbers (FP32, INT64)"),
        ({"events": ([1, 5, 8], "BOOL")}, "events", "values are not float (booleans)"),
        ({"lengths": None}, "lengths", "required input is missing"),
    ],
)
def test_a_bad_tensor_is_refused_naming_input_and_expected_shape_over_rest_and_grpc(
    server: ServeProcess, client: httpx.Client, change: dict[str, Any], field: str, says: str
) -> None:
    import tritonclient.grpc as tgrpc
    from tritonclient.utils import InferenceServerException

    given: dict[str, tuple[list[int], str, list[Any]]] = {
        "events": ([1, 5, 8], "FP32", []),
        "lengths": ([1], "INT64", [5]),
    }
    for name, spec in change.items():
        if spec is None:
            del given[name]
        else:
            shape, datatype, *data = spec
            given[name] = (shape, datatype, data[0] if data else [])
    inputs = []
    for name, (shape, datatype, data) in given.items():
        values = data or np.zeros(int(np.prod(shape))).tolist()
        if datatype == "BYTES":
            values = ["x"] * len(values)
        elif datatype == "BOOL":
            values = [False] * len(values)
        inputs.append({"name": name, "shape": shape, "datatype": datatype, "data": values})
    out = client.post(f"/v2/models/{NAME}/infer", json={"inputs": inputs})
    assert out.status_code == 400, out.text
    assert any(f["field"] == field and says in f["error"] for f in out.json()["fields"]), out.json()

    triton = []
    for t in inputs:
        tensor = tgrpc.InferInput(t["name"], t["shape"], t["datatype"])
        dtype = {"FP32": np.float32, "INT64": np.int64, "BYTES": object, "BOOL": bool}[t["datatype"]]
        tensor.set_data_from_numpy(np.array(t["data"], dtype=dtype).reshape(t["shape"]))
        triton.append(tensor)
    grpc_client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    if field != "lengths" or "int64" not in says:  # Triton's client itself refuses 2.5 as INT64
        with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT") as caught:
            grpc_client.infer(NAME, triton)
        assert field in str(caught.value)
        assert says in str(caught.value)


def test_concurrent_sequences_of_other_lengths_each_get_their_own_answer(
    client: httpx.Client, package: ModelPackage
) -> None:
    cases = [sequences(2, 3 + i % 4, seed=i) for i in range(24)]

    def post(i: int) -> np.ndarray:
        events, lengths = cases[i]
        out = client.post(f"/v2/models/{NAME}/infer", json=infer_body(events, lengths))
        assert out.status_code == 200, out.text
        return probabilities(out.json())

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(len(cases))))
    for (events, lengths), got in zip(cases, answers, strict=True):
        np.testing.assert_allclose(got, expected(package, events, lengths), rtol=1e-5, atol=1e-6)


def test_the_request_log_keeps_predictions_and_no_tensor_inputs(
    project: Path, package_dir: Path, package: ModelPackage
) -> None:
    events, lengths = sequences(3, 4, seed=9)
    with ServeProcess(project, ENV, "--package", str(package_dir)) as proc:
        proc.wait_ready()
        out = httpx.post(
            f"{proc.url}/v2/models/{NAME}/infer", json={**infer_body(events, lengths), "id": "logged-1"}
        )
        assert out.status_code == 200, out.text
        assert proc.stop() == 0, proc.output()
        output = proc.output()
    parts = sorted((project / ".prodml" / "requests").rglob("*.parquet"))
    rows = [r for p in parts for r in pq.read_table(p).to_pylist() if r.get("request_id") == "logged-1"]
    assert [r["row"] for r in rows] == [0, 1, 2]
    assert not {"events", "lengths"} & set(rows[0])
    assert "Traceback" not in output


# --- in process ------------------------------------------------------------------------------------


def test_the_batcher_merges_requests_along_axis_0_only_when_the_other_axes_agree() -> None:
    calls: list[list[tuple[int, ...]]] = []
    gate = threading.Event()

    def run(feeds: dict[str, np.ndarray], *, lone: bool = False) -> list[np.ndarray]:
        calls.append([feeds[n].shape for n in sorted(feeds)])
        gate.wait(10)  # the first call holds the runtime thread until every request is queued
        x = feeds["x"]
        return [x.reshape(len(x), -1).sum(1, keepdims=True)]

    async def main() -> list[list[np.ndarray]]:
        batcher = MicroBatcher(run, max_rows=64)
        shapes = [(1, 3), (2, 3), (1, 3), (1, 5), (2, 3)]
        feeds = [{"x": np.full((rows, steps), i, np.float32)} for i, (rows, steps) in enumerate(shapes)]
        tasks = [asyncio.ensure_future(batcher.submit(feeds[0], 1, alone=False))]
        while not calls:  # the runtime thread runs the first request and waits at the gate
            await asyncio.sleep(0.01)
        tasks += [asyncio.ensure_future(batcher.submit(f, len(f["x"]), alone=False)) for f in feeds[1:]]
        await asyncio.sleep(0.05)  # every other request queued behind it
        gate.set()
        try:
            return await asyncio.gather(*tasks)
        finally:
            await batcher.close()

    answers = asyncio.run(main())
    assert calls == [[(1, 3)], [(3, 3)], [(1, 5)], [(2, 3)]]  # 2 and 3 merged; 4 (5 steps) ran alone
    sums = [a[0].ravel().tolist() for a in answers]
    assert sums == [[0.0], [3.0, 3.0], [6.0], [15.0], [12.0, 12.0]]


def test_oip_decoding_keeps_any_rank_for_tensor_models_only() -> None:
    nested = Tensor("x", "FP32", [2, 2, 2], [[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
    flat = Tensor("x", "FP32", [2, 2, 2], list(range(1, 9)))
    for tensor in (nested, flat):
        assert oip_columns([tensor], shaped=True)["x"].tolist() == [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    with pytest.raises(InvalidInput, match="one column"):
        oip_columns([flat])
    with pytest.raises(InvalidInput, match="depth 2 must each hold 2 items"):
        oip_columns([Tensor("x", "FP32", [2, 2, 2], [[[1, 2], [3, 4, 5]], [[5, 6], [7]]])], shaped=True)
    with pytest.raises(InvalidInput, match=r"needs 8 values, got 7"):
        oip_columns([Tensor("x", "FP32", [2, 2, 2], list(range(7)))], shaped=True)


def test_a_package_mixing_columns_and_tensors_is_refused_at_load() -> None:
    schema = {
        "inputs": [
            {"name": "age", "dtype": "float"},
            {"name": "image", "kind": "tensor", "dtype": "float", "shape": [-1, 4]},
        ]
    }
    with pytest.raises(ConfigError, match="mixes tensor inputs with columns"):
        tensor_entries(schema)
    tensors = {"inputs": schema["inputs"][1:]}
    validator = Validator(tensors, max_rows=2)
    assert validator.layout == ((), ())
    with pytest.raises(InvalidInput, match="3 rows exceed the limit of 2"):
        validator.feeds({"image": np.zeros((3, 4))})
    with pytest.raises(InvalidInput, match="no rows"):
        validator.feeds({"image": np.zeros((0, 4))})


# --- a CNN over images: fixed dimensions after the batch ---------------------------------------------


@pytest.fixture(scope="module")
def image_package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pandas as pd
    import torch

    from prodml.dl.modules import build_module
    from prodml.dl.params import parse_params
    from prodml.export.package import write_package
    from prodml.export.profile import reference_profile
    from prodml.export.torch import export_module, tensor_input, tensor_schema

    torch.manual_seed(0)  # untrained: serving is what is tested, ONNX Runtime in process is the oracle
    module = build_module("torch_cnn", parse_params("torch_cnn", {}), inputs=64, outputs=10).eval()
    graph = export_module(module, {"image": torch.rand(2, 1, 8, 8)}, task="multiclass")
    schema = tensor_schema(
        [tensor_input("image", "float32", [2, 1, 8, 8])],
        task="multiclass",
        classes=list(range(10)),
        target="digit",
    )
    out = tmp_path_factory.mktemp("image") / "digits"
    write_package(
        out,
        model=graph,
        schema=schema,
        profile=reference_profile(pd.DataFrame({"x": [0.0, 1.0]}), [], None),
        metrics={},
        lineage={},
        card="# digits\n",
    )
    return out


def test_a_cnn_over_images_over_rest_and_grpc(project: Path, image_package_dir: Path) -> None:
    import tritonclient.grpc as tgrpc
    from sklearn.datasets import load_digits

    images = (load_digits().images[:6] / 16.0).astype(np.float32).reshape(6, 1, 8, 8)
    session = load_package(image_package_dir, None).session()
    want = np.asarray(session.run(None, {"image": images})[1])
    with (
        ServeProcess(project, ENV, "--package", str(image_package_dir)) as proc,
        httpx.Client(base_url=proc.url, timeout=30) as client,
    ):
        proc.wait_ready()
        grpc_client = tgrpc.InferenceServerClient(f"127.0.0.1:{proc.grpc_port}")
        tensor = tgrpc.InferInput("image", [6, 1, 8, 8], "FP32")
        tensor.set_data_from_numpy(images)
        result = grpc_client.infer("digits", [tensor])
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-5, atol=1e-6)
        bare = {"instances": images.tolist(), "parameters": {"predict_proba": True}}  # bare rows
        v1 = client.post("/v1/models/digits:predict", json=bare)
        assert v1.status_code == 200, v1.text
        np.testing.assert_allclose(v1.json()["predictions"], want, rtol=1e-5, atol=1e-6)

        def one(i: int) -> np.ndarray:  # concurrent requests of one shape: merged along axis 0
            body = {
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1, 1, 8, 8],
                        "datatype": "FP32",
                        "data": images[i].ravel().tolist(),
                    }
                ]
            }
            out = client.post("/v2/models/digits/infer", json=body)
            assert out.status_code == 200, out.text
            return probabilities(out.json())[0]

        with ThreadPoolExecutor(6) as pool:
            np.testing.assert_allclose(np.stack(list(pool.map(one, range(6)))), want, rtol=1e-5, atol=1e-6)
        flat = {"inputs": [{"name": "image", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
        refused = client.post("/v2/models/digits/infer", json=flat)
        assert refused.status_code == 400
        [field] = refused.json()["fields"]
        assert field == {
            "field": "image",
            "error": "shape [1, 64] does not fit; expected float [-1, 1, 8, 8] (-1: any size)",
        }
        assert client.get("/v2/models/digits").json()["inputs"] == [
            {"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
        ]


def test_the_drift_sketch_follows_the_prediction_only(package: ModelPackage) -> None:
    from prodml.export.drift import LiveSketch

    validator = Validator(package.schema)
    sketch = LiveSketch(package.profile, validator.layout, window_rows=6, buffer_rows=3)
    events, lengths = sequences(3, 4, seed=2)
    feeds, _ = validator.feeds({"events": events, "lengths": lengths})
    outputs = package.session().run(None, feeds)
    for _ in range(4):  # as the server calls it: the two matrices are absent for a tensor package
        sketch.observe(feeds.get(NUMBERS), feeds.get(STRINGS), outputs[-1])
        sketch.fold()
    assert not sketch.failed
    assert sketch.windows == 2
    assert [score.feature for score in sketch.last] == ["__prediction__"]
