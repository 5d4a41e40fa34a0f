"""The Spark engine (local[2]) against the local engine and the online server: the same predictions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from prodml.batch import score
from prodml.batch.commit import Staging
from prodml.batch.inputs import open_input
from prodml.batch.model import resolve_model
from prodml.batch.plan import Plan
from prodml.batch.spark import run_spark
from prodml.export.package import TamperedArtifact
from tests.batch.conftest import Trained
from tests.servers import ServeProcess

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 1, tzinfo=UTC)


def read(directory: Path) -> pa.Table:
    return ds.dataset(directory, format="parquet", partitioning="hive").to_table().sort_by("customer_id")


def with_bad_rows(trained: Trained) -> pa.Table:
    table = trained.table
    plans = table.column("plan").to_pylist()
    for i in (3, 500, 2_999):
        plans[i] = "platinum"
    return table.set_column(table.schema.get_field_index("plan"), "plan", pa.array(plans))


def test_local_spark_and_online_server_agree(trained: Trained, tmp_path: Path, spark: Any) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(with_bad_rows(trained), source, row_group_size=700)  # several input splits
    common = {
        "project": trained.project,
        "tracking_uri": trained.tracking,
        "scored_at": AT,
        "batch_rows": 512,
    }
    local = score(str(source), str(tmp_path / "local"), **common)  # type: ignore[arg-type]
    on_spark = score(str(source), str(tmp_path / "spark"), engine="spark", **common)  # type: ignore[arg-type]
    assert on_spark.success["engine"] == "spark" and on_spark.rows == local.rows == trained.table.num_rows
    assert on_spark.rejected == local.rejected == 3
    a, b = read(tmp_path / "local"), read(tmp_path / "spark")
    assert a.schema.remove_metadata() == b.schema.remove_metadata()
    assert a.equals(b)  # every column, scored_at and model version included
    rejects = [
        pq.read_table(tmp_path / d / "_rejects").sort_by("customer_id").to_pylist()
        for d in ("local", "spark")
    ]
    assert rejects[0] == rejects[1] and [r["column"] for r in rejects[0]] == ["plan"] * 3
    assert on_spark.success["rejects"]["plan"]["rows"] == 3
    assert (tmp_path / "spark" / "_SUCCESS").is_file() and not list(tmp_path.glob(".spark.prodml-*"))

    # the online server, on the same rows
    rows = trained.table.slice(10, 200)  # clean rows (3 and 500 are rejected)
    features = [n for n in rows.column_names if n != "customer_id"]
    env = {"PRODML_TRACKING_URI": trained.tracking, "PRODML_ADMIN_TOKEN": "t"}
    with ServeProcess(trained.root, env, "--no-log-requests", "--grpc-port", "0") as server:
        server.wait_ready(timeout=90)
        answer = httpx.post(f"{server.url}/predict", json=rows.select(features).to_pylist(), timeout=30)
    assert answer.status_code == 200, answer.text
    online = answer.json()
    online = online["predictions"] if isinstance(online, dict) else online
    by_id = {r["customer_id"]: r for r in b.to_pylist()}
    ids = rows.column("customer_id").to_pylist()
    assert [by_id[i]["prediction"] for i in ids] == [p["label"] for p in online]
    # the server runs a lone 200-row request on its multi-threaded session, which sums the trees in
    # another order: equal up to float32 rounding (seen: 1.2e-7 on 2 of 200 rows)
    assert [by_id[i]["probability_1"] for i in ids] == pytest.approx(
        [p["probability"] for p in online], abs=1e-6
    )


def test_spark_partitioned_output_matches_the_local_layout(
    trained: Trained, tmp_path: Path, spark: Any
) -> None:
    source = trained.write(tmp_path / "in.parquet", row_group_size=1_000)
    common = {"package": trained.package, "id_column": "customer_id", "scored_at": AT, "partition_by": "plan"}
    score(str(source), str(tmp_path / "local"), **common)  # type: ignore[arg-type]
    score(str(source), str(tmp_path / "spark"), engine="spark", **common)  # type: ignore[arg-type]
    layout = [sorted(p.name for p in (tmp_path / d).iterdir() if p.is_dir()) for d in ("local", "spark")]
    assert (
        layout[0] == layout[1] == sorted(f"plan={p}" for p in set(trained.table.column("plan").to_pylist()))
    )
    assert read(tmp_path / "local").equals(read(tmp_path / "spark"))


def test_executors_verify_the_package_digests(trained: Trained, tmp_path: Path, spark: Any) -> None:
    source = open_input(str(trained.write(tmp_path / "in.parquet", rows=100)))
    model = resolve_model(ref=None, package_dir=trained.package, tracking_uri=None, cache_dir=tmp_path)
    model.package.digests = {**model.package.digests, "model.onnx": "0" * 64}  # as if the file were altered
    plan = Plan(source, model, "parquet", "customer_id", None, 0.01, 1_000, AT, 2)
    staging = Staging(str(tmp_path / "out"))
    staging.begin()
    with pytest.raises(TamperedArtifact, match=r"model\.onnx does not match its recorded sha256"):
        run_spark(plan, staging)
    staging.abort()
