"""``prodml data``: simulate, validate, profile and query the project's data."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
import yaml
from rich.table import Table

from prodml.cli._common import console, fmt_seconds, handle_errors, kv_table, project_of
from prodml.core.errors import ConfigError
from prodml.core.files import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from prodml.data.contracts import ValidationReport

app = typer.Typer(help="Simulate, validate, profile and query data.", no_args_is_help=True)


@app.command()
@handle_errors
def simulate(
    out: Annotated[Path, typer.Option(help="Directory to write the Parquet tables into.")],
    customers: Annotated[int, typer.Option(help="Number of customers.")] = 5_000,
    days: Annotated[int, typer.Option(help="Days of history.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 0,
    drift: Annotated[float, typer.Option(help="Drift strength in [0, 1].")] = 0.0,
    drift_start: Annotated[
        Optional[int], typer.Option(help="Day the drift starts (default: never).")  # noqa: UP045
    ] = None,
) -> None:
    """Generate the demo world: customers, sessions, payments, tickets and churn labels."""
    from prodml.data.simulate import simulate as run
    from prodml.data.simulate import write_world

    start = time.perf_counter()
    world = run(customers, days, seed, drift, drift_start)
    paths = write_world(world, out)
    seconds = time.perf_counter() - start
    table = Table(title=f"Simulated world in {out}", title_justify="left")
    for col in ("table", "rows", "file"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for name, path in paths.items():
        table.add_row(name, f"{world[name].num_rows:,}", str(path))
    console.print(table)
    events = sum(world[n].num_rows for n in ("sessions", "payments", "tickets"))
    console.print(f"{events:,} events in {fmt_seconds(seconds)}")


@app.command()
@handle_errors
def validate(
    source: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--source", "-s", help="Validate only these sources (repeatable)."),
    ] = None,
    as_of: Annotated[
        Optional[datetime],  # noqa: UP045
        typer.Option(help="Time that freshness is measured at (default: now, UTC)."),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option(help="Report directory (default: .prodml/reports).")  # noqa: UP045
    ] = None,
) -> None:
    """Check the data against the contract in prodml.yaml; exit 3 on violations."""
    from rich.progress import Progress

    from prodml.data.sources import Catalog
    from prodml.data.validate import validate_project, write_report

    project = project_of()
    catalog = Catalog(project)
    names = source or list(project.contract)
    if not names:  # a named source without a contract is refused below, naming the ones that have one
        console.print(
            f"[yellow]nothing to check:[/] {project.root / 'prodml.yaml'} declares no contract, so no data "
            "was read and nothing was validated.\n"
            "write one with 'prodml data profile --write-contract' and paste it under 'contract:'"
        )
        return
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("validating", total=len(names))

        def step(name: str) -> None:
            progress.update(task, advance=1, description=f"reading {name}")

        report = validate_project(catalog, sources=source or (), as_of=as_of, on_table=step)
    json_path, html_path = write_report(report, out or project.state_dir / "reports", project=project.name)
    _print_report(report)
    console.print(f"report: {json_path}  {html_path}")
    if not report.ok:
        raise typer.Exit(3)


def _print_report(report: ValidationReport) -> None:
    rows = ", ".join(f"{t} {n:,}" for t, n in report.rows.items())
    if report.ok:
        console.print(f"[green]✓ all contracts hold[/] ({rows}; {fmt_seconds(report.seconds)})")
        return
    table = Table(title=f"{len(report.violations)} violation(s)", title_justify="left")
    for col in ("table", "column", "rule", "rows", "sample row ids", "what to do"):
        table.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
    for v in report.violations:
        sample = ", ".join(map(str, v.sample))
        table.add_row(v.table, v.column or "", v.rule, f"{v.count:,}", sample, v.detail)
    console.print(table)
    console.print(f"[red]✗ contract violated[/] ({rows}; {fmt_seconds(report.seconds)})")


@app.command()
@handle_errors
def profile(
    source: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--source", "-s", help="Profile only these sources (repeatable)."),
    ] = None,
    write_contract: Annotated[
        bool, typer.Option(help="Write an inferred contract for these sources to --contract-file.")
    ] = False,
    contract_file: Annotated[
        Path, typer.Option(help="Where --write-contract writes (relative to the project).")
    ] = Path("contract.inferred.yaml"),
) -> None:
    """Profile sources (nulls, distinct values, ranges, top values); optionally infer a contract."""
    from prodml.data.profile import EXACT_DISTINCT_ROWS as EXACT
    from prodml.data.profile import infer_contract, profile_table
    from prodml.data.sources import Catalog

    project = project_of()
    catalog = Catalog(project)
    names = source or catalog.names
    contracts = {}
    for name in names:
        data = catalog.read(name)
        n, cols = profile_table(data)
        table = Table(title=f"{name}: {n:,} rows", title_justify="left")
        for col in ("column", "dtype", "nulls", "distinct", "min", "max", "top values"):
            table.add_column(col, justify="right" if col in ("nulls", "distinct") else "left")
        for c in cols:
            top = ", ".join(f"{v} ({k:,})" for v, k in c.top[:4])
            table.add_row(
                c.name,
                c.dtype or "?",
                f"{c.nulls:,}",
                f"~{c.distinct:,}" if c.approximate else f"{c.distinct:,}",
                _short(c.min),
                _short(c.max),
                top,
            )
        console.print(table)
        if any(c.approximate for c in cols):
            console.print(
                f"~ distinct counts are estimates (HyperLogLog, a few percent off) above {EXACT:,} rows"
            )
        if write_contract:
            contracts[name] = infer_contract(data, profile=(n, cols))
    if write_contract:
        path = contract_file if contract_file.is_absolute() else project.root / contract_file
        header = (
            "# Inferred by `prodml data profile --write-contract`: edit it, then paste it under "
            "`contract:` in prodml.yaml.\n"
        )
        atomic_write_text(path, header + yaml.safe_dump({"contract": contracts}, sort_keys=False))
        console.print(f"inferred contract written to {path}")


def _short(v: object) -> str:
    s = "" if v is None else str(v)
    return s if len(s) <= 24 else s[:21] + "..."


@app.command()
@handle_errors
def query(
    sql: Annotated[str, typer.Argument(help="DuckDB SQL; tables are the source names.")],
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 20,
    out: Annotated[
        Optional[Path], typer.Option(help="Write the whole result to this Parquet file.")  # noqa: UP045
    ] = None,
) -> None:
    """Run SQL over the project's sources (joins, window functions) with DuckDB."""
    import pyarrow.parquet as pq

    from prodml.data.sources import Catalog

    if limit < 0:
        raise ConfigError(f"--limit {limit} is negative", hint="use 0 or more")
    project = project_of()
    result = Catalog(project).query(sql)
    if out is not None:
        with atomic_path(out) as tmp:
            pq.write_table(result, tmp)
    table = Table(title=f"{result.num_rows:,} row(s)", title_justify="left")
    for name in result.column_names:
        table.add_column(name)
    for row in result.slice(0, limit).to_pylist():
        table.add_row(*(_short(v) for v in row.values()))
    console.print(table)
    if out is not None:
        console.print(kv_table("written", [("file", out), ("rows", f"{result.num_rows:,}")]))
