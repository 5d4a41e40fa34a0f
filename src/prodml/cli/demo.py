"""``prodml demo``: the main job on embedded defaults, end to end, with timings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prodml.cli._common import console, fmt_seconds, handle_errors, tracking_uri


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

    steps: list[tuple[str, float, str]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("simulate", total=5)

        start = time.perf_counter()
        path = write_example(directory, "churn", customers=customers, days=days, seed=seed, force=True)
        project = load_project(path)
        catalog = Catalog(project)
        events = sum(catalog.read(n).num_rows for n in ("sessions", "payments", "tickets"))
        steps.append(("simulate", time.perf_counter() - start, f"{customers:,} customers, {events:,} events"))
        progress.update(task, advance=1, description="validate")

        start = time.perf_counter()
        report = validate_project(catalog)
        json_path, _ = write_report(report, project.state_dir / "reports", project=project.name)
        verdict = "clean" if report.ok else f"{len(report.violations)} violation(s)"
        steps.append(("validate", time.perf_counter() - start, f"{verdict}, {json_path}"))
        progress.update(task, advance=1, description="features")

        start = time.perf_counter()
        frame, output = build_features(catalog)
        steps.append(
            (
                "features",
                time.perf_counter() - start,
                f"{frame.table.num_rows:,} rows × {len(frame.features)} features, {output}",
            )
        )
        progress.update(task, advance=1, description="train")

        start = time.perf_counter()
        outcome = run_training(
            project,
            tracking_uri=tracking_uri(),
            on_step=lambda s: progress.update(task, description=f"train: {s}"),
        )
        mv, result = outcome.version, outcome.result
        shown = ", ".join(f"{k} {v:.3f}" for k, v in list(result.holdout.items())[:3])
        steps.append(
            (
                "train",
                time.perf_counter() - start,
                f"{project.model.estimator}: holdout {shown}; {mv.name} v{mv.version} registered",
            )
        )
        progress.update(task, advance=1, description="promote")

        start = time.perf_counter()
        gate = promote(Registry(outcome.tracking_uri), project.promotion, mv.name, mv.version)
        steps.append(
            (
                "promote",
                time.perf_counter() - start,
                f"{mv.name}@champion = v{mv.version} ({gate.metric} {gate.value:.4f} passes the gate)",
            )
        )
        progress.update(task, advance=1, description="done")

    table = Table(title=f"prodml demo in {directory}", title_justify="left")
    table.add_column("step")
    table.add_column("time", justify="right")
    table.add_column("result", overflow="fold")
    for name, seconds, summary in steps:
        table.add_row(name, fmt_seconds(seconds), summary)
    console.print(table)
    if not report.ok:
        raise typer.Exit(3)
