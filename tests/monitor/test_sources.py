"""Sources and windows: the server's request log (with feedback joined), Parquet/CSV paths, windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodml.core.errors import ConfigError, SourceNotFound
from prodml.core.project import load_project
from prodml.export.drift import PREDICTION
from prodml.monitor.sources import load, request_log
from prodml.monitor.windows import parse_every, split
from tests.monitor.conftest import DAY, T0, log_traffic, score, world


def test_request_log_rows_predictions_and_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = world(rng, 500)
    labels = (rng.random(500) < score(frame)).astype(float)
    log_traffic(tmp_path, frame, start=T0, seconds_per_request=60, labels=labels)
    got = request_log(tmp_path)
    assert len(got) == 500
    assert list(got["age"][:3]) == list(frame["age"][:3])
    assert list(got["plan"][:3]) == list(frame["plan"][:3])
    assert np.allclose(got[PREDICTION], score(frame), atol=1e-6)
    assert got["ts"].iloc[0] == T0 and got["ts"].iloc[-1] == T0 + 49 * 60
    # each request's label reaches every row of the request (joined by request id)
    assert got["label"].notna().all()
    assert (got["version"] == "1").all()


def test_a_missing_request_log_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="no request log") as info:
        request_log(tmp_path / "nothing")
    assert "send traffic" in (info.value.hint or "")


def test_parquet_and_csv_paths_with_a_prediction_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = world(rng, 100)
    frame["prediction"] = score(frame)
    frame["timestamp"] = pd.date_range("2026-01-01", periods=100, freq="h")
    frame.to_parquet(tmp_path / "scored.parquet")
    frame.to_csv(tmp_path / "scored.csv", index=False)
    for name in ("scored.parquet", "scored.csv"):
        got = load(str(tmp_path / name), None)
        assert np.allclose(got[PREDICTION], frame["prediction"])
        assert got["ts"].iloc[1] - got["ts"].iloc[0] == pytest.approx(3600)


def test_project_source_by_name(project_dir: Path) -> None:
    rng = np.random.default_rng(3)
    (project_dir / "data").mkdir(exist_ok=True)
    world(rng, 50).to_parquet(project_dir / "data" / "t.parquet")
    got = load("source:t", load_project(project_dir))
    assert len(got) == 50 and "plan" in got


def test_windows_by_time_and_by_rows() -> None:
    frame = pd.DataFrame({"ts": T0 + np.arange(0, 10 * DAY, DAY / 4), "x": 1.0})  # 40 rows, 10 days
    windows = split(frame, "3d")
    assert [len(w.rows) for w in windows] == [4, 12, 12, 12]  # the newest window is whole
    assert windows[-1].end == pytest.approx(frame["ts"].max())
    by_rows = split(frame, 15)
    assert [len(w.rows) for w in by_rows] == [10, 15, 15]
    assert parse_every("12h") == ("time", 43_200.0)
    assert parse_every("5000rows") == ("rows", 5000)


def test_bad_windows_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="not a window"):
        parse_every("soon")
    with pytest.raises(ConfigError, match="needs timestamps"):
        split(pd.DataFrame({"x": [1.0]}), "1d")


def test_the_kafka_source_needs_its_settings_and_a_broker_that_answers(project_dir: Path) -> None:
    from prodml.core.errors import DataError, Unavailable
    from tests.servers import free_port

    project = load_project(project_dir, environ={})
    with pytest.raises(DataError, match=r"serve\.request_log\.kafka"):
        load("kafka", project)
    nobody = {"PRODML_SERVE__REQUEST_LOG__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    with pytest.raises(Unavailable, match="did not answer"):
        load("requests", load_project(project_dir, environ=nobody))  # the default source follows the log
