"""Model lifecycle against real processes: hot swaps under load, SIGTERM drain, registry down,
tampered artifacts, and the Redis cache with Redis killed mid-run."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from prodml.registry.mlflow import PACKAGE_PATH, Registry
from tests.serve.conftest import Served
from tests.servers import ServeProcess, free_port, redis_server


def copy_version(served: Served, tmp: Path, *, tamper: bool = False) -> str:
    """Register the champion's package again as a new version (fast: no training)."""
    registry = Registry(served.tracking)
    champion = registry.resolve("churn@champion")
    pkg = registry.download(champion, tmp / f"pkg-{time.monotonic_ns()}")
    with registry.start_run("churn", run_name="copy") as run:
        mv = registry.register("churn", run, pkg, champion.digests, {"prodml.metric.roc_auc": 0.9})
    if tamper:
        stored = Path(mv.source.removeprefix("file://")) / "model.onnx"
        stored.write_bytes(stored.read_bytes()[:-10])
    assert mv.run_id is not None
    assert PACKAGE_PATH in mv.source
    return mv.version


class Load:
    """Background /predict traffic from a few threads; records every status and served version.

    A connection refused (no listener) is counted in ``refused``; any other transport error — a request
    cut off, a connection dropped mid-answer — is a failed request, kept in ``failed``.
    """

    def __init__(self, url: str, rows: list[dict[str, object]], threads: int = 4) -> None:
        self.url, self.rows = url, rows
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.refused = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            n = 0
            while not self._stop.is_set():
                row = self.rows[(i * 31 + n) % len(self.rows)]
                n += 1
                try:
                    r = client.post("/predict", json=[row])
                except httpx.ConnectError:
                    with self._lock:
                        self.refused += 1
                    if self._stop.wait(0.01):
                        return
                    continue
                except httpx.TransportError as exc:
                    with self._lock:
                        self.failed.append(repr(exc))
                    if self._stop.wait(0.01):
                        return
                    continue
                with self._lock:
                    self.statuses[r.status_code] += 1
                    self.versions[r.headers.get("x-model-version", "?")] += 1

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Send no new requests; those in flight finish."""
        self._stop.set()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for t in self._threads:
            t.join(15)


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.integration
def test_hot_swaps_under_load_fail_no_request(project_copy: Served, tmp_path: Path) -> None:
    served = project_copy
    registry = Registry(served.tracking)
    new_versions = [copy_version(served, tmp_path) for _ in range(3)]
    with ServeProcess(served.root, served.env, "--poll", "0.3") as server:
        server.wait_ready()
        with Load(server.url, served.rows) as load:
            for version in new_versions:
                wait_for(lambda: load.total > 1000, 60, "traffic before the swap")
                before = load.total
                registry.set_alias("churn", "champion", version)
                wait_for(lambda v=version: load.versions[v] > 0, 20, f"version {version} to serve")
                wait_for(lambda b=before: load.total > b + 2500, 60, "traffic after the swap")
            wait_for(lambda: load.total >= 10_000, 60, "10,000 requests")
        assert load.total >= 10_000
        assert set(load.statuses) == {200}, load.statuses
        assert (load.failed, load.refused) == ([], 0)
        assert set(load.versions) <= {"1", *new_versions}
        assert load.versions[new_versions[-1]] > 0
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "prodml_model_swaps_total 3.0" in metrics
        assert server.stop() == 0


@pytest.mark.integration
def test_sigterm_drains_in_flight_requests_and_exits_zero(served: Served) -> None:
    with ServeProcess(served.root, served.env) as server:
        server.wait_ready()
        with Load(server.url, served.rows, threads=4) as load:
            wait_for(lambda: load.total > 300, 30, "traffic")
            server.proc.send_signal(15)
            ready = httpx.get(f"{server.url}/v2/health/ready", timeout=2)
            assert ready.status_code == 503  # at once, while requests are still served
            load.stop()  # as a load balancer does on a 503 readiness; requests in flight must still finish
            code = server.proc.wait(12)  # the drain timeout (10 s) + 2 s
        assert code == 0
        assert set(load.statuses) == {200}, load.statuses  # every accepted request was answered
        assert (load.failed, load.refused) == ([], 0)  # none cut off, none turned away


@pytest.mark.integration
def test_registry_down_at_start(project_copy: Served) -> None:
    served = project_copy
    with ServeProcess(served.root, served.env) as server:  # fills the verified local cache
        server.wait_ready()
    # a registry that takes connections and never answers: a round trip to it can only end in the
    # client's 5 s timeout, so a server that waited for one would be ready only after it had failed
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # never accepted: the kernel completes the handshake, nobody replies
        hung = {**served.env, "PRODML_TRACKING_URI": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        with ServeProcess(served.root, hung) as server:
            server.wait_ready(timeout=10)

            def registry() -> dict[str, object]:
                auth = {"authorization": "Bearer test-token-0123456789"}
                status: dict[str, object] = httpx.get(f"{server.admin_url}/admin/status", headers=auth).json()
                return status

            # ready from the verified local cache while the registry has neither answered nor failed
            status = registry()
            assert (status["last_registry_check"], status["last_registry_error"]) == (None, None)
            r = httpx.post(f"{server.url}/predict", json=served.rows[:1])
            assert r.status_code == 200
            assert r.headers["x-model-version"] == "1"
            # it was asked meanwhile, in the background, and its failure changes nothing
            wait_for(lambda: registry()["last_registry_error"] is not None, 120, "the hung registry check")
            assert httpx.post(f"{server.url}/predict", json=served.rows[:1]).status_code == 200
    down = {**served.env, "PRODML_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    shutil.rmtree(served.root / ".prodml/models")
    with ServeProcess(served.root, down) as server:
        time.sleep(3)
        assert server.proc.poll() is None  # no crash loop: it waits for the registry
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
        assert httpx.post(f"{server.url}/predict", json=served.rows[:1]).status_code == 503


@pytest.mark.integration
def test_tampered_new_version_is_refused_and_the_old_one_keeps_serving(
    project_copy: Served, tmp_path: Path
) -> None:
    served = project_copy
    bad = copy_version(served, tmp_path, tamper=True)
    with ServeProcess(served.root, served.env, "--poll", "0.3") as server:
        server.wait_ready()
        with Load(server.url, served.rows, threads=2) as load:
            Registry(served.tracking).set_alias("churn", "champion", bad)
            wait_for(lambda: load.total > 500, 30, "traffic")
            reload = httpx.post(
                f"{server.admin_url}/admin/reload",
                headers={"authorization": "Bearer test-token-0123456789"},
                timeout=30,
            )
            assert reload.status_code == 500
            assert "does not match its recorded sha256" in reload.json()["error"]
        assert set(load.statuses) == {200}
        assert (load.failed, load.refused) == ([], 0)
        assert set(load.versions) == {"1"}


@pytest.mark.integration
def test_redis_cache_survives_redis_dying(served: Served) -> None:
    port = free_port()
    with redis_server(port) as (url, redis_proc):
        env = {**served.env, "PRODML_SERVE__CACHE__REDIS_URL": url}
        with ServeProcess(served.root, env) as server, httpx.Client(base_url=server.url, timeout=5) as client:
            server.wait_ready()
            row = served.rows[:1]
            assert client.post("/predict", json=row).status_code == 200
            assert client.post("/predict", json=row).status_code == 200
            assert 'prodml_cache_total{result="hit"} 1.0' in client.get("/metrics").text
            redis_proc.kill()
            redis_proc.wait(5)
            codes = Counter(
                client.post("/predict", json=served.rows[i % 50 : i % 50 + 1]).status_code for i in range(200)
            )
            assert codes == Counter({200: 200})
            with redis_server(port):

                def hits() -> float:
                    client.post("/predict", json=row)
                    line = next(
                        x
                        for x in client.get("/metrics").text.splitlines()
                        if x.startswith('prodml_cache_total{result="hit"}')
                    )
                    return float(line.split()[-1])

                before = hits()
                wait_for(lambda: hits() > before + 1, 30, "cache hits to resume")


@pytest.mark.integration
def test_two_worker_processes_share_the_port_and_drain(served: Served) -> None:
    with ServeProcess(served.root, served.env, "--workers", "2") as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            codes = Counter(
                client.post("/predict", json=served.rows[i % 20 : i % 20 + 1]).status_code for i in range(200)
            )
        assert codes == Counter({200: 200})
        import subprocess

        children = subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 2
        assert server.stop() == 0


@pytest.mark.integration
def test_registry_server_down_during_reload(project_copy: Served, tmp_path: Path) -> None:
    """An MLflow server that dies: 0 failed requests, the served version stays; it recovers on a poll."""
    import signal
    import subprocess
    import sys

    served = project_copy
    db = served.tracking.removeprefix("sqlite:///")
    port = free_port()
    mlflow_exe = str(Path(sys.executable).with_name("mlflow"))

    def start_mlflow() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                mlflow_exe,
                "server",
                "--backend-store-uri",
                f"sqlite:///{db}",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health"), 60, "the MLflow server")
        return proc

    def stop_mlflow(proc: subprocess.Popen[bytes]) -> None:
        import os

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    mlflow_server = start_mlflow()
    try:
        env = {**served.env, "PRODML_TRACKING_URI": f"http://127.0.0.1:{port}"}
        with ServeProcess(served.root, env, "--poll", "0.5") as server:
            server.wait_ready()
            with Load(server.url, served.rows, threads=2) as load:
                wait_for(lambda: load.total > 300, 30, "traffic")
                stop_mlflow(mlflow_server)
                time.sleep(3)  # several failed polls
                new = copy_version(served, tmp_path)  # registered while the server is away
                Registry(served.tracking).set_alias("churn", "champion", new)
                during = load.total
                wait_for(lambda: load.total > during + 300, 30, "traffic while the registry is down")
                assert set(load.versions) == {"1"}
                mlflow_server = start_mlflow()
                wait_for(lambda: load.versions[new] > 0, 60, "the new version after the registry returned")
            assert set(load.statuses) == {200}, load.statuses
            assert (load.failed, load.refused) == ([], 0)
    finally:
        if mlflow_server.poll() is None:
            stop_mlflow(mlflow_server)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_refused_requests_are_logged_as_json_with_their_request_id(served: Served) -> None:
    import json

    env = {**served.env, "PRODML_LOG_JSON": "true"}
    with ServeProcess(served.root, env) as server:
        server.wait_ready()
        bad = httpx.post(f"{server.url}/predict", json=[{"age": "old"}], headers={"x-request-id": "log-me-1"})
        assert bad.status_code == 400
        wait_for(lambda: "log-me-1" in server.log.read_text(), 5, "the log line")
        line = next(x for x in server.log.read_text().splitlines() if "log-me-1" in x)
        record = json.loads(line)
        assert record["request_id"] == "log-me-1"
        assert record["status"] == 400
        assert record["protocol"] == "predict"


@pytest.mark.integration
def test_silent_redis_costs_no_errors_and_opens_the_breaker(served: Served) -> None:
    """A peer that accepts connections and never answers: calls time out in 50 ms, the breaker opens."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)  # never read, never answered
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        env = {**served.env, "PRODML_SERVE__CACHE__REDIS_URL": url}
        with ServeProcess(served.root, env) as server, httpx.Client(base_url=server.url, timeout=5) as client:
            server.wait_ready()
            for i in range(40):
                response = client.post("/predict", json=served.rows[i % 20 : i % 20 + 1])
                assert response.status_code == 200
            # the first calls time out (get + set); after five failures the breaker opens and calls stop
            assert "cache circuit opened after 5 failures" in server.output()
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()
