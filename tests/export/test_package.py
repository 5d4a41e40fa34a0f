import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodml.core.project import Project
from prodml.export.onnx import onnx_inputs, to_onnx
from prodml.export.package import FILES, TamperedArtifact, load_package, safe_join, write_package
from prodml.export.profile import numeric_profile, reference_profile
from prodml.export.schema import infer_schema
from prodml.train.pipeline import build_pipeline


@pytest.fixture(scope="module")
def fitted():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {"a": rng.normal(size=400).astype(np.float32), "c": rng.choice(["x", "y"], 400).astype(object)}
    )
    y = ((X.a > 0) ^ (X.c == "x")).astype(int).to_numpy()
    project = Project.model_validate(
        {
            "name": "t",
            "sources": {"t": {"path": "x"}},
            "target": {"source": "t", "column": "y"},
            "model": {"estimator": "hist_gradient_boosting", "params": {"max_iter": 20}},
        }
    )
    pipe = build_pipeline(project, ["a", "c"], ["c"]).fit(X, y)
    return pipe, X, y


@pytest.fixture
def package(tmp_path: Path, fitted):  # type: ignore[no-untyped-def]
    pipe, X, _ = fitted
    schema = infer_schema(X, ["c"], task="binary", classes=[0, 1], target="y")
    profile = reference_profile(X, ["c"], pipe.predict_proba(X)[:, 1])
    digests = write_package(
        tmp_path / "pkg",
        model=to_onnx(pipe, X),
        schema=schema,
        profile=profile,
        metrics={"holdout": {"roc_auc": 0.9}},
        lineage={"hash": "abc"},
        card="# t\n",
    )
    return tmp_path / "pkg", digests


def test_round_trip_and_the_loaded_graph_predicts(package, fitted) -> None:  # type: ignore[no-untyped-def]
    path, digests = package
    assert set(digests) == set(FILES)
    for name, digest in digests.items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest
    pkg = load_package(path, digests)
    assert pkg.schema["inputs"][1] == {
        "name": "c",
        "dtype": "string",
        "nullable": False,
        "categories": ["x", "y"],
    }
    assert pkg.schema["classes"] == [0, 1]
    pipe, X, _ = fitted
    probs = pkg.session().run(None, onnx_inputs(X.head(20)))[1]
    np.testing.assert_allclose(probs[:, 1], pipe.predict_proba(X.head(20))[:, 1], atol=1e-5)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_tampered_truncated_or_missing_file_is_refused(package, damage: str) -> None:  # type: ignore[no-untyped-def]
    path, digests = package
    target = path / "model.onnx"
    data = target.read_bytes()
    if damage == "flip":
        target.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    else:
        target.unlink()
    with pytest.raises(TamperedArtifact, match=r"model\.onnx"):
        load_package(path, digests)


def test_missing_digest_fails_closed(package) -> None:  # type: ignore[no-untyped-def]
    path, digests = package
    del digests["profile.json"]
    with pytest.raises(TamperedArtifact, match=r"no recorded digest for profile\.json"):
        load_package(path, digests)


def test_paths_are_confined(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/b.json") == (tmp_path / "a/b.json").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(TamperedArtifact, match="refusing artifact path"):
            safe_join(tmp_path, bad)


def test_profile_bins_cover_the_data() -> None:
    x = np.concatenate([np.arange(1000, dtype=float), [np.nan] * 10])
    p = numeric_profile(x)
    assert len(p["edges"]) == 9
    assert sum(p["shares"]) == pytest.approx(1.0)
    assert max(p["shares"]) - min(p["shares"]) < 0.01
    assert p["null_rate"] == pytest.approx(10 / 1010)
