"""``prodml batch score`` in-process: the summary, the exit codes, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from prodml.cli import app
from prodml.cli.batch import parse_rate
from prodml.core.errors import ConfigError
from tests.batch.conftest import Trained

runner = CliRunner()


def run(*args: str | Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args], env=env)


def test_score_prints_a_summary_and_writes_the_output(trained: Trained, tmp_path: Path) -> None:
    source = trained.write(tmp_path / "in.parquet")
    result = run(
        "--project", trained.root, "batch", "score", "--input", source, "--output", tmp_path / "out",
        "--model", "churn/1", "--format", "csv", "--scored-at", "2026-12-01T00:00:00+00:00",
        env={"PRODML_TRACKING_URI": trained.tracking},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "churn v1" in result.stdout and "3,000" in result.stdout and "rows/s end to end" in result.stdout
    success = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert success["scored_at"] == "2026-12-01T00:00:00+00:00" and success["output"]["format"] == "csv"
    assert (tmp_path / "out" / "part-00000.csv").read_text().startswith('"customer_id","prediction"')


def test_reject_rate_exit_3_and_bad_options_exit_2(trained: Trained, tmp_path: Path) -> None:
    table = trained.table
    plans = table.column("plan").to_pylist()
    plans[:100] = ["gold"] * 100
    pq.write_table(
        table.set_column(table.schema.get_field_index("plan"), "plan", pa.array(plans)),
        tmp_path / "in.parquet",
    )
    args = [
        "batch",
        "score",
        "--input",
        tmp_path / "in.parquet",
        "--output",
        tmp_path / "out",
        "--package",
        trained.package,
    ]
    result = run(*args, "--id-column", "customer_id")
    assert result.exit_code == 3
    assert "100 of 3000 rows" in result.stderr and "unknown category 'gold'" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
    result = run(*args, "--max-reject-rate", "5%")
    assert result.exit_code == 0, result.output
    assert "rejects: plan" in result.stdout
    assert run(*args, "--max-reject-rate", "lots").exit_code == 2
    missing = run(
        "batch",
        "score",
        "--input",
        tmp_path / "none-*.parquet",
        "--output",
        tmp_path / "o",
        "--package",
        trained.package,
    )
    assert missing.exit_code == 4 and "no input file matches" in missing.stderr


def test_parse_rate() -> None:
    assert parse_rate("1%") == pytest.approx(0.01) and parse_rate("0.2") == pytest.approx(0.2)
    with pytest.raises(ConfigError):
        parse_rate("150%")
