"""``prodml init``: write a project — from your own table (``--from``), or an example with its data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prodml.cli._common import console, handle_errors
from prodml.core.errors import ConfigError


@handle_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to create the project in.")] = Path(),
    from_: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--from", help="A CSV or Parquet table to build the project from (needs --target)."),
    ] = None,
    target: Annotated[
        Optional[str], typer.Option(help="--from: the column to predict.")  # noqa: UP045
    ] = None,
    task: Annotated[str, typer.Option(help="--from: auto, binary, multiclass or regression.")] = "auto",
    entity: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="--from: the column that identifies rows (left out of the features)."),
    ] = None,
    timestamp: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="--from: the label time; the holdout becomes the latest rows."),
    ] = None,
    example: Annotated[str, typer.Option(help="Which example: churn, breast-cancer or diabetes.")] = "churn",
    customers: Annotated[int, typer.Option(help="churn: number of customers.")] = 5_000,
    days: Annotated[int, typer.Option(help="churn: days of history.")] = 365,
    seed: Annotated[int, typer.Option(help="churn: random seed.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing prodml.yaml.")] = False,
) -> None:
    """Create a project: from your table (--from PATH --target COL), or an example with its data."""
    if from_ is not None:
        _from_table(directory, from_, target, task=task, entity=entity, timestamp=timestamp, force=force)
        return
    if target is not None or entity is not None or timestamp is not None:
        raise ConfigError("--target, --entity and --timestamp go with --from", hint="add --from PATH.csv")
    from prodml.data.examples import EXAMPLES, write_example

    if example not in EXAMPLES:
        raise ConfigError(f"unknown example '{example}'", hint=f"choose one of: {', '.join(EXAMPLES)}")
    with console.status(f"writing the {example} example"):
        path = write_example(
            directory,
            example,
            customers=customers,
            days=days,
            seed=seed,
            force=force,
        )
    console.print(f"[green]created[/] {path}")
    console.print(f"next: cd {directory} && prodml data validate && prodml features build")


def _from_table(
    directory: Path,
    table: Path,
    target: str | None,
    *,
    task: str,
    entity: str | None,
    timestamp: str | None,
    force: bool,
) -> None:
    from rich.table import Table

    from prodml.data.scaffold import scaffold

    if target is None:
        raise ConfigError("--from needs --target COLUMN", hint="name the column the model should predict")
    with console.status(f"profiling {table}"):
        path, plan = scaffold(
            directory, table, target=target, task=task, entity=entity, timestamp=timestamp, force=force
        )
    out = Table(
        title=f"{plan.name}: {plan.task} on '{plan.target}' ({plan.rows:,} rows)", title_justify="left"
    )
    for col in ("column", "role", "why"):
        out.add_column(col, overflow="fold")
    for c in plan.columns:
        op = f" ({c.transform['op']})" if c.transform else ""
        out.add_row(c.name, c.role + op, c.why)
    console.print(out)
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {note}")
    if plan.unlabelled:
        console.print(f"{plan.unlabelled:,} unlabelled row(s) will be dropped (target.drop_missing)")
    console.print(f"[green]created[/] {path}")
    console.print(f"next: cd {directory} && prodml train")
