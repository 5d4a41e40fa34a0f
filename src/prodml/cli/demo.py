"""``prodml demo``: the main job on embedded defaults, end to end, with timings."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from prodml.cli._common import console, fmt_seconds, handle_errors, tracking_uri


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
    """Simulate a subscription business, validate it, build features, train, register, promote."""
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
        steps = _Steps(progress, progress.add_task("simulate", total=6))

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

        with steps.step("serve") as note:
            note.append(_serve_and_probe(path, outcome.tracking_uri, frame.table, frame.features))

    table = Table(title=f"prodml demo in {directory}", title_justify="left")
    table.add_column("step")
    table.add_column("time", justify="right")
    table.add_column("result", overflow="fold")
    for name, seconds, summary in steps.rows:
        table.add_row(name, fmt_seconds(seconds), summary)
    console.print(table)
    if not report.ok:
        raise typer.Exit(3)


def _serve_and_probe(project_file: Path, tracking: str, table: object, features: list[str]) -> str:
    """Start `prodml serve` on a free port, send real traffic, report latencies, stop it with SIGTERM."""
    import os
    import signal
    import socket
    import statistics
    import subprocess
    import sys

    import httpx

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    port, admin_port = free_port(), free_port()
    exe = str(Path(sys.executable).with_name("prodml"))
    token = os.urandom(16).hex()
    env = {**os.environ, "PRODML_TRACKING_URI": tracking, "PRODML_ADMIN_TOKEN": token}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            exe,
            "--project",
            str(project_file),
            "serve",
            "--port",
            str(port),
            "--grpc-port",
            "0",
            "--admin-port",
            str(admin_port),
            "--no-log-requests",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = table.select(features).slice(0, 100).to_pylist()  # type: ignore[attr-defined]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while True:
                try:
                    if client.post("/predict", json=rows[:1]).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.perf_counter() - started > 30:
                    return "the server did not start"
                time.sleep(0.02)
            first = time.perf_counter() - started
            # the server confirms the champion with the registry in the background (importing mlflow
            # there); measure once that is done, as a long-running server would be
            admin = {"authorization": f"Bearer {token}"}
            status = f"http://127.0.0.1:{admin_port}/admin/status"
            while client.get(status, headers=admin).json().get("last_registry_check") is None:
                if time.perf_counter() - started > 30:
                    break
                time.sleep(0.05)
            single = []
            for i in range(300):
                t0 = time.perf_counter()
                response = client.post("/predict", json=rows[i % 100 : i % 100 + 1])
                single.append(time.perf_counter() - t0)
                response.raise_for_status()
            t0 = time.perf_counter()
            batch = client.post("/predict", json=rows)
            batch_ms = (time.perf_counter() - t0) * 1000
            version = batch.headers.get("x-model-version")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    p50, p99 = statistics.median(single) * 1000, sorted(single)[int(0.99 * len(single))] * 1000
    return (
        f"v{version}: first answer {first:.2f} s after start; 300 single-row requests p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms (Python client); 100 rows in {batch_ms:.1f} ms; SIGTERM exit {code}"
    )
