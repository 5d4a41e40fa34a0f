"""Skew: served vectors recomputed offline; a fresh store shows none, a stale one or a client's values do."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from prodml.cli.main import app
from prodml.core.errors import DataError
from prodml.core.project import Project
from prodml.data.online_store import OnlineFeatures, SQLiteStore
from prodml.data.sources import Catalog
from prodml.features.materialize import materialize
from prodml.features.skew import read_served, skew_report

T1, T2 = datetime(2025, 6, 1, 12), datetime(2025, 6, 15, 6)
STRINGS = ["plan", "country"]


def _served(project: Project, tmp_path: Path, served_at: datetime, rows: int = 60) -> pa.Table:
    """What a server logs for requests by entity id at ``served_at``, from a store materialised at T1:
    the key, ``ts`` in epoch seconds and the model's inputs as float32 numbers and strings."""
    store = SQLiteStore(tmp_path / "online.sqlite")
    result = materialize(Catalog(project), store, as_of=T1)
    numbers = [n for n in result.features if n not in STRINGS]
    online = OnlineFeatures(store, entity="customer_id", numbers=numbers, strings=STRINGS)
    keys = [int(k) for k in store.keys()[:rows]]
    columns, _ = online.join({"customer_id": keys})
    ts = served_at.replace(tzinfo=UTC).timestamp()
    table = {"request_id": [f"r{i}" for i in range(len(keys))], "ts": [ts] * len(keys), "customer_id": keys}
    table |= {n: pa.array(np.asarray(columns[n], np.float32)) for n in numbers}
    table |= {s: columns[s].tolist() for s in STRINGS}
    table["prediction"] = [0.5] * len(keys)
    return pa.table(table)


def test_a_fresh_store_served_at_its_time_shows_no_skew(churn_project: Project, tmp_path: Path) -> None:
    report = skew_report(Catalog(churn_project), _served(churn_project, tmp_path, T1))
    assert report.rows == 60
    assert len(report.features) == 27
    assert [f.name for f in report.features if f.differing] == []
    assert report.worst() == 0.0
    assert report.skipped == ["request_id", "prediction"]


def test_a_stale_store_shows_skew_in_the_windows_not_in_the_attributes(
    churn_project: Project, tmp_path: Path
) -> None:
    report = skew_report(Catalog(churn_project), _served(churn_project, tmp_path, T2))
    by_name = {f.name: f for f in report.features}
    since_last = by_name["sessions_days_since_last"]
    assert since_last.share > 0.5  # two weeks later: 13.75 days more, or less for a new session
    assert since_last.max_abs == pytest.approx(13.75, abs=1e-3)
    assert by_name["sessions_count_7d"].differing > 0
    assert by_name["plan"].differing == by_name["age"].differing == 0
    assert set(since_last.examples[0]) == {"customer_id", "ts", "served", "offline"}


def test_a_value_the_client_changed_is_reported_with_the_entity(
    churn_project: Project, tmp_path: Path
) -> None:
    served = _served(churn_project, tmp_path, T1)
    plans = served.column("plan").to_pylist()
    plans[3] = "enterprise" if plans[3] != "enterprise" else "basic"
    ages = served.column("age").to_numpy().copy()
    ages[7] += 1
    served = served.set_column(served.schema.get_field_index("plan"), "plan", pa.array(plans))
    served = served.set_column(served.schema.get_field_index("age"), "age", pa.array(ages))
    report = skew_report(Catalog(churn_project), served)
    by_name = {f.name: f for f in report.features}
    assert [f.name for f in report.features if f.differing] == ["plan", "age"]
    assert by_name["plan"].examples[0]["customer_id"] == served.column("customer_id")[3].as_py()
    assert by_name["age"].max_abs == 1.0


def test_served_rows_without_the_entity_key_name_the_fix(churn_project: Project, tmp_path: Path) -> None:
    served = _served(churn_project, tmp_path, T1).drop_columns(["customer_id"])
    with pytest.raises(DataError, match="no 'customer_id' column") as info:
        skew_report(Catalog(churn_project), served)
    assert "log the entity key" in (info.value.hint or "")
    with pytest.raises(DataError, match="no served rows"):
        read_served(tmp_path / "nothing")


def test_the_cli_reads_the_request_log_and_fails_on_skew(churn_dir: Path, churn_project: Project) -> None:
    parts = churn_dir / ".prodml" / "requests" / "requests"
    parts.mkdir(parents=True)
    pq.write_table(_served(churn_project, churn_dir / "tmp", T1), parts / "part-1.parquet")
    runner = CliRunner()
    ok = runner.invoke(app, ["--project", str(churn_dir), "features", "skew"])
    assert ok.exit_code == 0, ok.output
    assert "60 served rows" in ok.output
    pq.write_table(_served(churn_project, churn_dir / "tmp2", T2), parts / "part-1.parquet")
    report = churn_dir / "skew.json"
    stale = runner.invoke(app, ["--project", str(churn_dir), "features", "skew", "--output", str(report)])
    assert stale.exit_code == 3, stale.output
    assert "skew:" in stale.output and "% of rows" in stale.output
    written = json.loads(report.read_text())
    assert written["rows"] == 60 and {f["name"] for f in written["features"] if f["differing"]}
    tolerant = runner.invoke(app, ["--project", str(churn_dir), "features", "skew", "--max-share", "1.0"])
    assert tolerant.exit_code == 0, tolerant.output
