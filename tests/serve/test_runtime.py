"""The runtime: the front-loaded graph gives the package graph's outputs; the wide session gives the same."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from prodml.export.onnx import onnx_inputs, to_onnx
from prodml.export.package import ModelPackage
from prodml.export.schema import infer_schema
from prodml.serve.runtime import Runtime, front_loaded
from prodml.serve.validation import NUMBERS, STRINGS
from prodml.train.pipeline import build_pipeline
from tests.export.test_onnx import TARGETS, X, project


def _session(graph: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("estimator", "task"),
    [
        ("logistic_regression", "binary"),
        ("hist_gradient_boosting", "multiclass"),
        ("random_forest", "regression"),
        ("lightgbm", "binary"),
    ],
)
def test_front_loaded_graph_gives_the_package_graph_outputs(estimator: str, task: str) -> None:
    frame = X[["plan", "gap", "age", "fee", "visits"]]  # schema order differs from the graph's
    pipe = build_pipeline(project(estimator, task), list(frame.columns), ["plan"]).fit(frame, TARGETS[task])
    graph = to_onnx(pipe, frame.head(50)).SerializeToString()
    schema = infer_schema(frame, ["plan"], task=task, classes=None, target="y")
    front = front_loaded(graph, schema)
    numeric = [c["name"] for c in schema["inputs"] if c["dtype"] != "string"]
    matrices = {
        NUMBERS: frame[numeric].to_numpy(np.float32),
        STRINGS: frame[["plan"]].to_numpy(object),
    }
    expected = _session(graph).run(None, onnx_inputs(frame))
    got = _session(front).run(None, matrices)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    # columns are read straight from the matrices: no Concat of raw input columns is left
    columns = {c["name"] for c in schema["inputs"]}
    for node in onnx.load_from_string(front).graph.node:
        if node.op_type == "Concat":
            assert not set(node.input) <= columns, node


def test_a_lone_request_on_the_wide_session_gets_the_same_answer() -> None:
    frame = X[["plan", "gap", "age", "fee", "visits"]]
    pipe = build_pipeline(project("hist_gradient_boosting", "binary"), list(frame.columns), ["plan"])
    pipe.set_params(model__max_iter=100)  # enough trees for ONNX Runtime to split them across threads
    pipe.fit(frame, TARGETS["binary"])
    graph = to_onnx(pipe, frame.head(50)).SerializeToString()
    schema = infer_schema(frame, ["plan"], task="binary", classes=[0, 1], target="y")
    runtime = Runtime(ModelPackage(Path(), graph, schema, {}, {}, {}, ""), lone_threads=2)
    assert runtime.wide is not None
    numeric = [c["name"] for c in schema["inputs"] if c["dtype"] != "string"]
    feeds = {NUMBERS: frame[numeric].to_numpy(np.float32), STRINGS: frame[["plan"]].to_numpy(object)}
    narrow, wide = runtime.run(feeds), runtime.run(feeds, lone=True)
    np.testing.assert_array_equal(wide[0], narrow[0])
    # per-thread partial sums of the trees round differently in float32's last bits, no more
    np.testing.assert_allclose(wide[1], narrow[1], rtol=0, atol=1e-6)
    assert runtime.wide.get_session_options().intra_op_num_threads == 2
    used: list[int] = []
    wide_session = runtime.wide

    class Spy:  # records which session ran
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            used.append(len(next(iter(feeds.values()))))
            return list(wide_session.run(names, feeds))

    runtime.wide = Spy()
    runtime.run(feeds)
    assert used == []
    np.testing.assert_array_equal(runtime.run(feeds, lone=True)[0], wide[0])
    assert used == [len(frame)]
    assert Runtime(ModelPackage(Path(), graph, schema, {}, {}, {}, ""), lone_threads=1).wide is None
