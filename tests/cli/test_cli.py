"""The CLI in-process: every command, its output, its exit codes, and no tracebacks."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from prodml.cli import app
from tests.conftest import edit_project

runner = CliRunner()


def run(*args: str | Path):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("prodml ")
    result = run("--help")
    assert result.exit_code == 0
    for command in ("init", "demo", "data", "features"):
        assert command in result.stdout


@pytest.mark.parametrize("example", ["churn", "breast-cancer", "diabetes"])
def test_init_then_validate_then_build(tmp_path: Path, example: str) -> None:
    result = run("init", tmp_path, "--example", example, "--customers", "200", "--days", "160")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "prodml.yaml").exists()
    result = run("--project", tmp_path, "data", "validate")
    assert result.exit_code == 0, result.output
    assert "all contracts hold" in result.stdout
    report = json.loads((tmp_path / ".prodml/reports/validation.json").read_text())
    assert report["ok"] is True
    assert (tmp_path / ".prodml/reports/validation.html").read_text().startswith("<!doctype html>")
    result = run("--project", tmp_path, "features", "build")
    assert result.exit_code == 0, result.output
    frame = pq.read_table(tmp_path / ".prodml/features/training.parquet")
    assert frame.num_rows > 100
    lineage = json.loads((tmp_path / ".prodml/features/training.lineage.json").read_text())
    assert json.loads(frame.schema.metadata[b"prodml.lineage"])["hash"] == lineage["hash"]


def test_init_refuses_to_overwrite(churn_dir: Path) -> None:
    result = run("init", churn_dir)
    assert result.exit_code == 2
    assert "already exists" in result.stderr and "--force" in result.stderr


def test_violations_exit_3_with_a_table(churn_dir: Path) -> None:
    text = (churn_dir / "prodml.yaml").read_text().replace("max: 120", "max: 40")
    (churn_dir / "prodml.yaml").write_text(text)
    result = run("--project", churn_dir, "data", "validate", "--source", "customers")
    assert result.exit_code == 3
    assert "contract violated" in result.stdout
    assert "age" in result.stdout and "max" in result.stdout
    report = json.loads((churn_dir / ".prodml/reports/validation.json").read_text())
    assert report["violations"][0]["rule"] == "max"
    assert report["violations"][0]["sample"]  # customer ids of offending rows


def test_config_error_exit_2_without_traceback(churn_dir: Path) -> None:
    path = churn_dir / "prodml.yaml"
    path.write_text(path.read_text().replace("task: binary", "tsak: binary"))
    result = run("--project", churn_dir, "data", "validate")
    assert result.exit_code == 2
    assert "unknown key 'tsak' — did you mean 'task'?" in result.stderr
    assert "Traceback" not in result.output
    debug = run("--project", churn_dir, "--debug", "data", "validate")
    assert debug.exit_code == 2
    assert "Traceback" in debug.stderr


def test_missing_data_file_exit_4_and_no_partial_output(churn_dir: Path) -> None:
    (churn_dir / "data/sessions.parquet").unlink()
    result = run("--project", churn_dir, "features", "build")
    assert result.exit_code == 4
    assert "source 'sessions': no file matches" in result.stderr
    assert not (churn_dir / ".prodml/features").exists()


def test_unreadable_parquet_and_absent_contract_column(churn_dir: Path) -> None:
    (churn_dir / "data/tickets.parquet").write_bytes(b"garbage")
    result = run("--project", churn_dir, "features", "build")
    assert result.exit_code == 4
    assert "cannot read" in result.stderr and "parquet" in result.stderr
    path = churn_dir / "prodml.yaml"
    path.write_text(path.read_text().replace("      email: {", "      e_mail: {"))
    result = run("--project", churn_dir, "data", "validate", "-s", "customers")
    assert result.exit_code == 3
    assert "e_mail" in result.stdout and "present" in result.stdout


def test_no_project_file(tmp_path: Path) -> None:
    result = run("--project", tmp_path, "features", "build")
    assert result.exit_code == 2
    assert "prodml init" in result.stderr


def test_simulate(tmp_path: Path) -> None:
    result = run(
        "data",
        "simulate",
        "--out",
        tmp_path,
        "--customers",
        "100",
        "--days",
        "120",
        "--seed",
        "1",
        "--drift",
        "0.5",
        "--drift-start",
        "60",
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "customers.parquet",
        "labels.parquet",
        "payments.parquet",
        "sessions.parquet",
        "tickets.parquet",
    ]
    assert run("data", "simulate", "--out", tmp_path, "--drift", "3").exit_code == 2


def test_profile_writes_a_contract_that_validates(churn_dir: Path) -> None:
    result = run("--project", churn_dir, "data", "profile", "-s", "customers", "--write-contract")
    assert result.exit_code == 0, result.output
    assert "customers: 400 rows" in result.stdout
    import yaml

    inferred = yaml.safe_load((churn_dir / "contract.inferred.yaml").read_text())["contract"]
    assert inferred["customers"]["columns"]["customer_id"]["unique"] is True
    edit_project(churn_dir, contract=inferred)
    assert run("--project", churn_dir, "data", "validate").exit_code == 0


def test_query_prints_and_writes(churn_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.parquet"
    result = run(
        "--project",
        churn_dir,
        "data",
        "query",
        "SELECT plan, count(*) AS n FROM customers GROUP BY plan ORDER BY plan",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "basic" in result.stdout
    assert pq.read_table(out).column("plan").to_pylist() == ["basic", "enterprise", "pro"]
    bad = run("--project", churn_dir, "data", "query", "SELECT nope FROM customers")
    assert bad.exit_code == 4
    assert "the SQL failed" in bad.stderr


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    args = ["demo", "--dir", str(tmp_path / "d"), "--customers", "300", "--days", "150"]
    result = runner.invoke(app, args, env={"COLUMNS": "400"})  # wide: one line per table row
    assert result.exit_code == 0, result.output
    for step in ("simulate", "validate", "features", "rollout"):
        assert step in result.stdout
    import re

    rolled = re.search(r"then canaried: (promoted|rolled back)", result.stdout)
    assert not rolled or rolled.group(1) == "promoted" or "fail: " in result.stdout  # with its evidence
    skipped = "skipped: no new version passed the gate" in result.stdout
    assert rolled or skipped, result.stdout  # the retrained version went out, or the gate said why not
    if rolled:
        assert "analysis windows" in result.stdout
    assert (tmp_path / "d/.prodml/features/training.parquet").exists()


def test_serve_refuses_model_and_package_together(churn_dir: Path, tmp_path: Path) -> None:
    result = run("--project", churn_dir, "serve", "--model", "churn@champion", "--package", tmp_path)
    assert result.exit_code == 2
    assert "give --model or --package, not both" in result.stderr


def test_models_commands_name_what_is_missing(churn_dir: Path, tmp_path: Path) -> None:
    env = {"PRODML_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = runner.invoke(app, ["--project", str(churn_dir), "models", "show", "nothing@champion"], env=env)
    assert result.exit_code == 6
    assert "Traceback" not in result.output
    bad_ref = runner.invoke(app, ["--project", str(churn_dir), "models", "show", "churn/latest"], env=env)
    assert bad_ref.exit_code == 2
    assert "is not a number" in bad_ref.stderr


def test_serve_options_are_checked_like_the_project_file(churn_dir: Path, tmp_path: Path) -> None:
    result = run("--project", churn_dir, "serve", "--package", tmp_path, "--workers", "0")
    assert result.exit_code == 2
    assert "--workers 0: Input should be greater than or equal to 1" in result.stderr


def test_init_from_a_table_prints_the_roles_and_next_step(tmp_path: Path) -> None:
    from tests.data.tables import accounts, write_csv

    table = write_csv(accounts(), tmp_path / "accounts.csv")
    result = run("init", tmp_path / "p", "--from", table, "--target", "churned")
    assert result.exit_code == 0, result.output
    assert "ID-like" in result.stdout and "prodml train" in result.stdout
    assert (tmp_path / "p/prodml.yaml").exists()
    missing = run("init", tmp_path / "q", "--from", table)
    assert missing.exit_code == 2 and "--target" in missing.stderr
    stray = run("init", tmp_path / "r", "--target", "churned")
    assert stray.exit_code == 2 and "go with --from" in stray.stderr
    typo = run("init", tmp_path / "s", "--from", table, "--target", "churn")
    assert typo.exit_code == 2 and "did you mean 'churned'" in typo.stderr
    assert "Traceback" not in typo.output


def test_validate_without_a_contract_says_nothing_was_checked(tmp_path: Path) -> None:
    from tests.data.tables import accounts, write_csv

    table = write_csv(accounts(), tmp_path / "accounts.csv")
    assert run("init", tmp_path / "p", "--from", table, "--target", "churned").exit_code == 0
    edit_project(tmp_path / "p", contract={})
    result = run("--project", tmp_path / "p", "data", "validate")
    assert result.exit_code == 0
    assert "nothing to check" in result.stdout and "declares no contract" in result.stdout
    assert "all contracts hold" not in result.stdout
    profiled = run("--project", tmp_path / "p", "data", "profile")
    assert profiled.exit_code == 0 and "240" in profiled.stdout and "~" not in profiled.stdout
