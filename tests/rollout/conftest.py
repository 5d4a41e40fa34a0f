"""Two registered versions of a churn model and two real server replicas following its deployment."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from prodml.core.project import load_project
from prodml.data.examples import write_example
from tests.conftest import edit_project
from tests.serve.conftest import train_and_promote
from tests.servers import ServeProcess

TOKEN = "test-token-0123456789"


@dataclass
class Versions:
    """A project whose version 1 is champion and version 2 is registered beside it."""

    root: Path
    tracking: str
    name: str
    rows: list[dict[str, object]]

    @property
    def env(self) -> dict[str, str]:
        return {"PRODML_TRACKING_URI": self.tracking, "PRODML_ADMIN_TOKEN": TOKEN}

    def store(self):  # type: ignore[no-untyped-def]
        from prodml.registry.deployment import DeploymentStore
        from prodml.registry.mlflow import Registry

        return DeploymentStore(Registry(self.tracking), self.name)


@pytest.fixture(scope="session")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    from prodml.pipeline.train import run_training
    from prodml.registry.mlflow import Registry

    root = tmp_path_factory.mktemp("rollout")
    write_example(root, "churn", customers=500, days=200, seed=11)
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    train_and_promote(root, tracking, max_iter=30)
    edit_project(root, model__params={"max_iter": 3})  # a second, different version
    project = load_project(root)
    second = run_training(project, tracking_uri=tracking).version
    assert second.version == "2"
    registry = Registry(tracking)
    registry.load(second, project.state_dir / "models")  # cached: replicas need not download at once
    frame = pq.read_table(root / ".prodml/features/training.parquet")
    keep = [c for c in frame.column_names if c not in ("customer_id", "prediction_ts", "churned")]
    return Versions(root, tracking, second.name, frame.select(keep).slice(0, 200).to_pylist())


def reset(versions: Versions) -> None:
    """Version 1 champion, takes every request; no rollout in progress."""
    from dataclasses import replace

    from prodml.registry.deployment import Deployment

    store = versions.store()
    spec = store.read()
    target = Deployment.single("1")
    if spec is None or spec.variants != target.variants or spec.active:
        store.write(
            replace(target, rollout=None),
            action="reset",
            why="test set-up",
            expect_revision=None if spec is None else spec.revision,
        )
    store.registry.set_alias(versions.name, "champion", "1")


@dataclass
class Replicas:
    servers: list[ServeProcess]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def admin_urls(self) -> list[str]:
        return [s.admin_url for s in self.servers]

    def reload(self) -> None:
        for url in self.admin_urls:
            httpx.post(f"{url}/admin/reload", headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)


@pytest.fixture(scope="module")
def replicas(versions: Versions) -> Iterator[Replicas]:
    reset(versions)
    with contextlib.ExitStack() as stack:
        servers = []
        for _ in range(2):
            server = stack.enter_context(
                ServeProcess(versions.root, versions.env, "--poll", "1", "--no-log-requests")
            )
            server.wait_ready()
            servers.append(server)
        yield Replicas(servers)


@dataclass
class Load:
    """Requests sent from a thread, round-robin over the replicas, until stopped."""

    urls: list[str]
    rows: list[dict[str, object]]
    statuses: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                url = self.urls[i % len(self.urls)]
                row = self.rows[i % len(self.rows)]
                try:
                    self.statuses.append(client.post(f"{url}/predict", json={"records": [row]}).status_code)
                except httpx.HTTPError:
                    self.statuses.append(-1)
                i += 1


@contextlib.contextmanager
def load(replicas: Replicas, rows: list[dict[str, object]]) -> Iterator[Load]:
    running = Load(replicas.urls, rows)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        thread.join(30)


def versions_served(replicas: Replicas, rows: list[dict[str, object]], n: int) -> list[str]:
    """The version that answered each of ``n`` requests, alternating over the replicas."""
    out = []
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            r = client.post(f"{replicas.urls[i % 2]}/predict", json={"records": [rows[i % len(rows)]]})
            assert r.status_code == 200, r.text
            assert r.headers["x-model-version"] == r.json()["version"]
            out.append(r.json()["version"])
    return out


def wait_for_version(
    replicas: Replicas, rows: list[dict[str, object]], version: str, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(versions_served(replicas, rows, 20)) == {version}:
            return
        time.sleep(0.2)
    raise AssertionError(f"the replicas do not all serve version {version} after {timeout} s")


@pytest.fixture(scope="session")
def erroring(versions: Versions) -> str:
    """Version 3: version 2's package with a graph that fails on real rows (its warm-up row passes), so
    every request it answers is a server error. Registered with its own digests."""
    import json
    import shutil

    import onnx
    from onnx import TensorProto, helper

    source = versions.root / ".prodml/models" / versions.name / "2"
    target = versions.root / "erroring-package"
    shutil.copytree(source, target)
    schema = json.loads((target / "schema.json").read_text())
    age_min = next(c for c in schema["inputs"] if c["name"] == "age").get("min") or 0.0
    model = onnx.load(target / "model.onnx")
    g = model.graph
    for node in g.node:  # the probabilities now come out reshaped by a width that real rows break
        node.output[:] = ["raw_probabilities" if o == "probabilities" else o for o in node.output]
    g.initializer.extend(
        [
            helper.make_tensor("limit", TensorProto.FLOAT, [], [float(age_min) + 0.5]),
            helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("two", TensorProto.INT64, [1], [2]),
        ]
    )
    g.node.extend(
        [
            helper.make_node("ReduceMax", ["age"], ["age_max"], keepdims=0),
            helper.make_node("Greater", ["age_max", "limit"], ["real"]),
            helper.make_node("Cast", ["real"], ["real_int"], to=TensorProto.INT64),
            helper.make_node("Unsqueeze", ["real_int", "zero_axis"], ["real_1"]),
            helper.make_node("Add", ["two", "real_1"], ["width"]),
            helper.make_node("Concat", ["minus_one", "width"], ["shape"], axis=0),
            helper.make_node("Reshape", ["raw_probabilities", "shape"], ["probabilities"]),
        ]
    )
    g.initializer.append(helper.make_tensor("zero_axis", TensorProto.INT64, [1], [0]))
    onnx.save(model, target / "model.onnx")
    return register_package(versions, target, "fails on real rows")


def register_package(versions: Versions, package: Path, note: str) -> str:
    """Register an edited copy of a package as the model's next version (its own digests), cached as
    replicas keep it; its version."""
    from prodml.export.package import load_package
    from prodml.registry.mlflow import Registry

    digests = load_package(package, None).digests
    registry = Registry(versions.tracking)
    with registry.start_run(package.name) as run:
        mv = registry.register(versions.name, run, package, digests, {"prodml.note": note})
    registry.load(mv, versions.root / ".prodml/models")
    return mv.version
