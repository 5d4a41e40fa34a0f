"""``prodml train``: the model side of the lifecycle, ending in a registered model package."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prodml.cli._common import console, fmt_seconds, handle_errors, kv_table, project_of, tracking_uri


@handle_errors
def train(
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc", min=1, help="Processes for DDP training of a torch model (torchrun, gloo/NCCL)."
        ),
    ] = 1,
) -> None:
    """Validate, build features, cross-validate, fit, explain, export to ONNX and register."""
    from prodml.pipeline.train import run_training

    project = project_of()
    if nproc > 1:  # every rank runs prodml.pipeline.dl; rank 0 registers and prints the result
        from prodml.dl.distributed import launch
        from prodml.dl.params import parse_params

        parse_params(project.model.estimator, project.model.params)  # --nproc is for torch models only
        uri = tracking_uri()
        code = launch(
            nproc,
            "prodml.pipeline.dl",
            ["--project", str(project.root), *(["--tracking-uri", uri] if uri else [])],
        )
        raise typer.Exit(code)
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("train", total=None)
        outcome = run_training(
            project, tracking_uri=tracking_uri(), on_step=lambda s: progress.update(task, description=s)
        )
    result, mv = outcome.result, outcome.version
    table = Table(title=f"{project.name}: {project.model.estimator} ({project.task})", title_justify="left")
    for col in ("metric", "cv mean ± std", "holdout"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, (mean, std) in result.cv_summary().items():
        table.add_row(name, f"{mean:.4f} ± {std:.4f}", f"{result.holdout[name]:.4f}")
    console.print(table)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    dropped = result.rows.get("unlabelled_dropped", 0)
    console.print(
        kv_table(
            "Registered",
            [
                ("model", f"{mv.name} version {mv.version}"),
                (
                    "rows (train / holdout)",
                    f"{result.rows['train']:,} / {result.rows['holdout']:,}"
                    + (f" ({dropped:,} unlabelled dropped)" if dropped else ""),
                ),
                (
                    "ONNX parity (max |diff|)",
                    f"{outcome.parity['max_abs_diff']:.2e} on {int(outcome.parity['rows']):,} rows",
                ),
                ("time", ", ".join(f"{k} {fmt_seconds(v)}" for k, v in outcome.seconds.items())),
                ("report", outcome.report),
            ],
        )
    )
    console.print(f"next: prodml models promote {mv.name} {mv.version} --alias champion")
