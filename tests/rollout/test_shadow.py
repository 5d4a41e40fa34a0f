"""Shadow traffic: mirrored off the response path, bounded, its failures and drops counted."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from prodml.serve.metrics import Metrics
from prodml.serve.shadow import Mirror
from tests.rollout.conftest import Replicas, Versions, load, register_package, reset, versions_served


def test_a_slow_shadow_never_makes_a_request_wait_and_its_queue_is_bounded() -> None:
    release = threading.Event()

    def slow_run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        release.wait(10)  # a shadow that hangs until released
        return [np.zeros(1, np.int64), np.zeros((1, 2), np.float32)]

    model = SimpleNamespace(
        version="9",
        validator=SimpleNamespace(feeds=lambda columns: ({}, 1)),
        runtime=SimpleNamespace(run=slow_run, task="binary"),
    )
    metrics = Metrics()
    seen: list[str] = []

    async def scenario() -> float:
        mirror = Mirror(metrics, lambda variant, m, outputs: seen.append(m.version), max_queue=8)
        start = time.perf_counter()
        for _ in range(100):
            mirror.offer("shadow", model, {"x": [1]}, [np.zeros(1, np.int64), np.zeros((1, 2))])  # type: ignore[arg-type]
        spent = time.perf_counter() - start
        await asyncio.sleep(0.2)  # the worker now holds the first; the shadow hangs
        release.set()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if len(seen) == 8:
                break
        await mirror.close()
        assert mirror.dropped == 92  # all offered before the worker first ran: 8 queued, 92 dropped
        return spent

    asyncio.run(scenario())
    text = metrics.render().decode()
    assert 'prodml_shadow_dropped_total{version="9"} 92.0' in text
    assert seen == ["9"] * 8  # the queued ones ran once the shadow answered again


def rollout(versions: Versions, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("prodml")
    return subprocess.run(
        [str(exe), "--project", str(versions.root), "rollout", *args],
        env={**os.environ, **versions.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.integration
def test_a_failing_shadow_changes_nothing_for_clients(
    versions: Versions, replicas: Replicas, erroring: str
) -> None:
    reset(versions)
    admin = [a for url in replicas.admin_urls for a in ("--admin", url)]
    started = rollout(versions, "shadow", erroring, "--sample", "100%", *admin)
    assert started.returncode == 0, started.stderr
    with load(replicas, versions.rows) as running:
        time.sleep(3)
    assert running.statuses and set(running.statuses) == {200}  # 0 client errors
    assert set(versions_served(replicas, versions.rows, 100)) == {"1"}
    replica_args = [a for url in replicas.urls for a in ("--replica", url)]
    report = rollout(versions, "shadow-report", *replica_args)
    assert report.returncode == 0, report.stderr
    assert f"shadow v{erroring}" in report.stdout
    texts = [httpx.get(f"{url}/metrics").text for url in replicas.urls]
    errors = sum(
        float(line.rsplit(" ", 1)[1])
        for text in texts
        for line in text.splitlines()
        if line.startswith("prodml_variant_requests_total")
        and 'code="500"' in line
        and f'version="{erroring}"' in line
    )
    assert errors > 0  # the shadow ran, failed, and was counted
    gated = rollout(
        versions, "canary", erroring, "--require-shadow", "--no-wait", "--min-requests", "1", *replica_args
    )
    assert gated.returncode == 2 and "does not pass: server error rate" in gated.stderr, gated.stderr
    assert not versions.store().current().active  # refused: nothing started

    # a working shadow: agreement and prediction shift against the primary
    assert rollout(versions, "shadow", "--stop", *admin).returncode == 0
    assert rollout(versions, "shadow", "2", "--sample", "50%", *admin).returncode == 0
    with load(replicas, versions.rows) as running:
        time.sleep(3)
    assert set(running.statuses) == {200}
    report = rollout(versions, "shadow-report", *replica_args)
    assert report.returncode == 0, report.stderr
    assert "agreement 0." in report.stdout or "agreement 1.0" in report.stdout
    assert re.search(r"PSI \d+\.\d+, KS \d", report.stdout)  # the shift is measured
    gate = ("--require-shadow", "--no-wait", "--min-requests", "1", "--max-prediction-shift", "10")
    passed = rollout(versions, "canary", "2", *gate, *replica_args)
    assert passed.returncode == 0, passed.stderr  # the shadow passed: the canary starts
    started = versions.store().current()
    assert started.active and started.role("shadow") is None  # the shadow became the canary
    assert rollout(versions, "abort").returncode == 0
    spec = versions.store().read()
    assert spec is not None and spec.role("shadow") is None


@pytest.fixture(scope="module")
def slow(versions: Versions) -> str:
    """Version 2's package with 60 matrix products of 2048 × 2048 added to its graph (about 1 GB of
    weights read per call, tens of milliseconds where version 1 takes a fraction of one); its answers are
    version 2's. Registered with its own digests; returns the version."""
    import shutil

    import onnx
    from onnx import helper, numpy_helper

    source = versions.root / ".prodml/models" / versions.name / "2"
    target = versions.root / "slow-package"
    shutil.copytree(source, target)
    model = onnx.load(target / "model.onnx")
    g, width, depth = model.graph, 2048, 60
    numeric = next(i.name for i in g.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT)
    for node in g.node:
        node.output[:] = ["raw_probabilities" if o == "probabilities" else o for o in node.output]
    g.initializer.extend(
        [
            numpy_helper.from_array(np.ones((1, width), np.float32), "slow_ones"),
            numpy_helper.from_array((np.eye(width) * 0.5).astype(np.float32), "slow_w"),
            numpy_helper.from_array(np.zeros(1, np.float32), "slow_zero"),
        ]
    )
    g.node.append(helper.make_node("MatMul", [numeric, "slow_ones"], ["slow_0"]))
    g.node.extend(
        helper.make_node("MatMul", [f"slow_{k}", "slow_w"], [f"slow_{k + 1}"]) for k in range(depth)
    )
    g.node.extend(
        [
            helper.make_node("ReduceSum", [f"slow_{depth}"], ["slow_sum"], keepdims=1),
            helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
            helper.make_node("Add", ["raw_probabilities", "slow_nothing"], ["probabilities"]),
        ]
    )
    onnx.save(model, target / "model.onnx")
    return register_package(versions, target, "slow on purpose")


@pytest.mark.integration
def test_a_slow_shadow_changes_nothing_for_clients(versions: Versions, replicas: Replicas, slow: str) -> None:
    reset(versions)
    admin = [a for url in replicas.admin_urls for a in ("--admin", url)]
    replica_args = [a for url in replicas.urls for a in ("--replica", url)]
    before = httpx.post(f"{replicas.urls[0]}/predict", json={"records": versions.rows[:5]}).json()
    assert rollout(versions, "shadow", slow, "--sample", "100%", *admin).returncode == 0
    try:
        with load(replicas, versions.rows) as running:
            time.sleep(3)
        assert running.statuses and set(running.statuses) == {200}  # 0 client errors
        answer = httpx.post(f"{replicas.urls[0]}/predict", json={"records": versions.rows[:5]}).json()
        assert (answer["version"], answer["predictions"]) == ("1", before["predictions"])  # unchanged
        report = rollout(versions, "shadow-report", *replica_args)
        assert report.returncode == 0, report.stderr
        latency = {
            role: float(ms)
            for role, ms in re.findall(
                r"(primary|shadow) v\d+\s*│\s*\d+\s*│\s*\d+\s*│\s*([\d.]+)", report.stdout
            )
        }
        assert latency["shadow"] > latency["primary"], report.stdout  # the shadow ran, and was slow
    finally:
        assert rollout(versions, "shadow", "--stop", *admin).returncode == 0
