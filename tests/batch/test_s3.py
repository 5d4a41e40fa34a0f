"""S3 input and output against the test S3 server (moto)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from prodml.batch import score
from tests.batch.conftest import Trained

pytestmark = pytest.mark.integration


def test_s3_input_and_output(
    trained: Trained, tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="batch-tests")
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http")
    for part in range(2):
        with fs.open_output_stream(f"batch-tests/in/part-{part}.parquet") as out:
            pq.write_table(trained.table.slice(part * 1_500, 1_500), out)
    kwargs = {
        "package": trained.package,
        "id_column": "customer_id",
        "scored_at": datetime(2026, 12, 1, tzinfo=UTC),
    }
    result = score("s3://batch-tests/in/", "s3://batch-tests/scores/today", **kwargs)  # type: ignore[arg-type]
    assert result.rows == result.scored == trained.table.num_rows and result.success["input"]["files"] == 2
    local = score(str(trained.write(tmp_path / "in.parquet")), str(tmp_path / "out"), **kwargs)  # type: ignore[arg-type]
    assert local.rows == result.rows
    listed = fs.get_file_info(pafs.FileSelector("batch-tests/scores", recursive=True))
    names = sorted(i.path for i in listed if i.is_file)
    assert names == [
        "batch-tests/scores/today/_SUCCESS",
        "batch-tests/scores/today/_profile.json",
        "batch-tests/scores/today/part-00000.parquet",
    ]  # no temporary prefix left
    with fs.open_input_file("batch-tests/scores/today/part-00000.parquet") as f:
        remote = pq.read_table(f)
    assert remote.equals(pq.read_table(tmp_path / "out" / "part-00000.parquet"))
    with fs.open_input_stream("batch-tests/scores/today/_SUCCESS") as f:
        assert json.loads(f.read())["rows"] == trained.table.num_rows
    again = score("s3://batch-tests/in/", "s3://batch-tests/scores/today", **kwargs)  # type: ignore[arg-type]
    assert again.success["input"]["fingerprint"] == result.success["input"]["fingerprint"]
