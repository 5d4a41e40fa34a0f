"""ONNX export: every estimator family, prodml's transformers, and the parity check itself."""

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from prodml.core.project import Project
from prodml.export.onnx import ExportError, check_parity, predict_onnx, to_onnx
from prodml.train.pipeline import build_pipeline

rng = np.random.default_rng(0)
N = 1500
X = pd.DataFrame(
    {
        "age": rng.integers(18, 90, N).astype(np.float32),
        "visits": rng.poisson(5, N).astype(np.float32),
        "fee": rng.normal(30, 10, N).astype(np.float32),
        "plan": rng.choice(["basic", "pro", "team"], N).astype(object),
        "gap": np.where(rng.random(N) < 0.1, np.nan, rng.exponential(3, N)).astype(np.float32),
    }
)
SCORE = (X.age > 40).astype(float) + (X.plan == "basic") + np.log1p(X.visits) / 3 + rng.normal(0, 0.4, N)
TARGETS = {
    "binary": (SCORE > 1.2).astype(int).to_numpy(),
    "multiclass": np.digitize(SCORE, [0.8, 1.6]),
    "regression": (X.fee * 2 + X.visits + rng.normal(0, 1, N)).to_numpy(),
}
TRANSFORMS = [
    {"column": "age", "op": "bucketize", "boundaries": [30, 50, 70]},
    {"column": "visits", "op": "log"},
    {"column": "fee", "op": "scale"},
]


def project(estimator: str, task: str) -> Project:
    return Project.model_validate(
        {
            "name": "t",
            "task": task,
            "sources": {"t": {"path": "x"}},
            "target": {"source": "t", "column": "y"},
            "features": {"transforms": TRANSFORMS},
            "model": {"estimator": estimator, "params": {}},
        }
    )


CASES = [
    ("logistic_regression", "binary"),
    ("logistic_regression", "multiclass"),
    ("linear_regression", "regression"),
    ("ridge", "regression"),
    ("random_forest", "binary"),
    ("random_forest", "multiclass"),
    ("random_forest", "regression"),
    ("gradient_boosting", "binary"),
    ("gradient_boosting", "regression"),
    ("hist_gradient_boosting", "binary"),
    ("hist_gradient_boosting", "multiclass"),
    ("hist_gradient_boosting", "regression"),
    ("lightgbm", "binary"),
    ("lightgbm", "multiclass"),
    ("lightgbm", "regression"),
    ("xgboost", "binary"),
    ("xgboost", "multiclass"),
    ("xgboost", "regression"),
    ("catboost", "binary"),
    ("catboost", "multiclass"),
    ("catboost", "regression"),
]


@pytest.mark.parametrize(("estimator", "task"), CASES)
def test_every_estimator_family_exports_with_parity(estimator: str, task: str) -> None:
    pipe = build_pipeline(project(estimator, task), list(X.columns), ["plan"]).fit(X, TARGETS[task])
    model = to_onnx(pipe, X)
    assert [i.name for i in model.graph.input] == list(X.columns)
    report = check_parity(pipe, model, X)
    assert report["rows"] == N
    assert report["max_abs_diff"] < 1e-3
    pred = predict_onnx(model, X.head(7))
    assert pred.shape == ((7, 2) if task == "binary" else (7, 3) if task == "multiclass" else (7,))


def test_transformers_compute_the_same_in_onnx() -> None:
    pipe = build_pipeline(project("logistic_regression", "binary"), list(X.columns), ["plan"])
    pipe.fit(X, TARGETS["binary"])
    features = pipe[:-1]
    model = to_onnx(Pipeline([("features", features.steps[0][1])]), X)
    import onnxruntime as ort

    from prodml.export.onnx import onnx_inputs

    out = ort.InferenceSession(model.SerializeToString()).run(None, onnx_inputs(X))[0]
    np.testing.assert_allclose(out, features.steps[0][1].transform(X), rtol=1e-5, atol=1e-5)


def test_parity_check_refuses_a_graph_that_disagrees() -> None:
    a = build_pipeline(project("logistic_regression", "binary"), list(X.columns), ["plan"]).fit(
        X, TARGETS["binary"]
    )
    b = build_pipeline(project("random_forest", "binary"), list(X.columns), ["plan"]).fit(
        X, TARGETS["binary"]
    )
    with pytest.raises(ExportError, match=r"disagrees with the native model on \d+ of 1500 rows"):
        check_parity(a, to_onnx(b, X), X)


def test_unconvertible_step_is_a_clear_error() -> None:
    from sklearn.linear_model import Ridge

    pipe = Pipeline([("sqrt", FunctionTransformer(np.sqrt)), ("model", Ridge())])
    frame = X[["fee"]].abs()
    pipe.fit(frame, TARGETS["regression"])
    with pytest.raises(ExportError, match="cannot convert the model to ONNX"):
        to_onnx(pipe, frame)


@pytest.mark.parametrize("estimator", ["logistic_regression", "hist_gradient_boosting"])
def test_column_names_as_they_come_are_the_graphs_input_names(estimator: str) -> None:
    names = {
        "age": "age/years",
        "visits": "visits per month",
        "fee": "fee.eur",
        "plan": "plän",
        "gap": "gap__days",
    }
    frame = X.rename(columns=names)
    p = Project.model_validate(
        {
            "name": "t",
            "task": "binary",
            "sources": {"t": {"path": "x"}},
            "target": {"source": "t", "column": "y"},
            "model": {"estimator": estimator, "params": {}},
        }
    )
    pipe = build_pipeline(p, list(frame.columns), ["plän"]).fit(frame, TARGETS["binary"])
    model = to_onnx(pipe, frame.head(50))
    assert [i.name for i in model.graph.input] == list(frame.columns)
    assert check_parity(pipe, model, frame.head(300))["max_abs_diff"] < 1e-4
