"""A/B: the request log records which variant answered (old logs read as primary); `prodml rollout ab`
and `ab-report` on a real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prodml.serve.reqlog import RequestLog, join_feedback
from prodml.serve.validation import NUMBERS
from tests.conftest import edit_project
from tests.rollout.conftest import Replicas, Versions, load, reset, versions_served
from tests.rollout.test_canary import rollout

LAYOUT = (("a", "b"), ())


def _record(log: RequestLog, request_id: str, variant: str | None) -> None:
    feeds = {NUMBERS: np.array([[1.0, 2.0]], np.float32)}
    outputs = [np.array([[0.3, 0.7]], np.float32)]
    if variant is None:  # the call as it was before variants: primary
        log.record(request_id, "churn", "1", feeds, outputs, 1.0, LAYOUT)
    else:
        log.record(request_id, "churn", "2", feeds, outputs, 1.0, LAYOUT, variant)


def test_each_row_carries_its_variant_and_labels_join_to_it(tmp_path: Path) -> None:
    log = RequestLog(tmp_path)
    _record(log, "r1", None)
    _record(log, "r2", "arm-b")
    _record(log, "r3", "canary")
    log.feedback("r2", 1)
    log.flush()
    table = join_feedback(tmp_path).sort_by("request_id").to_pydict()
    assert table["variant"] == ["primary", "arm-b", "canary"]
    assert table["label"] == [None, 1.0, None]


def test_a_log_written_before_the_variant_column_reads_as_primary(tmp_path: Path) -> None:
    (tmp_path / "requests").mkdir()
    old = pa.table({"request_id": ["old"], "row": [0], "ts": [1.0], "version": ["1"], "model": ["churn"]})
    pq.write_table(old, tmp_path / "requests" / "part-0-1-0.parquet")
    assert join_feedback(tmp_path).to_pydict()["variant"] == ["primary"]
    log = RequestLog(tmp_path)  # old and new parts side by side
    _record(log, "new", "arm-b")
    log.flush()
    rows = join_feedback(tmp_path).sort_by("request_id").to_pydict()
    assert rows["request_id"] == ["new", "old"]
    assert rows["variant"] == ["arm-b", "primary"]


def test_a_served_ab_split_logs_each_request_with_the_arm_that_answered(versions: Versions) -> None:
    """`prodml rollout ab` on a real server: every logged row names its arm, labels join to it, and
    `ab-report` compares the arms."""
    import httpx
    from typer.testing import CliRunner

    from prodml.cli import app
    from prodml.core.project import load_project
    from tests.rollout.conftest import TOKEN
    from tests.servers import ServeProcess

    def rollout(*args: str):  # type: ignore[no-untyped-def]
        result = CliRunner().invoke(
            app, ["--project", str(versions.root), "rollout", *args], env=versions.env
        )
        assert result.exit_code == 0, result.output
        return result.output

    reset(versions)
    rollout("ab", "2", "--split", "50", "--header", "x-user")
    spec = versions.store().read()
    assert spec is not None and [(v.name, v.version, v.role) for v in spec.variants] == [
        ("a", "1", "primary"),
        ("b", "2", "arm"),
    ]
    directory = load_project(versions.root).state_dir / "requests"
    answered: dict[str, str] = {}
    try:
        with ServeProcess(versions.root, versions.env, "--poll", "1") as server:
            server.wait_ready()
            # readiness can come before the first spec check has applied the split: apply it now
            auth = {"authorization": f"Bearer {TOKEN}"}
            httpx.post(f"{server.admin_url}/admin/reload", headers=auth, timeout=30).raise_for_status()
            with httpx.Client(timeout=30) as client:
                for i in range(60):
                    r = client.post(
                        f"{server.url}/predict",
                        json={"records": [versions.rows[i]]},
                        headers={"x-user": f"user-{i}", "x-request-id": f"ab-log-{i}"},
                    )
                    assert r.status_code == 200, r.text
                    answered[r.headers["x-request-id"]] = r.json()["variant"]
                labels = [{"request_id": rid, "label": i % 2} for i, rid in enumerate(answered)]
                r = client.post(f"{server.url}/v2/models/{versions.name}/feedback", json=labels)
                assert r.status_code == 200, r.text
            assert server.stop() == 0  # the log is flushed at shutdown
        report = rollout("ab-report", "--metric", "accuracy")
    finally:
        reset(versions)
    assert "two-proportion z" in report and "recommendation: " in report
    assert set(answered.values()) == {"a", "b"}
    rows = [r for r in join_feedback(directory).to_pylist() if r["request_id"] in answered]
    assert {r["request_id"]: r["variant"] for r in rows} == answered
    assert sum(r["label"] is not None for r in rows) == 60


@pytest.mark.integration
def test_the_guardrail_stops_an_ab_test_whose_arm_b_errors(
    versions: Versions, replicas: Replicas, erroring: str
) -> None:
    reset(versions)
    replicas.reload()
    project_file = versions.root / "prodml.yaml"
    saved = project_file.read_text()
    edit_project(
        versions.root,
        rollout__interval_s=1.5,
        rollout__min_requests=5,
        rollout__failure_threshold=2,
        rollout__replicas=replicas.urls,
        rollout__admin_urls=replicas.admin_urls,
    )
    try:
        started = rollout(versions, "ab", erroring, "--split", "50")
        assert started.returncode == 0, started.stderr
        assert versions.store().current().active
        refused = rollout(versions, "canary", "2", "--no-wait")  # one rollout at a time
        assert refused.returncode == 2 and "already running" in refused.stderr
        with load(replicas, versions.rows) as running:
            watched = rollout(versions, "run", timeout=120)
        assert watched.returncode == 12, watched.stdout + watched.stderr
        assert "stopped by the guardrail" in watched.stdout
        assert 500 in running.statuses  # arm b really failed (what the guardrail is for)
    finally:
        project_file.write_text(saved)
    spec = versions.store().read()
    assert spec is not None and not spec.active and [v.version for v in spec.variants] == ["1"]
    stopped = versions.store().events()[-1]
    assert stopped.action == "stopped by the guardrail" and "error rate" in stopped.why
    assert versions.store().registry.alias_version(versions.name, "champion").version == "1"  # type: ignore[union-attr]
    replicas.reload()
    assert set(versions_served(replicas, versions.rows, 40)) == {"1"}


def test_an_ab_test_ends_with_promote_or_abort(versions: Versions) -> None:
    reset(versions)
    try:
        assert rollout(versions, "ab", "2", "--split", "30").returncode == 0
        ended = rollout(versions, "abort", "--why", "a stays")
        assert ended.returncode == 0, ended.stderr
        registry = versions.store().registry
        assert [v.version for v in versions.store().current().variants] == ["1"]
        assert registry.alias_version(versions.name, "champion").version == "1"  # type: ignore[union-attr]

        assert rollout(versions, "ab", "2", "--split", "30").returncode == 0
        won = rollout(versions, "promote", "--why", "b won the test")
        assert won.returncode == 0, won.stderr
        assert [v.version for v in versions.store().current().variants] == ["2"]
        assert registry.alias_version(versions.name, "champion").version == "2"  # type: ignore[union-attr]
        assert registry.alias_version(versions.name, "previous").version == "1"  # type: ignore[union-attr]
        assert [e.action for e in versions.store().events()[-2:]] == ["A/B of version 2 at 30%", "promoted"]
    finally:
        reset(versions)
