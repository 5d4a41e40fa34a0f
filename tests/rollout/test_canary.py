"""Canary rollouts against two real server replicas, with the controller as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rollout.conftest import Replicas, Versions, load, reset, versions_served, wait_for_version

pytestmark = pytest.mark.integration


def rollout(versions: Versions, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("prodml")
    return subprocess.run(
        [str(exe), "--project", str(versions.root), "rollout", *args],
        env={**os.environ, **versions.env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def replica_args(replicas: Replicas) -> list[str]:
    args = []
    for url, admin in zip(replicas.urls, replicas.admin_urls, strict=True):
        args += ["--replica", url, "--admin", admin]
    return args


def test_a_passing_canary_is_promoted_and_rollback_returns_every_replica(
    versions: Versions, replicas: Replicas
) -> None:
    reset(versions)
    replicas.reload()
    with load(replicas, versions.rows) as running:
        done = rollout(
            versions,
            "canary",
            "2",
            "--steps",
            "50,100",
            "--interval",
            "2s",
            "--min-requests",
            "10",
            "--max-error-rate",
            "1%",
            *replica_args(replicas),
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promoted" in done.stdout
    assert running.statuses and set(running.statuses) == {200}  # no request failed during the rollout
    store = versions.store()
    assert store.registry.alias_version(versions.name, "champion").version == "2"
    assert store.registry.alias_version(versions.name, "previous").version == "1"
    wait_for_version(replicas, versions.rows, "2")
    assert set(versions_served(replicas, versions.rows, 500)) == {"2"}  # every one of 500 responses

    events = [e.action for e in store.events()]
    assert "canary started" in events and "promoted" in events
    history = rollout(versions, "history")
    assert history.returncode == 0 and "promoted" in history.stdout

    back = rollout(versions, "rollback", "--why", "test: back to the previous version")
    assert back.returncode == 0, back.stderr
    replicas.reload()
    wait_for_version(replicas, versions.rows, "1")  # both replicas: requests alternate between them
    assert set(versions_served(replicas, versions.rows, 200)) == {"1"}
    assert store.registry.alias_version(versions.name, "champion").version == "1"


def test_a_canary_whose_predictions_shift_is_rolled_back(versions: Versions, replicas: Replicas) -> None:
    reset(versions)
    replicas.reload()
    with load(replicas, versions.rows) as running:
        done = rollout(
            versions,
            "canary",
            "2",
            "--steps",
            "50,100",
            "--interval",
            "2s",
            "--min-requests",
            "10",
            "--max-prediction-shift",
            "0.0001",  # version 2 predicts differently: any window fails
            "--failures",
            "2",
            *replica_args(replicas),
        )
    assert done.returncode == 12, done.stdout + done.stderr
    assert "rolled back" in done.stdout
    assert set(running.statuses) == {200}
    store = versions.store()
    spec = store.read()
    assert spec is not None and [v.version for v in spec.variants] == ["1"]
    assert spec.rollout is not None and spec.rollout["status"] == "rolled back"
    assert store.registry.alias_version(versions.name, "champion").version == "1"
    last = store.events()[-1]
    assert last.action == "rolled back" and "PSI" in last.why and "prediction_psi" in last.evidence
    wait_for_version(replicas, versions.rows, "1")
    assert set(versions_served(replicas, versions.rows, 200)) == {"1"}  # no request reaches the canary


def test_a_canary_without_metrics_never_promotes(versions: Versions, replicas: Replicas) -> None:
    reset(versions)
    done = rollout(
        versions,
        "canary",
        "2",
        "--steps",
        "100",
        "--interval",
        "1s",
        "--failures",
        "2",
        "--replica",
        replicas.urls[0],
        "--replica",
        "http://127.0.0.1:9",  # nothing listens: its metrics are missing
    )
    assert done.returncode == 12, done.stdout + done.stderr
    assert "no metrics from http://127.0.0.1:9" in versions.store().events()[-1].why
    assert versions.store().registry.alias_version(versions.name, "champion").version == "1"
