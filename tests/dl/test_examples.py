"""The sequence example end to end (small): trained, exported with tensor inputs, written and registered."""

import json
import runpy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from prodml.export.package import load_package
from prodml.export.torch import check_tensors

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dl" / "churn_sequences.py"


@pytest.mark.integration
def test_sequence_example_registers_a_tensor_package(tmp_path: Path) -> None:
    main = runpy.run_path(str(EXAMPLE))["main"]
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "package"
    args = ["--customers", "150", "--days", "200", "--epochs", "1", "--max-len", "16", "--out", str(out)]
    summary = main([*args, "--tracking-uri", tracking])
    assert summary["max_abs_diff"] < 1e-4
    package = load_package(out, None)
    inputs = package.schema["inputs"]
    assert [(i["name"], i["kind"], i["shape"]) for i in inputs] == [
        ("events", "tensor", [-1, -1, 8]),
        ("lengths", "tensor", [-1]),
    ]
    feeds, rows = check_tensors(inputs, {"events": np.zeros((3, 5, 8)), "lengths": [1, 5, 2]})
    label, proba = package.session().run(None, feeds)
    assert rows == 3
    assert label.shape == (3,)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert isinstance(package.session(), ort.InferenceSession)
    assert json.loads((out / "metrics.json").read_text())["history"][0]["epoch"] == 1.0

    from prodml.registry.mlflow import Registry

    [version] = Registry(tracking).versions("churn_sequences")
    assert version.tags["prodml.estimator"] == "torch_gru"
