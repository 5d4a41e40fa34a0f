"""``prodml batch``: score whole tables with the served model's validation and runtime."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from prodml.cli._common import console, fmt_seconds, handle_errors, kv_table, project_of, tracking_uri
from prodml.core.errors import ConfigError

app = typer.Typer(
    help="Batch inference: Parquet/ORC/CSV in, predictions out, atomically.", no_args_is_help=True
)


def parse_rate(text: str) -> float:
    """``1%`` → 0.01; ``0.01`` → 0.01."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(
            f"--max-reject-rate {text!r} is not a rate", hint="write a percentage (1%) or a fraction (0.01)"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--max-reject-rate {text!r} is outside 0–100%", hint="e.g. --max-reject-rate 1%")
    return value


def _scored_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--scored-at {text!r} is not an ISO time", hint="e.g. --scored-at 2026-12-01T00:00:00+00:00"
        ) from None
    if value.tzinfo is None:
        raise ConfigError(f"--scored-at {text!r} has no time zone", hint="append +00:00 for UTC")
    return value


@app.command("score")
@handle_errors
def score_command(
    input: Annotated[str, typer.Option("--input", "-i", help="File, directory, glob or s3:// URI.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output directory (local or s3://).")],
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="NAME@alias, NAME/VERSION or NAME (default: PROJECT@champion)."),
    ] = None,
    package: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Score with a local model package directory instead of the registry."),
    ] = None,
    engine: Annotated[str, typer.Option(help="local (pyarrow + ONNX Runtime) or spark.")] = "local",
    id_column: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Row id copied to the output (default: the project's entity, else 'row')."),
    ] = None,
    format: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--format", help="Output format: parquet, orc or csv (default: the input's)."),
    ] = None,
    input_format: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Input format when the extension does not say."),
    ] = None,
    max_reject_rate: Annotated[
        str, typer.Option(help="Fail (writing nothing) above this share of rejected rows.")
    ] = "1%",
    partition_by: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Write COL=value/ directories by this column."),
    ] = None,
    spark_master: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Spark master (default: PRODML_SPARK_MASTER, else local[2])."),
    ] = None,
    scored_at: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="The time written on every row (ISO, with zone); pin it for identical reruns."),
    ] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per record batch.")] = 65_536,
) -> None:
    """Score every row of --input into --output: predictions, rejects (_rejects/), _SUCCESS, _profile.json."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from prodml.batch import score

    rate = parse_rate(max_reject_rate)
    pinned = _scored_at(scored_at)
    try:
        project = project_of()
    except ConfigError:
        if package is None and model is None:
            raise
        project = None  # a package or a reference with PRODML_TRACKING_URI needs no project
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,.0f} rows"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"scoring ({engine})", total=None, speed="")

        def advance(rows: int) -> None:
            progress.advance(task, rows)
            speed = progress.tasks[0].speed
            progress.update(task, speed=f"{speed:,.0f} rows/s" if speed else "")

        result = score(
            input,
            output,
            model=model,
            package=package,
            project=project,
            tracking_uri=tracking_uri(),
            engine=engine,
            id_column=id_column,
            output_format=format,
            input_format=input_format,
            max_reject_rate=rate,
            partition_by=partition_by,
            batch_rows=batch_rows,
            scored_at=pinned,
            spark_master=spark_master,
            on_progress=advance,
        )
    console.print(summary(result.success, result.output, result.seconds))
    if result.profile_path is not None:
        console.print(f"input profile for the monitor: {result.profile_path}")


def summary(success: dict[str, Any], output: str, seconds: float) -> Any:
    """The job's summary table, from its ``_SUCCESS`` document."""
    rows = success["rows"]
    lines: list[tuple[str, Any]] = [
        ("output", output),
        ("model", f"{success['model']['name']} v{success['model']['version']}"),
        ("engine", success["engine"]),
        ("rows", f"{rows:,}"),
        ("scored", f"{success['scored']:,}"),
        (
            "rejected",
            f"{success['rejected']:,} ({success['reject_rate']:.2%}; limit {success['max_reject_rate']:.2%})",
        ),
        ("files", f"{len(success['output']['files'])} {success['output']['format']}"),
        ("time", f"{fmt_seconds(seconds)} ({rows / seconds:,.0f} rows/s end to end)" if seconds else "-"),
    ]
    for column, entry in sorted(success["rejects"].items()):
        lines.append(
            (
                f"  rejects: {column}",
                f"{entry['rows']:,} e.g. ids {entry['sample_ids'][:3]}: {entry['sample_reason']}",
            )
        )
    return kv_table("batch score", lines)
