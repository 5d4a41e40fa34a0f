"""Real-world tables end to end: ``prodml init --from`` → train → promote → serve → every protocol.

Three tables made here with the traits new users bring (tests/data/tables.py): a regression table with
unlabelled rows and a date, a multiclass table with awkward column names and a rare class, a binary
table with an ID-like column. Each reaches a served model without an edit to the generated project;
OIP v2 over REST, OIP over gRPC (Triton's client), MLflow's ``/invocations`` and ``/predict`` agree with
each other and with the native scikit-learn model, and bad inputs get a 400.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from prodml.cli import app
from prodml.core.project import load_project
from tests.conftest import edit_project
from tests.data.tables import accounts, rentals, species, write_csv
from tests.servers import ServeProcess

pytestmark = pytest.mark.integration

runner = CliRunner()
TABLES = {
    # name: (table, target, trait)
    "rentals": (rentals, "rentals"),
    "species": (species, "species"),
    "accounts": (accounts, "churned"),
}


@dataclass
class Trained:
    name: str
    root: Path
    tracking: str
    native: Any  # the fitted scikit-learn pipeline
    X: pd.DataFrame  # holdout rows as the model takes them
    classes: list[Any] | None
    task: str
    text: str  # prodml.yaml as init wrote it

    @property
    def env(self) -> dict[str, str]:
        return {"PRODML_TRACKING_URI": self.tracking}


def _init(tmp: Path, name: str) -> Path:
    make, target = TABLES[name]
    table = write_csv(make(), tmp / "tables" / f"{name}.csv")
    root = tmp / name
    result = runner.invoke(app, ["init", str(root), "--from", str(table), "--target", target])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module", params=list(TABLES))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from prodml.pipeline.train import run_training

    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    root = _init(tmp, name)
    text = (root / "prodml.yaml").read_text()
    # only to keep the test short (it drops the comments): fewer trees and folds
    edit_project(root, model__params={"max_iter": 15}, validation__folds=2)
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    project = load_project(root)
    outcome = run_training(project, tracking_uri=tracking)
    promoted = runner.invoke(
        app,
        ["--project", str(root), "models", "promote", name, outcome.version.version],
        env={"PRODML_TRACKING_URI": tracking},
    )
    assert promoted.exit_code == 0, promoted.output
    listed = runner.invoke(
        app, ["--project", str(root), "models", "list"], env={"PRODML_TRACKING_URI": tracking}
    )
    assert "champion" in listed.stdout  # models list shows aliases
    result = outcome.result
    return Trained(
        name, root, tracking, result.pipeline, result.X_holdout.head(6), result.classes, result.task, text
    )


@pytest.fixture(scope="module")
def server(trained: Trained) -> Iterator[tuple[ServeProcess, httpx.Client]]:
    with ServeProcess(trained.root, trained.env, "--no-log-requests") as proc:
        proc.wait_ready(60)
        with httpx.Client(base_url=proc.url, timeout=20) as client:
            yield proc, client


def _json_value(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return None if math.isnan(v) else float(v)
    return v


def _records(X: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _json_value(v) for k, v in row.items()} for row in X.to_dict(orient="records")]


def _oip(X: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for name in X.columns:
        values = [_json_value(v) for v in X[name]]
        text = X[name].dtype == object
        out.append(
            {"name": name, "shape": [len(X), 1], "datatype": "BYTES" if text else "FP32", "data": values}
        )
    return out


def _triton(module: Any, X: pd.DataFrame) -> list[Any]:
    inputs = []
    for name in X.columns:
        if X[name].dtype == object:
            tensor = module.InferInput(name, [len(X), 1], "BYTES")
            tensor.set_data_from_numpy(X[name].to_numpy(dtype=object).reshape(-1, 1))
        else:
            tensor = module.InferInput(name, [len(X), 1], "FP32")
            tensor.set_data_from_numpy(X[name].to_numpy(dtype=np.float32).reshape(-1, 1))
        inputs.append(tensor)
    return inputs


def _native(trained: Trained) -> np.ndarray:
    X = trained.X.copy()
    for c in X.columns:
        if X[c].dtype != object:
            X[c] = X[c].astype(np.float32)  # what the graph receives
    if trained.task == "regression":
        return np.asarray(trained.native.predict(X), dtype=np.float64)
    return np.asarray(trained.native.predict_proba(X), dtype=np.float64)


def test_init_from_needs_no_edit_and_names_what_it_left_out(trained: Trained) -> None:
    text = trained.text
    project = load_project(trained.root, environ={})
    if trained.name == "rentals":
        assert project.task == "regression" and project.target.drop_missing
        assert "{column: day, op: date}" in text
    elif trained.name == "species":
        assert project.task == "multiclass"
        assert '- "bill length/mm"' in text and '- "île"' in text
        assert "Rockhopper" in trained.classes  # type: ignore[operator]
    else:
        assert project.task == "binary"
        assert '# - "account_id"' in text and "left out: ID-like" in text
        assert "account_id" not in trained.X.columns and "email" not in trained.X.columns


def test_every_protocol_agrees_with_the_native_model(
    trained: Trained, server: tuple[ServeProcess, httpx.Client]
) -> None:
    import tritonclient.grpc as tgrpc

    proc, client = server
    native = _native(trained)
    name, X = trained.name, trained.X

    oip = client.post(f"/v2/models/{name}/infer", json={"inputs": _oip(X)})
    assert oip.status_code == 200, oip.text
    outputs = {o["name"]: o for o in oip.json()["outputs"]}
    grpc_client = tgrpc.InferenceServerClient(f"127.0.0.1:{proc.grpc_port}")
    over_grpc = grpc_client.infer(name, _triton(tgrpc, X))
    invocations = client.post(
        "/invocations",
        json={
            "dataframe_split": {"columns": list(X.columns), "data": [list(r.values()) for r in _records(X)]}
        },
    )
    assert invocations.status_code == 200, invocations.text
    predicted = invocations.json()["predictions"]
    predict = client.post("/predict", json=_records(X))
    assert predict.status_code == 200, predict.text

    if trained.task == "regression":
        rest = np.asarray(outputs["variable"]["data"], dtype=np.float64)
        np.testing.assert_allclose(rest, native, rtol=1e-5)
        np.testing.assert_allclose(over_grpc.as_numpy("variable").ravel(), native, rtol=1e-5)
        np.testing.assert_allclose(predicted, native, rtol=1e-5)
        np.testing.assert_allclose(predict.json()["predictions"], native, rtol=1e-5)
        # the date is sent as itself; its parts (computed in the graph) matter: weekends rent more
        row = {"season": "spring", "temp": 18.0, "humidity": 50.0}
        dates = [{**row, "day": "2024-03-16"}, {**row, "day": "2024-03-18T08:30:00"}]  # Sat, Mon
        weekend, weekday = client.post("/predict", json=dates).json()["predictions"]
        assert weekend > weekday + 30
        return
    classes = trained.classes or []
    proba = np.asarray(outputs["probabilities"]["data"], dtype=np.float64).reshape(len(X), len(classes))
    np.testing.assert_allclose(proba, native, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(over_grpc.as_numpy("probabilities"), native, rtol=1e-5, atol=1e-6)
    names = [classes[i] for i in native.argmax(axis=1)]
    # /invocations (and /predict) answer with the class name from training, as MLflow does
    assert predicted == names
    assert [p["label"] for p in predict.json()["predictions"]] == names
    # OIP v2 over REST and gRPC answer with the same class names (BYTES for text classes)
    assert [str(v) for v in outputs["label"]["data"]] == [str(n) for n in names]
    grpc_labels = over_grpc.as_numpy("label").ravel().tolist()
    assert [v.decode() if isinstance(v, bytes) else str(v) for v in grpc_labels] == [str(n) for n in names]


def test_bad_inputs_get_a_400_with_the_field(
    trained: Trained, server: tuple[ServeProcess, httpx.Client]
) -> None:
    _, client = server
    good = _records(trained.X.head(1))[0]
    numeric = next(k for k, v in good.items() if isinstance(v, float))
    missing = {k: v for k, v in good.items() if k != numeric}
    answer = client.post("/predict", json=[missing])
    assert answer.status_code == 400 and numeric in answer.text
    wrong = {**good, numeric: "many"}
    answer = client.post("/predict", json=[wrong])
    assert answer.status_code == 400 and numeric in answer.text
    answer = client.post(f"/v2/models/{trained.name}/infer", json={"inputs": _oip(trained.X.head(1))[1:]})
    assert answer.status_code == 400
    categorical = next((k for k, v in good.items() if isinstance(v, str) and "-" not in v), None)
    if categorical is not None:
        answer = client.post("/predict", json=[{**good, categorical: "no such value"}])
        assert answer.status_code == 400 and categorical in answer.text
    if trained.name == "rentals":
        # the date input's pattern (``format: date-time`` in schema.json) is checked: 400 naming 'day'
        answer = client.post("/predict", json=[{**good, "day": "next tuesday"}])
        assert answer.status_code == 400 and "day" in answer.text
    # after every bad request a good one still succeeds
    assert client.post("/predict", json=[good]).status_code == 200


def test_cli_train_succeeds_on_the_unedited_project_without_mlflow_chatter(tmp_path: Path) -> None:
    root = _init(tmp_path, "species")  # multiclass, awkward names, a rare class; the file as written
    out = subprocess.run(
        [str(Path(sys.executable).with_name("prodml")), "--project", str(root), "train"],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert "species version 1" in out.stdout
    assert "roc_auc_ovr" in out.stdout
    assert "INFO" not in out.stderr and "INFO" not in out.stdout, out.stderr


@pytest.mark.parametrize("trained", ["rentals"], indirect=True)  # the table with a date input
def test_batch_scores_date_columns_as_the_server_scores_their_text(trained: Trained, tmp_path: Path) -> None:
    """A Parquet date (or timestamp) column feeds a date input as its ISO text would (issue 15, item 2)."""
    from datetime import date

    import pyarrow as pa
    import pyarrow.parquet as pq

    from prodml.batch import score

    records = _records(trained.X)
    as_text = pa.Table.from_pylist(records)
    days = pa.array([date.fromisoformat(str(r["day"])[:10]) for r in records], pa.date32())
    as_date = as_text.set_column(as_text.schema.get_field_index("day"), "day", days)
    stamps = days.cast(pa.timestamp("s"))
    as_stamp = as_text.set_column(as_text.schema.get_field_index("day"), "day", stamps)
    predictions = []
    for name, table in (("text", as_text), ("date", as_date), ("stamp", as_stamp)):
        pq.write_table(table, tmp_path / f"{name}.parquet")
        result = score(
            str(tmp_path / f"{name}.parquet"),
            str(tmp_path / f"out-{name}"),
            project=load_project(trained.root),
            tracking_uri=trained.tracking,
            profile=False,
        )
        assert result.rejected == 0
        out = pq.read_table(tmp_path / f"out-{name}").sort_by("row")
        predictions.append(out.drop_columns(["scored_at"]).to_pylist())
    assert predictions[0] == predictions[1] == predictions[2]
