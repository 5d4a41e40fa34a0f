"""``prodml demo``: the main job on embedded defaults, end to end, with timings: from a simulated world
to a served model, its online features, a batch and a drift check."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from prodml.cli._common import console, fmt_seconds, handle_errors, tracking_uri
from prodml.core.errors import Unavailable

if TYPE_CHECKING:
    from prodml.core.project import Project
    from prodml.pipeline.retrain import MonitorStep


class _Steps:
    """Times each demo step, drives the progress bar and keeps one summary line per step."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task = progress, task
        self.rows: list[tuple[str, float, str]] = []

    def describe(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        self.describe(name)
        start, note = time.perf_counter(), list[str]()
        yield note
        self.rows.append((name, time.perf_counter() - start, " ".join(note)))
        self.progress.update(self.task, advance=1, description="done")


@handle_errors
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where to create the demo project.")] = Path(
        "prodml-demo"
    ),
    customers: Annotated[int, typer.Option(help="Customers in the simulated world.")] = 5_000,
    days: Annotated[int, typer.Option(help="Days of simulated history.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Simulate a subscription business, validate it, build features, train, register, promote, score a
    batch, serve (online features by customer id), replay drifted traffic and check it for drift, retrain,
    and roll the retrained version out: shadow, then canary, promoted or rolled back on its evidence."""
    from prodml.core.project import load_project
    from prodml.data.examples import write_example
    from prodml.data.sources import Catalog
    from prodml.data.validate import validate_project, write_report
    from prodml.features.build import build_features
    from prodml.pipeline.train import run_training
    from prodml.registry.mlflow import Registry
    from prodml.registry.promotion import promote

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        steps = _Steps(progress, progress.add_task("simulate", total=10))

        with steps.step("simulate") as note:
            path = write_example(directory, "churn", customers=customers, days=days, seed=seed, force=True)
            project = load_project(path)
            catalog = Catalog(project)
            events = sum(catalog.read(n).num_rows for n in ("sessions", "payments", "tickets"))
            note.append(f"{customers:,} customers, {events:,} events")

        with steps.step("validate") as note:
            report = validate_project(catalog)
            json_path, _ = write_report(report, project.state_dir / "reports", project=project.name)
            note.append(
                ("clean" if report.ok else f"{len(report.violations)} violation(s)") + f", {json_path}"
            )

        with steps.step("features") as note:
            frame, output = build_features(catalog)
            note.append(f"{frame.table.num_rows:,} rows × {len(frame.features)} features, {output}")

        with steps.step("train") as note:
            outcome = run_training(
                project, tracking_uri=tracking_uri(), on_step=lambda s: steps.describe(f"train: {s}")
            )
            mv = outcome.version
            shown = ", ".join(f"{k} {v:.3f}" for k, v in list(outcome.result.holdout.items())[:3])
            note.append(f"{project.model.estimator}: holdout {shown}; {mv.name} v{mv.version} registered")

        with steps.step("promote") as note:
            registry = Registry(outcome.tracking_uri)
            gate = promote(registry, project.promotion, mv.name, mv.version)
            registry.cache_ref(f"{mv.name}@champion", project.state_dir / "models")
            note.append(
                f"{mv.name}@champion = v{mv.version} ({gate.metric} {gate.value:.4f} passes the gate)"
            )

        with steps.step("batch") as note:
            from prodml.batch.demo import score_latest

            r = score_latest(project, tracking_uri=outcome.tracking_uri)
            note.append(f"{r.scored:,} latest customers scored, {r.rows_per_s:,.0f} rows/s → {r.output}")

        with _DemoServer(path, outcome.tracking_uri) as server:
            with steps.step("online features") as note:
                note.append(_online(project, server))

            with steps.step("serve") as note:
                note.append(server.probe(frame.table, frame.features))

            with steps.step("monitor") as note:
                text, monitored, drifted = _monitor(
                    project, server, outcome.tracking_uri, customers=customers, days=days
                )
                note.append(text)

            with steps.step("rollout") as note:
                text, windows = _rollout(project, server, monitored, drifted)
                note.append(text)

    table = Table(title=f"prodml demo in {directory}", title_justify="left")
    table.add_column("step")
    table.add_column("time", justify="right")
    table.add_column("result", overflow="fold")
    for name, seconds, summary in steps.rows:
        table.add_row(name, fmt_seconds(seconds), summary)
    console.print(table)
    if windows is not None:
        console.print(windows)
    if not report.ok:
        raise typer.Exit(3)


class _DemoServer:
    """`prodml serve` on free ports (requests logged), from the online step until the monitoring step
    stops it with SIGTERM (so its request log is flushed)."""

    def __init__(self, project_file: Path, tracking: str) -> None:
        self.project_file, self.tracking = project_file, tracking
        self.proc: subprocess.Popen[bytes] | None = None
        self.first: float | None = None  # seconds from start to the first answer
        self.code: int | None = None

    def __enter__(self) -> _DemoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, probe: list[dict[str, object]], *poll: str) -> None:
        """Start the server; wait until it answers ``probe`` (and has checked the registry)."""
        import httpx

        self.code = None
        self.port, admin_port = _free_port(), _free_port()
        self.url, self.admin_url = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{admin_port}"
        token = self.token = os.urandom(16).hex()
        env = {**os.environ, "PRODML_TRACKING_URI": self.tracking, "PRODML_ADMIN_TOKEN": token}
        exe = str(Path(sys.executable).with_name("prodml"))
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                *(exe, "--project", str(self.project_file), "serve"),
                *("--port", str(self.port), "--grpc-port", "0", "--admin-port", str(admin_port)),
                *poll,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if client.post("/predict", json=probe).status_code == 200:
                        break
                if self.proc.poll() is not None or time.perf_counter() - started > 30:
                    raise Unavailable("the demo server did not start", hint="run 'prodml serve' to see why")
                time.sleep(0.02)
            self.first = time.perf_counter() - started
            # the server confirms the champion with the registry in the background (importing mlflow
            # there); measure once that is done, as a long-running server would be
            admin = {"authorization": f"Bearer {token}"}
            status = f"http://127.0.0.1:{admin_port}/admin/status"
            while client.get(status, headers=admin).json().get("last_registry_check") is None:
                if time.perf_counter() - started > 30:
                    break
                time.sleep(0.05)

    def probe(self, table: object, features: list[str]) -> str:
        """Real traffic: 300 single-row requests and one of 100 rows; their latencies."""
        import statistics

        import httpx

        rows = table.select(features).slice(0, 100).to_pylist()  # type: ignore[attr-defined]
        single = []
        with httpx.Client(base_url=self.url, timeout=5) as client:
            for i in range(300):
                t0 = time.perf_counter()
                response = client.post("/predict", json=rows[i % 100 : i % 100 + 1])
                single.append(time.perf_counter() - t0)
                response.raise_for_status()
            t0 = time.perf_counter()
            batch = client.post("/predict", json=rows)
            batch_ms = (time.perf_counter() - t0) * 1000
        p50, p99 = statistics.median(single) * 1000, sorted(single)[int(0.99 * len(single))] * 1000
        return (
            f"v{batch.headers.get('x-model-version')}: first answer {self.first:.2f} s after start; "
            f"300 single-row requests p50 {p50:.2f} ms, p99 {p99:.2f} ms (Python client); "
            f"100 rows in {batch_ms:.1f} ms"
        )

    def stop(self) -> int | None:
        """SIGTERM: the server drains, flushes its request log and exits (its code)."""
        if self.proc is not None and self.code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.code = self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.code = self.proc.wait(5)
        return self.code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _online(project: Project, server: _DemoServer) -> str:
    """Materialise the online store, start the server, and serve one customer by id alone."""
    from prodml.data.online_store import online_spec, opened
    from prodml.data.sources import Catalog
    from prodml.features.materialize import materialize

    entity = project.entity or "customer_id"
    spec = online_spec(project.features.online)
    with opened(spec, root=project.root, name=project.name) as store:
        result = materialize(Catalog(project), store)
        key = int(store.keys()[0])
    server.start([{entity: key}])
    import httpx

    answer = httpx.post(f"{server.url}/predict", json=[{entity: key}], timeout=5)
    answer.raise_for_status()
    p = answer.json()["predictions"][0]
    shown = f"churn probability {p['probability']:.3f}" if isinstance(p, dict) else f"prediction {p}"
    return (
        f"{result.written:,} customers materialised as of {result.as_of[:10]}; "
        f"{entity} {key} served by id alone: {shown}"
    )


def _monitor(
    project: Project, server: _DemoServer, tracking: str, *, customers: int, days: int
) -> tuple[str, MonitorStep, list[dict[str, object]]]:
    """Replay drifted traffic through the server, stop it (its log is flushed), check the log for drift
    and retrain through the gate on a breach."""
    from prodml.pipeline.retrain import drifted_rows, monitor_and_retrain, replay

    rows = drifted_rows(project, drift=1.0, customers=min(customers, 3_000), days=days)
    sent = replay(server.url, rows)
    code = server.stop()
    step = monitor_and_retrain(project, tracking_uri=tracking)
    return f"{sent:,} drifted rows replayed (server SIGTERM exit {code}); {step.describe()}", step, rows


def _rollout(
    project: Project, server: _DemoServer, monitored: MonitorStep, rows: list[dict[str, object]]
) -> tuple[str, Table | None]:
    """The retrained version goes out as ``prodml rollout`` would take it: a 100% shadow first (its
    report), then a canary at 50% and 100% with 2-second analysis windows under replayed drifted
    traffic; the controller promotes it or rolls it back. Returns the summary and the windows table."""
    import threading

    import httpx

    from prodml.registry.deployment import DeploymentStore
    from prodml.registry.mlflow import Registry
    from prodml.rollout.analysis import Checks, Verdict, scrape, shadow_report
    from prodml.rollout.controller import CanaryPlan, Controller, set_shadow, start_canary

    retrained = monitored.retrain
    if retrained is None or retrained.status != "challenger" or retrained.version is None:
        why = "no drift alert" if retrained is None else retrained.describe()
        return f"skipped: no new version passed the gate ({why})", None
    version = retrained.version
    server.start(rows[:1], "--poll", "1")
    store = DeploymentStore(Registry(server.tracking), project.tracking.registered_model or project.name)
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            i = 0
            while not stop.is_set():
                client.post("/predict", json=rows[i % len(rows) : i % len(rows) + 1])
                i += 1

    def reload() -> None:
        headers = {"authorization": f"Bearer {server.token}"}
        httpx.post(f"{server.admin_url}/admin/reload", headers=headers, timeout=60).raise_for_status()

    windows = Table(title=f"rollout of version {version}: analysis windows", title_justify="left")
    for col in ("weight", "canary requests", "error rate", "p99 ms", "prediction PSI", "verdict"):
        windows.add_column(col)

    def on_window(spec: object, verdict: Verdict) -> None:
        canary = verdict.evidence.get("canary", {})
        weight = next((v.weight for v in spec.variants if v.role == "canary"), 0.0)  # type: ignore[attr-defined]
        windows.add_row(
            f"{weight:g}%",
            str(canary.get("requests")),
            str(canary.get("error_rate")),
            str(canary.get("p99_ms")),
            str(verdict.evidence.get("prediction_psi")),
            "pass" if verdict.passed else "fail: " + "; ".join(verdict.reasons),
        )

    loader = threading.Thread(target=traffic, daemon=True)
    loader.start()
    try:
        set_shadow(store, version, sample=100.0, why="demo: shadow the retrained version", admin_urls=())
        reload()
        time.sleep(3)
        report = shadow_report(scrape([server.url]), shadow=version, primary=store.current().primary.version)
        set_shadow(store, None, why="demo: the shadow becomes the canary", admin_urls=())
        checks = Checks(max_error_rate=0.01, min_requests=20, max_prediction_shift=0.5)
        plan = CanaryPlan((50.0, 100.0), 2.0, checks, 2, (server.url,), ())
        start_canary(store, version, plan, why=f"demo: {retrained.reason}")
        reload()
        final = Controller(store, on_window=on_window).run()
    finally:
        stop.set()
        loader.join(15)
        server.stop()
    outcome = final.rollout.get("status") if final is not None and final.rollout else "unknown"
    champion = store.registry.alias_version(store.name, "champion")
    return (
        f"v{version} shadowed (agreement {report['agreement']}, PSI {report.get('prediction_psi')}), "
        f"then canaried: {outcome}; champion v{champion.version if champion else '?'}"
    ), windows
