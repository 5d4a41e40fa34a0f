"""``prodml.batch.score`` on the local engine: outputs, rejects, formats, partitions, idempotence."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.orc as paorc
import pyarrow.parquet as pq
import pytest
from pyarrow import csv as pacsv

from prodml.batch import score
from prodml.batch.demo import score_latest
from prodml.batch.rejects import TooManyRejects
from prodml.core.errors import ConfigError
from tests.batch.conftest import Trained

AT = datetime(2026, 12, 1, tzinfo=UTC)


def read(output: Path, fmt: str = "parquet") -> pa.Table:
    file_format = ds.CsvFileFormat() if fmt == "csv" else fmt
    return ds.dataset(output, format=file_format, partitioning="hive").to_table().sort_by("customer_id")


def files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def test_scores_every_row_with_success_marker_and_profile(trained: Trained, tmp_path: Path) -> None:
    source = trained.write(tmp_path / "in.parquet", row_group_size=500)
    seen: list[int] = []
    result = score(
        str(source),
        str(tmp_path / "out"),
        project=trained.project,
        tracking_uri=trained.tracking,
        batch_rows=700,
        on_progress=seen.append,
    )
    assert result.rows == result.scored == trained.table.num_rows and result.rejected == 0
    assert sum(seen) == result.rows
    out = read(tmp_path / "out")
    assert out.column("customer_id").to_pylist() == sorted(trained.table.column("customer_id").to_pylist())
    assert out.column_names == [
        "customer_id",
        "prediction",
        "probability_0",
        "probability_1",
        "model_version",
        "scored_at",
    ]
    assert set(out.column("model_version").to_pylist()) == {"1"}
    success = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert success["rows"] == trained.table.num_rows and success["model"] == {
        "name": "churn",
        "version": "1",
        "sha256": success["model"]["sha256"],
    }
    assert len(success["input"]["fingerprint"]) == 64 and success["engine"] == "local"
    assert set(success["timings_s"]) >= {"model", "score", "total"}
    profile = json.loads((tmp_path / "out" / "_profile.json").read_text())
    assert profile["features"]["plan"]["kind"] == "categorical" and profile["prediction"]["kind"] == "numeric"
    assert result.profile_path is not None and result.profile_path.is_file()  # where the monitor reads it
    assert [p.name for p in tmp_path.iterdir()] == ["in.parquet", "out"] or sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["in.parquet", "out"]


def test_rerun_gives_identical_output(trained: Trained, tmp_path: Path) -> None:
    source = trained.write(tmp_path / "in.parquet")
    kwargs = {"package": trained.package, "scored_at": AT, "batch_rows": 1000}
    score(str(source), str(tmp_path / "out"), **kwargs)  # type: ignore[arg-type]
    first = files(tmp_path / "out")
    score(str(source), str(tmp_path / "out"), **kwargs)  # type: ignore[arg-type]
    second = files(tmp_path / "out")
    assert first.keys() == second.keys()
    assert {k: v for k, v in first.items() if k != "_SUCCESS"} == {
        k: v for k, v in second.items() if k != "_SUCCESS"
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "out"]  # no temporary directory


def _with_bad_rows(trained: Trained, bad: int) -> pa.Table:
    table = trained.table
    plan = table.column("plan").to_pylist()
    for i in range(bad):
        plan[i * 7] = "platinum"
    return table.set_column(table.schema.get_field_index("plan"), "plan", pa.array(plan))


def test_rejects_are_written_and_reported(trained: Trained, tmp_path: Path) -> None:
    pq.write_table(_with_bad_rows(trained, 20), tmp_path / "in.parquet")
    result = score(
        str(tmp_path / "in.parquet"), str(tmp_path / "out"), package=trained.package, id_column="customer_id"
    )
    assert result.rejected == 20 and result.scored == trained.table.num_rows - 20
    rejects = pq.read_table(tmp_path / "out" / "_rejects").to_pylist()
    ids = trained.table.column("customer_id").to_pylist()
    assert [r["customer_id"] for r in rejects] == [ids[i * 7] for i in range(20)]
    assert {r["column"] for r in rejects} == {"plan"} and "platinum" in rejects[0]["reason"]
    report = result.success["rejects"]["plan"]
    assert report["rows"] == 20 and report["sample_ids"] == [ids[i * 7] for i in range(5)]
    assert set(read(tmp_path / "out").column("customer_id").to_pylist()).isdisjoint(
        r["customer_id"] for r in rejects
    )


def test_reject_rate_limit_fails_and_keeps_the_previous_output(trained: Trained, tmp_path: Path) -> None:
    trained.write(tmp_path / "good.parquet")
    score(
        str(tmp_path / "good.parquet"),
        str(tmp_path / "out"),
        package=trained.package,
        id_column="customer_id",
    )
    before = files(tmp_path / "out")
    pq.write_table(_with_bad_rows(trained, 60), tmp_path / "bad.parquet")  # 2% of 3,000
    with pytest.raises(TooManyRejects) as info:
        score(
            str(tmp_path / "bad.parquet"),
            str(tmp_path / "out"),
            package=trained.package,
            id_column="customer_id",
        )
    message = str(info.value)
    assert "60 of 3000 rows (2.00%)" in message and "limit of 1.00%" in message and "plan" in message
    assert "--max-reject-rate" in message
    assert info.value.exit_code == 3
    assert files(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet", "good.parquet", "out"]
    ok = score(
        str(tmp_path / "bad.parquet"),
        str(tmp_path / "out"),
        package=trained.package,
        id_column="customer_id",
        max_reject_rate=0.05,
    )
    assert ok.rejected == 60


@pytest.mark.parametrize("fmt", ["orc", "csv"])
def test_orc_and_csv_round_trips(trained: Trained, tmp_path: Path, fmt: str) -> None:
    trained.write(tmp_path / "in.parquet")
    score(
        str(tmp_path / "in.parquet"),
        str(tmp_path / "ref"),
        package=trained.package,
        id_column="customer_id",
        scored_at=AT,
    )
    source = tmp_path / f"in.{fmt}"
    if fmt == "orc":
        paorc.write_table(trained.table, source)
    else:
        pacsv.write_csv(trained.table, source)
    result = score(
        str(source), str(tmp_path / "out"), package=trained.package, id_column="customer_id", scored_at=AT
    )
    assert result.success["output"]["format"] == fmt and (tmp_path / "out" / f"part-00000.{fmt}").is_file()
    out, ref = read(tmp_path / "out", fmt), read(tmp_path / "ref")
    assert out.column("customer_id").to_pylist() == ref.column("customer_id").to_pylist()
    assert out.column("prediction").to_pylist() == ref.column("prediction").to_pylist()
    assert out.column("probability_1").to_pylist() == pytest.approx(
        ref.column("probability_1").to_pylist(), abs=1e-15
    )


def test_partitioned_output(trained: Trained, tmp_path: Path) -> None:
    trained.write(tmp_path / "in.parquet")
    score(
        str(tmp_path / "in.parquet"),
        str(tmp_path / "out"),
        package=trained.package,
        id_column="customer_id",
        partition_by="plan",
    )
    plans = set(trained.table.column("plan").to_pylist())
    assert {p.name for p in (tmp_path / "out").iterdir() if p.is_dir()} == {f"plan={p}" for p in plans}
    out = read(tmp_path / "out")
    assert out.num_rows == trained.table.num_rows
    by_id = dict(
        zip(
            trained.table.column("customer_id").to_pylist(),
            trained.table.column("plan").to_pylist(),
            strict=True,
        )
    )
    assert all(
        by_id[i] == p
        for i, p in zip(out.column("customer_id").to_pylist(), out.column("plan").to_pylist(), strict=True)
    )


def test_input_the_model_cannot_take_is_refused(trained: Trained, tmp_path: Path) -> None:
    pq.write_table(trained.table.drop_columns(["age"]), tmp_path / "in.parquet")
    with pytest.raises(ConfigError, match="column 'age' is missing"):
        score(str(tmp_path / "in.parquet"), str(tmp_path / "out"), package=trained.package)
    with pytest.raises(ConfigError, match="--id-column 'nope' is not a column"):
        score(
            str(trained.write(tmp_path / "ok.parquet")),
            str(tmp_path / "out"),
            package=trained.package,
            id_column="nope",
        )
    assert not (tmp_path / "out").exists()


def test_demo_step_scores_the_latest_customers(trained: Trained) -> None:
    result = score_latest(trained.project, tracking_uri=trained.tracking)
    frame = pq.read_table(trained.root / ".prodml/features/training.parquet")
    assert result.rows == len(set(frame.column("customer_id").to_pylist())) == result.scored
    assert (trained.root / ".prodml/batch/latest/_SUCCESS").is_file()


def test_public_api() -> None:
    import prodml.batch

    assert prodml.batch.__all__ == ["BatchResult", "score"]
