"""Torch → ONNX: dynamic axes, parity with torch eager, composed column graphs, tensor schema entries."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from prodml.core.errors import InvalidInput
from prodml.dl.modules import build_module
from prodml.dl.params import parse_params
from prodml.export.onnx import ExportError, onnx_inputs, to_onnx
from prodml.export.torch import (
    check_tensors,
    check_torch_parity,
    compose,
    export_module,
    tensor_input,
    tensor_schema,
    to_torchscript,
)


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def _session(model: object) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]


def test_cnn_image_tensor_with_a_dynamic_batch() -> None:
    torch.manual_seed(0)
    module = build_module("torch_cnn", parse_params("torch_cnn", {}), inputs=64, outputs=10).eval()
    model = export_module(module, {"image": torch.rand(2, 1, 8, 8)}, task="multiclass")
    session = _session(model)
    [image] = session.get_inputs()
    assert (image.name, image.type, image.shape) == ("image", "tensor(float)", ["N", 1, 8, 8])
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
    rng = np.random.default_rng(0)
    for rows in (1, 64):
        batch = rng.random((rows, 1, 8, 8), dtype=np.float32)
        parity = check_torch_parity(module, model, {"image": batch}, task="multiclass")
        assert parity["rows"] == rows
        assert parity["max_abs_diff"] < 1e-5
        label, proba = session.run(None, {"image": batch})
        assert label.dtype == np.int64
        assert label.shape == (rows,)
        assert proba.shape == (rows, 10)
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(Exception, match="image"):  # ONNX Runtime itself refuses a wrong shape
        session.run(None, {"image": rng.random((2, 64), dtype=np.float32)})


@pytest.mark.parametrize("kind", ["torch_gru", "torch_lstm", "torch_transformer"])
def test_sequences_with_dynamic_steps_and_lengths(kind: str) -> None:
    torch.manual_seed(0)
    params = parse_params(kind, {"d_model": 16, "heads": 2, "max_len": 12})
    module = build_module(kind, params, inputs=3, outputs=2).eval()
    example = {"events": torch.rand(2, 12, 3), "lengths": torch.tensor([12, 5])}
    model = export_module(module, example, task="binary", dynamic={"events": {1: "steps"}})
    rng = np.random.default_rng(1)
    for rows, steps in ((1, 4), (32, 12)):
        events = rng.random((rows, steps, 3), dtype=np.float32)
        lengths = rng.integers(1, steps + 1, size=rows).astype(np.int64)
        parity = check_torch_parity(module, model, {"events": events, "lengths": lengths}, task="binary")
        assert parity["max_abs_diff"] < 1e-5
    # Steps past a row's length do not change its score.
    events = rng.random((1, 8, 3), dtype=np.float32)
    noisy = events.copy()
    noisy[0, 5:] = 9.0
    session = _session(model)
    a = session.run(None, {"events": events, "lengths": np.array([5])})[1]
    b = session.run(None, {"events": noisy, "lengths": np.array([5])})[1]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_columns_in_front_of_the_network_make_one_tabular_graph() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(3, 2, size=(200, 4)).astype(np.float32), columns=["a", "b/c", "d", "e"])
    scaler = Pipeline([("scale", StandardScaler())]).fit(frame)
    torch.manual_seed(0)
    module = build_module("torch_mlp", parse_params("torch_mlp", {}), inputs=4, outputs=2).eval()
    network = export_module(module, {"x": torch.rand(2, 4)}, task="binary")
    model = compose(to_onnx(scaler, frame.head(10)), network)
    session = _session(model)
    assert [i.name for i in session.get_inputs()] == list(frame.columns)  # one [N, 1] input per column
    assert all(i.shape[1] == 1 for i in session.get_inputs())
    label, proba = session.run(None, onnx_inputs(frame))
    with torch.no_grad():
        expected = module(torch.from_numpy(scaler.transform(frame).astype(np.float32))).softmax(-1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    np.testing.assert_array_equal(label, expected.argmax(1))


def test_regression_outputs_one_column() -> None:
    module = build_module("torch_mlp", parse_params("torch_mlp", {}), inputs=5, outputs=1).eval()
    model = export_module(module, {"x": torch.rand(2, 5)}, task="regression")
    x = np.random.default_rng(0).random((7, 5), dtype=np.float32)
    assert check_torch_parity(module, model, {"x": x}, task="regression")["rows"] == 7
    assert _session(model).run(None, {"x": x})[0].shape == (7, 1)


class _DataDependent(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # a branch on a value: torch.export cannot trace it
            return x
        return -x


def test_a_module_that_cannot_export_gets_a_clear_error() -> None:
    with pytest.raises(ExportError, match="cannot export the torch model to ONNX") as caught:
        export_module(_DataDependent(), {"x": torch.rand(2, 3)}, task="regression")
    assert "forward()" in (caught.value.hint or "")


def test_tensor_schema_entries() -> None:
    image = tensor_input("image", "float32", [7, 1, 8, 8])
    assert image == {"name": "image", "kind": "tensor", "dtype": "float", "shape": [-1, 1, 8, 8]}
    schema = tensor_schema([image], task="multiclass", classes=list(range(10)), target="digit")
    assert schema["outputs"][1] == {"name": "probabilities", "dtype": "float", "shape": [-1, 10]}
    assert schema["classes"] == list(range(10))
    with pytest.raises(ExportError, match="dtype float64"):
        tensor_input("x", "float64", [1, 2])


def test_torchscript_for_users_who_want_it() -> None:
    module = build_module("torch_mlp", parse_params("torch_mlp", {}), inputs=4, outputs=3).eval()
    blob = to_torchscript(module, {"x": torch.rand(2, 4)}, task="multiclass")
    with pytest.warns(DeprecationWarning, match="torch.jit.load"):  # TorchScript is deprecated upstream
        loaded = torch.jit.load(io.BytesIO(blob))
    x = torch.rand(5, 4)
    label, proba = loaded(x)
    torch.testing.assert_close(proba, module(x).softmax(-1))
    torch.testing.assert_close(label, proba.argmax(-1))


IMAGE = tensor_input("image", "float32", [7, 1, 8, 8])
SEQUENCE = [
    tensor_input("events", "float32", [7, 12, 3], dynamic=(1,)),
    tensor_input("lengths", "int64", [7], minimum=1, maximum=12),
]


def test_tensors_that_fit_become_feeds() -> None:
    feeds, rows = check_tensors([IMAGE], {"image": np.zeros((3, 1, 8, 8)).tolist()})
    assert rows == 3
    assert feeds["image"].dtype == np.float32
    assert feeds["image"].shape == (3, 1, 8, 8)
    feeds, rows = check_tensors(SEQUENCE, {"events": np.zeros((2, 5, 3)), "lengths": [5.0, 1]})
    assert rows == 2
    assert feeds["lengths"].dtype == np.int64
    assert SEQUENCE[0]["shape"] == [-1, -1, 3]


@pytest.mark.parametrize(
    ("feeds", "field", "says"),
    [
        ({"image": np.zeros((2, 64))}, "image", "shape [2, 64] does not fit; expected float [-1, 1, 8, 8]"),
        ({"image": np.zeros((2, 1, 8, 9))}, "image", "[-1, 1, 8, 8]"),
        ({}, "image", "required input is missing"),
        ({"image": [["a"]]}, "image", "values are not float"),
        ({"image": np.full((1, 1, 8, 8), np.nan)}, "image", "finite"),
        ({"image": np.zeros((1, 1, 8, 8)), "extra": [1]}, "extra", "unknown input"),
    ],
)
def test_a_wrongly_shaped_tensor_is_refused_naming_input_and_shape(
    feeds: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_tensors([IMAGE], feeds)
    assert caught.value.http_status == 400
    assert any(f["field"] == field and says in f["error"] for f in caught.value.fields), caught.value.fields


def test_sequence_lengths_and_batch_sizes_are_checked() -> None:
    with pytest.raises(InvalidInput, match=r"lengths: values must lie in \[1, 12\]"):
        check_tensors(SEQUENCE, {"events": np.zeros((2, 5, 3)), "lengths": [0, 3]})
    with pytest.raises(InvalidInput, match="lengths: values are not int64"):
        check_tensors(SEQUENCE, {"events": np.zeros((1, 5, 3)), "lengths": [2.5]})
    with pytest.raises(InvalidInput, match="disagree on the batch size"):
        check_tensors(SEQUENCE, {"events": np.zeros((2, 5, 3)), "lengths": [3]})
