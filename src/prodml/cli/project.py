"""``prodml init``: write a commented example project and its data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prodml.cli._common import console, handle_errors
from prodml.core.errors import ConfigError


@handle_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to create the project in.")] = Path(),
    example: Annotated[str, typer.Option(help="Which example: churn, breast-cancer or diabetes.")] = "churn",
    customers: Annotated[int, typer.Option(help="churn: number of customers.")] = 5_000,
    days: Annotated[int, typer.Option(help="churn: days of history.")] = 365,
    seed: Annotated[int, typer.Option(help="churn: random seed.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing prodml.yaml.")] = False,
) -> None:
    """Create a project: a commented prodml.yaml and its data, ready for `prodml data validate`."""
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
