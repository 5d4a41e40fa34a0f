"""Materialisation: the online store equals the offline path as of T; incremental, idempotent, recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from prodml.cli.main import app
from prodml.core.errors import FeatureError
from prodml.core.project import Project, load_project
from prodml.data.online_store import OnlineFeatures, OnlineStore, RedisStore, SQLiteStore
from prodml.data.sources import Catalog
from prodml.features.materialize import features_at, latest_time, materialize
from prodml.features.offline import build_training_frame
from tests.conftest import edit_project
from tests.servers import redis_server

T1, T2 = datetime(2025, 6, 1, 12), datetime(2025, 6, 15, 6)
STRINGS = ["plan", "country"]


def _names(store: OnlineStore) -> list[str]:
    return list(store.meta()["features"])


Snapshot = dict[str, tuple[bool, np.ndarray, list[Any]]]


def _same(a: Snapshot, b: Snapshot) -> bool:
    """Snapshots equal, numbers to 1e-12: DuckDB sums a window's floats in an order that depends on the
    rows around them, so two spines can differ in the last bit of a sum (never in a float32 the model
    takes, but for rare ties)."""
    return a.keys() == b.keys() and all(
        a[k][0] == b[k][0]
        and a[k][2] == b[k][2]
        and np.allclose(a[k][1], b[k][1], rtol=1e-12, atol=0, equal_nan=True)
        for k in a
    )


def _snapshot(store: OnlineStore) -> Snapshot:
    """Every stored value, key by key — what a reader can see of the store."""
    keys = store.keys()
    names = _names(store)
    numbers = [n for n in names if n not in STRINGS]
    got = store.read(keys, numbers, [s for s in STRINGS if s in names])
    return {k: (bool(got.found[i]), got.numbers[i], got.strings[i].tolist()) for i, k in enumerate(keys)}


def test_the_store_holds_what_the_offline_path_computes_as_of_t(
    churn_project: Project, tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "online.sqlite")
    result = materialize(Catalog(churn_project), store, as_of=T1)
    assert result.as_of == T1.isoformat() and result.full and result.written == result.entities > 100
    # an independent offline run: a label file with one row per stored entity at T, built as for training
    keys = store.keys()
    labels = pa.table(
        {
            "customer_id": pa.array([int(k) for k in keys], pa.int64()),
            "prediction_ts": pa.array([T1] * len(keys), pa.timestamp("us")),
            "churned": pa.array([0] * len(keys), pa.int64()),
        }
    )
    pq.write_table(labels, churn_project.root / "data" / "labels.parquet")
    frame = build_training_frame(Catalog(load_project(churn_project.root))).table
    assert set(result.features) == set(frame.column_names) - {"customer_id", "prediction_ts", "churned"}
    numbers = [n for n in result.features if n not in STRINGS]
    got = store.read(frame.column("customer_id").to_pylist(), numbers, STRINGS)
    assert got.found.all()
    for j, name in enumerate(numbers):
        expected = frame.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        np.testing.assert_allclose(got.numbers[:, j], expected, rtol=1e-12, err_msg=name)
    for j, name in enumerate(STRINGS):
        assert got.strings[:, j].tolist() == frame.column(name).to_pylist()
    # windows really moved with T: some customer had sessions in the 7 days before T, some had none
    counts = got.numbers[:, numbers.index("sessions_count_7d")]
    assert counts.max() > 0 and counts.min() == 0


def test_materialising_twice_leaves_the_same_store_and_records_both_runs(
    churn_project: Project, tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "online.sqlite")
    materialize(Catalog(churn_project), store, as_of=T1)
    first = _snapshot(store)
    materialize(Catalog(churn_project), store, as_of=T1)
    assert _same(_snapshot(store), first)
    runs = (churn_project.state_dir / "online" / "materializations.jsonl").read_text().splitlines()
    assert [json.loads(r)["as_of"] for r in runs] == [T1.isoformat()] * 2
    assert store.meta()["written"] == len(first)
    assert len(store.meta()["definitions"]) == 64


def test_an_incremental_run_leaves_what_a_full_run_would(churn_dir: Path, tmp_path: Path) -> None:
    project = load_project(churn_dir)
    aggregates = [
        {**a.model_dump(mode="json"), "days_since_last": False} for a in project.features.aggregates
    ]
    edit_project(churn_dir, features__aggregates=aggregates)
    project = load_project(churn_dir)
    incremental = SQLiteStore(tmp_path / "incremental.sqlite")
    materialize(Catalog(project), incremental, as_of=T1)
    result = materialize(Catalog(project), incremental, as_of=T2, since="last")
    full = SQLiteStore(tmp_path / "full.sqlite")
    everyone = materialize(Catalog(project), full, as_of=T2)
    assert result.since == T1.isoformat() and not result.full
    assert 0 < result.entities < everyone.entities  # only what can have changed was recomputed
    assert _same(_snapshot(incremental), _snapshot(full))


def test_days_since_last_makes_every_entity_a_candidate(churn_project: Project, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "online.sqlite")
    full = materialize(Catalog(churn_project), store, as_of=T1)
    again = materialize(Catalog(churn_project), store, as_of=T2, since=T1)
    assert again.entities >= full.entities  # the clock moved every days_since_last


def test_bad_times_are_refused_with_the_fix(churn_project: Project, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "online.sqlite")
    with pytest.raises(FeatureError, match="no earlier materialisation") as info:
        materialize(Catalog(churn_project), store, since="last")
    assert "full" in (info.value.hint or "")
    with pytest.raises(FeatureError, match="is after the materialisation time"):
        materialize(Catalog(churn_project), store, as_of=T1, since=T2)


def test_t_defaults_to_the_latest_event(churn_project: Project, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "online.sqlite")
    latest = latest_time(Catalog(churn_project))
    sessions = Catalog(churn_project).read("sessions").column("ts")
    assert latest >= pc.max(sessions).as_py()
    assert materialize(Catalog(churn_project), store).as_of == latest.isoformat()


def test_features_at_keeps_the_input_order(churn_project: Project) -> None:
    keys = pa.array([5, 3, 5, 1], pa.int64())
    times = pa.array([T2, T1, T1, T2], pa.timestamp("us"))
    table, _ = features_at(Catalog(churn_project), keys, times)
    assert table.column("customer_id").to_pylist() == [5, 3, 5, 1]
    one, _ = features_at(
        Catalog(churn_project), pa.array([5], pa.int64()), pa.array([T1], pa.timestamp("us"))
    )
    assert table.slice(2, 1).to_pylist() == one.to_pylist()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as (url, _):
        yield url


@pytest.mark.integration
def test_redis_and_sqlite_stores_hold_the_same_values(
    churn_project: Project, redis_url: str, tmp_path: Path
) -> None:
    sqlite = SQLiteStore(tmp_path / "online.sqlite")
    redis = RedisStore(redis_url, "prodml:churn-test", timeout_s=1.0)
    for store in (sqlite, redis):
        materialize(Catalog(churn_project), store, as_of=T1)
    assert redis.keys() == sqlite.keys()
    redis_values, sqlite_values = _snapshot(redis), _snapshot(sqlite)
    assert _same(redis_values, sqlite_values)
    for k, (_, numbers, _) in redis_values.items():  # the same values written: bit for bit
        np.testing.assert_array_equal(numbers, sqlite_values[k][1])
    redis.close()


def test_the_cli_materialises_and_records(churn_dir: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(
        app, ["--project", str(churn_dir), "features", "materialize", "--as-of", T1.isoformat()]
    )
    assert first.exit_code == 0, first.output
    assert "written" in first.output and T1.isoformat() in first.output
    again = runner.invoke(
        app,
        [
            "--project",
            str(churn_dir),
            "features",
            "materialize",
            "--as-of",
            T2.isoformat(),
            "--since",
            "last",
        ],
    )
    assert again.exit_code == 0, again.output
    assert T1.isoformat() in again.output  # since
    assert (churn_dir / ".prodml" / "online" / "features.sqlite").is_file()
    bad = runner.invoke(app, ["--project", str(churn_dir), "features", "materialize", "--as-of", "June"])
    assert bad.exit_code == 2
    assert "is not an ISO time" in bad.output


# --- serving by entity id ---------------------------------------------------------------------------


def test_serving_by_entity_gives_the_prediction_of_the_full_row(
    churn_project: Project, tmp_path: Path
) -> None:
    """A model package scores the row the store returns for an entity exactly as it scores the full row
    the offline path computes for that entity at T (the dataplane's online step, in process)."""
    from prodml.export.onnx import to_onnx
    from prodml.export.package import ModelPackage
    from prodml.export.profile import reference_profile
    from prodml.export.schema import infer_schema
    from prodml.serve.runtime import Runtime
    from prodml.serve.validation import Validator
    from prodml.train.pipeline import build_pipeline
    from prodml.train.trainer import prepare

    project = churn_project
    frame = build_training_frame(Catalog(project))
    X, y, classes = prepare(frame, project)
    pipe = build_pipeline(project, list(X.columns), frame.categorical, params={"max_iter": 20}).fit(X, y)
    schema = infer_schema(X, frame.categorical, task="binary", classes=classes, target="churned")
    profile = reference_profile(X, frame.categorical, None)
    graph = to_onnx(pipe, X.head(50)).SerializeToString()
    runtime = Runtime(ModelPackage(Path(), graph, schema, profile, {}, {}, ""))
    validator = Validator(schema)

    store = SQLiteStore(tmp_path / "online.sqlite")
    materialize(Catalog(project), store, as_of=T1)
    keys = [int(k) for k in store.keys()[:80]]
    online = OnlineFeatures.for_model(store, schema, profile, entity="customer_id")
    columns, fetched = online.join({"customer_id": keys})
    assert not fetched.missing

    full, _ = features_at(
        Catalog(project), pa.array(keys, pa.int64()), pa.array([T1] * len(keys), pa.timestamp("us"))
    )
    rows = {name: full.column(name).to_pylist() for name in validator.names}
    label_entity, proba_entity = runtime.run(validator.feeds(columns)[0])
    label_row, proba_row = runtime.run(validator.feeds(rows)[0])
    assert 0 < label_row.sum() < len(keys) or np.ptp(proba_row) > 0  # a model that tells rows apart
    np.testing.assert_array_equal(label_entity, label_row)
    np.testing.assert_allclose(proba_entity, proba_row, rtol=1e-6)  # float sums: see _same


@pytest.mark.integration
def test_the_cli_materialises_into_the_redis_the_environment_names(churn_dir: Path, redis_url: str) -> None:
    env = {"PRODML_FEATURES__ONLINE__REDIS_URL": redis_url, "PRODML_FEATURES__ONLINE__TTL_S": "3600"}
    result = CliRunner().invoke(
        app, ["--project", str(churn_dir), "features", "materialize", "--as-of", T1.isoformat()], env=env
    )
    assert result.exit_code == 0, result.output
    assert "127.0.0.1" in result.output
    store = RedisStore(redis_url, "prodml:churn", timeout_s=1.0)
    assert len(store.keys()) == store.meta()["written"] > 100
    assert 0 < store.client.ttl(b"prodml:churn:" + store.keys()[0].encode()) <= 3600
    store.close()
