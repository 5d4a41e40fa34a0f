"""``prodml monitor report|check|rules`` end to end through the CLI, on real request logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from prodml.cli import app
from tests.conftest import edit_project
from tests.monitor.conftest import DAY, T0, log_traffic, score, world

runner = CliRunner()


def run(project_dir: Path, *args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["--project", str(project_dir), *map(str, args)])


def _traffic(project_dir: Path, drift: float, *, labels: bool = False) -> None:
    rng = np.random.default_rng(7)
    log = project_dir / ".prodml" / "requests"
    clean = world(rng, 4_000)
    y = (rng.random(4_000) < score(clean)).astype(float) if labels else None
    log_traffic(log, clean, start=T0, seconds_per_request=7 * DAY / 400, labels=y, tag="a")
    later = world(rng, 4_000, drift=drift)
    y2 = (rng.random(4_000) < score(later)).astype(float) if labels else None
    log_traffic(
        log, later, start=T0 + 7 * DAY, seconds_per_request=7 * DAY / 400, labels=y2, tag="b", version="2"
    )


def test_check_passes_on_clean_traffic(project_dir: Path) -> None:
    _traffic(project_dir, drift=0.0)
    result = run(project_dir, "monitor", "check", "--package", project_dir / "package")
    assert result.exit_code == 0, result.output
    assert "no threshold breached" in result.stdout


def test_check_exits_12_naming_the_drifted_features(project_dir: Path) -> None:
    _traffic(project_dir, drift=1.0)
    result = run(project_dir, "monitor", "check", "--package", project_dir / "package", "--window", "7d")
    assert result.exit_code == 12, result.output
    assert "age" in result.stderr and "sessions_30d" in result.stderr
    assert "country" not in result.stderr.split("window")[-1]


def test_report_writes_html_and_json_with_performance(project_dir: Path) -> None:
    _traffic(project_dir, drift=1.0, labels=True)
    result = run(project_dir, "monitor", "report", "--package", project_dir / "package", "--window", "7d")
    assert result.exit_code == 0, result.output
    summary = json.loads((project_dir / ".prodml/reports/monitor.json").read_text())
    assert summary["breached"] is True
    assert {b["feature"] for b in summary["breaches"]} >= {"age", "sessions_30d", "__prediction__"}
    assert [w["rows"] for w in summary["windows"]] == [4_000, 4_000]
    perf = {(p["window"], p["version"], p["metric"]): p for p in summary["performance"]}
    auc = [p for k, p in perf.items() if k[2] == "roc_auc"]
    assert len(auc) == 2 and all(p["low"] < p["value"] < p["high"] for p in auc)
    html = (project_dir / ".prodml/reports/monitor.html").read_text()
    assert html.count("<svg") >= 7  # 5 histograms + drift over time + performance metrics


def test_row_windows_default_to_monitor_window_rows(project_dir: Path) -> None:
    _traffic(project_dir, drift=1.0)
    result = run(project_dir, "monitor", "report", "--package", project_dir / "package")
    assert result.exit_code == 0, result.output
    summary = json.loads((project_dir / ".prodml/reports/monitor.json").read_text())
    assert len(summary["windows"]) == 4  # 8,000 rows in windows of monitor.window_rows = 2,000


def test_threshold_overrides_and_bad_ones(project_dir: Path) -> None:
    _traffic(project_dir, drift=1.0)
    off = ["-t", "psi=none", "-t", "ks=none", "-t", "out_of_range=none"]
    result = run(project_dir, "monitor", "check", "--package", project_dir / "package", *off)
    assert result.exit_code == 0, result.output
    bad = run(project_dir, "monitor", "check", "--package", project_dir / "package", "-t", "age:psy=1")
    assert bad.exit_code == 2
    assert "FEATURE:STAT=VALUE" in bad.stderr


def test_thresholds_declared_in_the_project(project_dir: Path) -> None:
    _traffic(project_dir, drift=1.0)
    package = project_dir / "package"
    edit_project(project_dir, monitor__thresholds={"*": {"psi": None, "ks": None, "out_of_range": None}})
    try:
        assert run(project_dir, "monitor", "check", "--package", package).exit_code == 0  # checks off
        one = {"*": {"psi": None, "ks": None, "out_of_range": None}, "age": {"psi": 0.05}}
        edit_project(project_dir, monitor__thresholds=one)
        result = run(project_dir, "monitor", "check", "--package", package)
        assert result.exit_code == 12 and "age" in result.stderr, result.output  # age's own threshold
        assert run(project_dir, "monitor", "check", "--package", package, "-t", "age:psi=none").exit_code == 0
        result = run(project_dir, "monitor", "rules")
        assert 'feature="age"} > 0.05' in (project_dir / ".prodml/monitor/prodml-drift-rules.yml").read_text()

        edit_project(project_dir, monitor__thresholds={"agee": {"psi": 0.3}})
        bad = run(project_dir, "monitor", "check", "--package", package)
        assert bad.exit_code == 2 and "unknown feature(s) agee" in bad.stderr and "age" in bad.stderr
        edit_project(project_dir, monitor__thresholds={"age": {"psy": 0.3}})
        bad = run(project_dir, "monitor", "check", "--package", package)
        assert bad.exit_code == 2 and "monitor.thresholds.age.psy" in bad.stderr, bad.output
    finally:
        edit_project(project_dir, monitor__thresholds={})


def test_no_request_log_is_a_clear_error(project_dir: Path) -> None:
    result = run(project_dir, "monitor", "report", "--package", project_dir / "package")
    assert result.exit_code == 4
    assert "no request log" in result.stderr and "Traceback" not in result.output


def test_rules_and_dashboard_are_written(project_dir: Path) -> None:
    result = run(project_dir, "monitor", "rules", "-t", "age:psi=0.3")
    assert result.exit_code == 0, result.output
    rules = (project_dir / ".prodml/monitor/prodml-drift-rules.yml").read_text()
    assert 'feature="age"} > 0.3' in rules
    board = json.loads((project_dir / ".prodml/monitor/grafana-drift.json").read_text())
    assert len(board["panels"]) == 8
