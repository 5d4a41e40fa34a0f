"""Torch estimators through `prodml train`: the digits CNN registered, served over OIP REST and gRPC
with Triton's client, DDP through `--nproc 2`; the churn MLP against gradient boosting."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from prodml.cli import app
from prodml.core.errors import ConfigError
from prodml.core.project import load_project
from prodml.dl.datasets import PIXELS, write_digits
from prodml.export.package import load_package
from prodml.pipeline.train import TrainingOutcome, run_training
from prodml.registry.mlflow import Registry
from prodml.registry.promotion import promote
from tests.conftest import edit_project
from tests.servers import ServeProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dl" / "digits"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Digits:
    root: Path
    tracking: str
    outcome: TrainingOutcome


def digits_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "prodml.yaml", root / "prodml.yaml")
    write_digits(root / "data" / "digits.parquet")
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """The example digits CNN trained, registered and promoted once for the module."""
    root = digits_project(tmp_path_factory.mktemp("digits"))
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    torch.set_num_threads(1)
    outcome = run_training(load_project(root), tracking_uri=tracking)
    promote(Registry(tracking), load_project(root).promotion, outcome.version.name, outcome.version.version)
    return Digits(root, tracking, outcome)


@pytest.mark.integration
def test_cnn_trains_exports_and_registers(digits: Digits) -> None:
    outcome = digits.outcome
    assert outcome.result.holdout["accuracy"] >= 0.97
    assert outcome.parity["max_abs_diff"] < 1e-4
    assert outcome.parity["rows"] == 450
    mv = outcome.version
    package = load_package(
        Path(mv.source.removeprefix("file://")),
        {k[14:]: v for k, v in mv.tags.items() if k.startswith("prodml.sha256.")},
    )
    assert [
        i["name"] for i in package.schema["inputs"]
    ] == PIXELS  # the same column inputs as a tabular model
    assert package.schema["classes"] == list(range(10))
    assert package.lineage["model"]["estimator"] == "torch_cnn"
    assert package.lineage["training"]["processes"] == 1
    history = package.metrics["history"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    report = outcome.report.read_text()
    assert "Training curves" in report
    assert report.count("<img") >= 2
    run = Registry(digits.tracking).client.get_metric_history(mv.run_id, "train_loss")
    assert [m.step for m in run] == list(range(1, len(history) + 1))  # one MLflow point per epoch


def _rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[-n:].astype(np.float32), y[-n:]


@pytest.mark.integration
def test_cnn_package_served_over_oip_rest_and_grpc(digits: Digits) -> None:
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp
    from tritonclient.utils import InferenceServerException

    X, y = _rows(32)

    def inputs(module, columns: list[str]):  # type: ignore[no-untyped-def]
        tensors = []
        for i, name in enumerate(PIXELS):
            if name not in columns:
                continue
            tensor = module.InferInput(name, [len(X), 1], "FP32")
            tensor.set_data_from_numpy(X[:, i : i + 1].copy())
            tensors.append(tensor)
        return tensors

    env = {"PRODML_TRACKING_URI": digits.tracking}
    with ServeProcess(digits.root, env) as server:
        server.wait_ready()
        rest = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
        assert rest.is_model_ready("digits")
        out = rest.infer("digits", inputs(thttp, PIXELS))
        assert (out.as_numpy("label") == y).mean() >= 0.9
        proba = out.as_numpy("probabilities")
        assert proba.shape == (32, 10)

        grpc_client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        result = grpc_client.infer("digits", inputs(tgrpc, PIXELS))
        np.testing.assert_allclose(result.as_numpy("probabilities"), proba, rtol=1e-6)
        meta = grpc_client.get_model_metadata("digits")
        assert [i.name for i in meta.inputs][:3] == ["p00", "p01", "p02"]

        # A request without one pixel is refused with a 400 / INVALID_ARGUMENT naming it.
        bad = httpx.post(
            f"{server.url}/v2/models/digits/infer",
            json={
                "inputs": [
                    {"name": n, "shape": [1, 1], "datatype": "FP32", "data": [0.0]} for n in PIXELS[:-1]
                ]
            },
            timeout=10,
        )
        assert bad.status_code == 400
        assert "p63" in bad.text
        with pytest.raises(InferenceServerException, match=r"INVALID_ARGUMENT.*p63"):
            grpc_client.infer("digits", inputs(tgrpc, PIXELS[:-1]))
        # ... and the server keeps serving.
        assert rest.infer("digits", inputs(thttp, PIXELS)).as_numpy("label").shape == (32,)


def test_bad_torch_params_name_the_key(tmp_path: Path) -> None:
    root = digits_project(tmp_path / "digits")
    edit_project(root, model__params={"epochs": 2, "learnig_rate": 0.1})
    with pytest.raises(ConfigError, match=r"model\.params\.learnig_rate"):
        run_training(load_project(root), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.integration
def test_prodml_train_nproc_2_runs_ddp_and_registers_once(tmp_path: Path) -> None:
    root = digits_project(tmp_path / "digits")
    edit_project(
        root, name="digits_ddp", model__params={"epochs": 2, "batch_size": 64, "image_shape": [1, 8, 8]}
    )
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(
        app, ["--project", str(root), "train", "--nproc", "2"], env={"PRODML_TRACKING_URI": tracking}
    )
    assert result.exit_code == 0, result.output
    versions = Registry(tracking).versions("digits_ddp")
    assert len(versions) == 1  # only rank 0 registered
    lineage = json.loads((Path(versions[0].source.removeprefix("file://")) / "lineage.json").read_text())
    assert lineage["training"]["processes"] == 2


def test_nproc_refuses_a_non_torch_model(churn_dir: Path) -> None:
    result = CliRunner().invoke(app, ["--project", str(churn_dir), "train", "--nproc", "2"])
    assert result.exit_code == 2
    assert "not a torch architecture" in result.output


@pytest.mark.integration
def test_mlp_on_churn_is_within_0_02_roc_auc_of_gradient_boosting(churn_dir: Path, tmp_path: Path) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    edit_project(churn_dir, validation__folds=2)
    boosted = run_training(load_project(churn_dir), tracking_uri=tracking)
    edit_project(churn_dir, model__estimator="torch_mlp", model__params=MLP_PARAMS)
    mlp = run_training(load_project(churn_dir), tracking_uri=tracking)
    assert mlp.result.rows["holdout"] == boosted.result.rows["holdout"]  # the same holdout rows
    gap = boosted.result.holdout["roc_auc"] - mlp.result.holdout["roc_auc"]
    assert gap <= 0.02, (boosted.result.holdout, mlp.result.holdout)
    assert mlp.parity["max_abs_diff"] < 1e-4
    frame = pq.read_table(churn_dir / ".prodml/features/training.parquet")
    assert {
        i["name"]
        for i in load_package(Path(mlp.version.source.removeprefix("file://")), None).schema["inputs"]
    } <= set(frame.column_names)


MLP_PARAMS = {
    "epochs": 30,
    "hidden": [64, 32],
    "dropout": 0.1,
    "weight_decay": 1e-4,
    "batch_size": 128,
    "patience": 5,
}


def test_the_torchrun_entry_reports_errors_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prodml.pipeline.dl import main

    root = digits_project(tmp_path / "digits")
    edit_project(root, model__params={"optimizer": "rmsprop"})
    assert main(["--project", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.params.optimizer:")
    assert "Traceback" not in err


@pytest.mark.integration
def test_a_run_resumed_from_its_checkpoint_continues_the_curve(tmp_path: Path) -> None:
    from prodml.pipeline.dl import main

    root = digits_project(tmp_path / "digits")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = {"epochs": 2, "batch_size": 64, "image_shape": [1, 8, 8]}
    edit_project(root, name="digits_resume", model__params=params)
    assert main(["--project", str(root), "--tracking-uri", tracking]) == 0
    edit_project(root, model__params=params | {"epochs": 3})
    checkpoint = root / ".prodml" / "checkpoints" / "digits_resume"
    assert main(["--project", str(root), "--tracking-uri", tracking, "--resume", str(checkpoint)]) == 0
    first, second = (
        json.loads((Path(v.source.removeprefix("file://")) / "metrics.json").read_text())["history"]
        for v in sorted(Registry(tracking).versions("digits_resume"), key=lambda v: int(v.version))
    )
    assert [e["epoch"] for e in second] == [1.0, 2.0, 3.0]
    assert [e["train_loss"] for e in second[:2]] == [e["train_loss"] for e in first]
    assert second[2]["train_loss"] < second[1]["train_loss"]
