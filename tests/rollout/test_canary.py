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


def test_an_erroring_canary_is_rolled_back_after_n_failed_windows(
    versions: Versions, replicas: Replicas, erroring: str
) -> None:
    reset(versions)
    replicas.reload()
    with load(replicas, versions.rows) as running:
        done = rollout(
            versions,
            "canary",
            erroring,
            "--steps",
            "20,100",
            "--interval",
            "2s",
            "--min-requests",
            "5",
            "--failures",
            "3",
            *replica_args(replicas),
        )
    assert done.returncode == 12, done.stdout + done.stderr
    assert 500 in running.statuses and 200 in running.statuses  # the canary answered (and failed)
    store = versions.store()
    events = store.events()
    start = max(i for i, e in enumerate(events) if e.action == "canary started")
    decisions = [e.action for e in events[start + 1 :]]
    assert decisions == ["check failed (1 of 3)", "check failed (2 of 3)", "rolled back"]
    assert "error rate" in events[-1].why and events[-1].evidence["canary"]["server_errors"] > 0
    spec = store.read()
    assert spec is not None and [v.version for v in spec.variants] == ["1"]
    wait_for_version(replicas, versions.rows, "1")
    assert set(versions_served(replicas, versions.rows, 200)) == {"1"}  # the canary gets nothing now


def test_arms_split_stickily_on_every_replica_and_every_response_names_its_variant(
    versions: Versions, replicas: Replicas
) -> None:
    from collections import Counter

    import grpc
    import httpx
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    from prodml.registry.deployment import Deployment, Stickiness, Variant

    reset(versions)
    store = versions.store()
    spec = store.read()
    assert spec is not None
    arms = Deployment(
        0, (Variant("a", "1", 50, "primary"), Variant("b", "2", 50, "arm")), Stickiness(header="x-user")
    )
    store.write(arms, action="ab", why="test split", expect_revision=spec.revision)
    replicas.reload()
    seen: dict[str, set[str]] = {}
    row = versions.rows[0]
    with httpx.Client(timeout=30) as client:
        for i in range(600):
            user = f"user-{i % 300}"  # each user twice: once on each replica
            r = client.post(
                f"{replicas.urls[i % 2]}/predict", json={"records": [row]}, headers={"x-user": user}
            )
            assert r.status_code == 200
            body = r.json()
            assert r.headers["x-prodml-variant"] == body["variant"] == {"1": "a", "2": "b"}[body["version"]]
            seen.setdefault(user, set()).add(body["version"])
    assert all(len(v) == 1 for v in seen.values())  # 100% sticky, across replicas
    share = Counter(next(iter(v)) for v in seen.values())["2"] / len(seen)
    assert 0.4 <= share <= 0.6  # 300 users: the ±2 pp bound over 10,000 keys is tested in test_routing

    request = pb.ModelInferRequest(model_name=versions.name)
    for name, value in row.items():
        text = isinstance(value, str)
        tensor = request.inputs.add(name=name, datatype="BYTES" if text else "FP32", shape=[1])
        if text:
            tensor.contents.bytes_contents.append(value.encode())
        else:
            tensor.contents.fp32_contents.append(0.0 if value is None else float(value))
    with grpc.insecure_channel(f"127.0.0.1:{replicas.servers[0].grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, timeout=10)
        variant = response.parameters["variant"].string_param
        assert variant == {"1": "a", "2": "b"}[response.model_version]
        # the header key travels as gRPC metadata: each user gets the arm REST gave it
        for user in [f"user-{i}" for i in range(40)]:
            answer = stub.ModelInfer(request, timeout=10, metadata=(("x-user", user),))
            assert {answer.model_version} == seen[user]
    reset(versions)


def test_a_controller_killed_mid_rollout_resumes_from_the_spec(
    versions: Versions, replicas: Replicas
) -> None:
    import signal
    import time

    reset(versions)
    replicas.reload()
    exe = Path(sys.executable).with_name("prodml")
    with load(replicas, versions.rows) as running:
        started = rollout(
            versions,
            "canary",
            "2",
            "--steps",
            "30,60,100",
            "--interval",
            "2s",
            "--min-requests",
            "5",
            "--no-wait",
            *replica_args(replicas),
        )
        assert started.returncode == 0, started.stderr
        store = versions.store()
        controller = subprocess.Popen(
            [str(exe), "--project", str(versions.root), "rollout", "run"],
            env={**os.environ, **versions.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                spec = store.read()
                assert spec is not None and spec.rollout is not None
                if int(spec.rollout["step"]) >= 1:
                    break
                time.sleep(0.2)
        finally:
            controller.send_signal(signal.SIGKILL)
            controller.wait(10)
        killed_at = store.read()
        assert killed_at is not None and killed_at.active and int(killed_at.rollout["step"]) >= 1  # type: ignore[index]
        resumed = rollout(versions, "run")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "promoted" in resumed.stdout
    assert set(running.statuses) == {200}
    steps = [e.action for e in store.events() if e.action.startswith("step")]
    assert steps[-2:] == ["step 1: canary at 60%", "step 2: canary at 100%"]  # no step taken twice
    assert store.registry.alias_version(versions.name, "champion").version == "2"  # type: ignore[union-attr]
    reset(versions)
