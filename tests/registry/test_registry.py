"""The MLflow registry round trip on the embedded SQLite store and on a real PostgreSQL store."""

import time
from pathlib import Path

import pytest

from prodml.core.errors import NotFound, Unavailable
from prodml.core.project import Promotion
from prodml.export.package import TamperedArtifact, write_package
from prodml.registry.mlflow import Registry, parse_ref
from prodml.registry.promotion import GateRefused, check_gate, promote


class _Model:
    """Stands in for an onnx.ModelProto: the registry only stores the bytes."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def SerializeToString(self) -> bytes:
        return self.payload


def _register(registry: Registry, tmp: Path, name: str, auc: float) -> str:
    digests = write_package(
        tmp / f"pkg-{auc}",
        model=_Model(b"onnx-bytes-%f" % auc),
        schema={"inputs": []},
        profile={},
        metrics={"holdout": {"roc_auc": auc}},
        lineage={},
        card="# card\n",
    )
    with registry.start_run("tests", run_name="r") as run:
        run.log_params({"estimator": "x"})
        run.log_metrics({"cv_roc_auc": auc}, step=0)
        mv = registry.register(name, run, tmp / f"pkg-{auc}", digests, {"prodml.metric.roc_auc": auc})
    return mv.version


def round_trip(registry: Registry, tmp: Path) -> None:
    name = f"m{int(time.time() * 1000)}"
    v1 = _register(registry, tmp, name, 0.80)
    v2 = _register(registry, tmp, name, 0.70)
    assert (v1, v2) == ("1", "2")
    assert registry.resolve(name).version == "2"
    assert registry.resolve(f"{name}/1").tags["prodml.metric.roc_auc"] == "0.8"
    promote(registry, Promotion(metric="roc_auc", min=0.75), name, "1")
    assert registry.resolve(f"{name}@champion").version == "1"
    # the version list carries aliases too (MLflow's version search leaves them out)
    assert [(v.version, v.aliases) for v in registry.versions(name)] == [("2", []), ("1", ["champion"])]
    with pytest.raises(GateRefused, match=r"roc_auc 0.7000 is below the gate's minimum 0.7500"):
        promote(registry, Promotion(metric="roc_auc", min=0.75), name, "2")
    assert registry.resolve(f"{name}@champion").version == "1"
    package = registry.load(registry.resolve(f"{name}@champion"), tmp / "cache")
    assert package.onnx == b"onnx-bytes-0.800000"
    assert package.metrics["holdout"]["roc_auc"] == 0.8
    # A damaged cache is refused and fetched again, verified.
    (tmp / "cache" / name / "1" / "model.onnx").write_bytes(b"evil")
    assert registry.load(registry.resolve(f"{name}/1"), tmp / "cache").onnx == b"onnx-bytes-0.800000"
    with pytest.raises(NotFound):
        registry.resolve(f"{name}@nobody")
    assert name in registry.models()


def test_round_trip_on_sqlite(tmp_path: Path) -> None:
    round_trip(Registry(f"sqlite:///{tmp_path / 'mlflow.db'}"), tmp_path)


@pytest.mark.integration
def test_round_trip_on_postgresql(tmp_path: Path, postgres_dsn: str) -> None:
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS mlflow_test")
        conn.execute("CREATE DATABASE mlflow_test")
    uri = postgres_dsn.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/mlflow_test"
    round_trip(Registry(uri, artifact_root=(tmp_path / "artifacts").as_uri()), tmp_path)


def test_tampered_stored_artifact_is_refused(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    version = _register(registry, tmp_path, "tamper", 0.9)
    stored = next((tmp_path / "mlartifacts").rglob("package/schema.json"))
    stored.write_text('{"inputs": ["evil"]}')
    with pytest.raises(TamperedArtifact, match=r"schema.json does not match its recorded sha256"):
        registry.load(registry.resolve(f"tamper/{version}"), tmp_path / "cache")


def test_unreachable_registry_is_unavailable_within_seconds(tmp_path: Path) -> None:
    from tests.servers import free_port

    registry = Registry(f"http://127.0.0.1:{free_port()}")
    # the first call imports MLflow's REST client lazily (over 10 s on a loaded machine); that is import
    # time, not waiting: the bound is on the calls themselves
    with pytest.raises(Unavailable, match="did not answer"):
        registry.resolve("churn@champion")
    start = time.monotonic()
    with pytest.raises(Unavailable, match="did not answer"):
        registry.resolve("churn@champion")
    assert time.monotonic() - start < 10


def test_gate_direction_and_champion() -> None:
    from prodml.registry.mlflow import ModelVersion

    def mv(version: str, **metrics: float) -> ModelVersion:
        return ModelVersion(
            "m", version, "r", "s", [], {f"prodml.metric.{k}": str(v) for k, v in metrics.items()}, 0
        )

    gate = Promotion(metric="roc_auc", min=0.8, max_drop_vs_champion=0.002)
    assert check_gate(gate, mv("2", roc_auc=0.85), mv("1", roc_auc=0.851)).passed
    refused = check_gate(gate, mv("2", roc_auc=0.845), mv("1", roc_auc=0.85))
    assert not refused.passed
    assert "worse than the champion (version 1, 0.8500)" in refused.reasons[0]
    loss = Promotion(metric="log_loss", min=0.3, max_drop_vs_champion=0.01)
    assert check_gate(loss, mv("2", log_loss=0.25), None).passed
    assert not check_gate(loss, mv("2", log_loss=0.35), None).passed
    assert not check_gate(gate, mv("2"), None).passed  # a missing metric never promotes


def test_references() -> None:
    assert parse_ref("churn@champion") == ("churn", "champion", None)
    assert parse_ref("models:/churn/3") == ("churn", None, "3")
    assert parse_ref("churn") == ("churn", None, None)


@pytest.mark.integration
def test_round_trip_on_postgresql_with_s3_artifacts(
    tmp_path: Path, postgres_dsn: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scale profile: PostgreSQL store, artifacts in S3 (moto's server), same code."""
    import boto3
    import psycopg

    for key, value in {
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="mlflow")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS mlflow_s3")
        conn.execute("CREATE DATABASE mlflow_s3")
    uri = postgres_dsn.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/mlflow_s3"
    registry = Registry(uri, artifact_root="s3://mlflow/artifacts")
    round_trip(registry, tmp_path)
    stored = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="mlflow")["Contents"]
    assert any(o["Key"].endswith("package/model.onnx") for o in stored)
