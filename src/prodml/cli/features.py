"""``prodml features``: the training frame, the online store, train/serve skew, Feast export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from prodml.cli._common import console, fmt_seconds, handle_errors, kv_table, project_of
from prodml.core.errors import ConfigError

if TYPE_CHECKING:
    from prodml.core.project import Project
    from prodml.data.online_store import OnlineSpec
    from prodml.features.offline import TrainingFrame

app = typer.Typer(
    help="Build features, fill the online store, check skew, export to Feast.", no_args_is_help=True
)


@app.command()
@handle_errors
def build() -> None:
    """Compute every feature as of each label's timestamp and write the training frame (Parquet)."""
    from prodml.data.sources import Catalog
    from prodml.features.build import build_features, lineage_path

    project = project_of()
    with console.status("building features"):
        frame, output = build_features(Catalog(project))
    console.print(kv_table("Training frame", summary_rows(frame, output)))
    console.print(f"lineage: {lineage_path(output)}")


def summary_rows(frame: TrainingFrame, output: Path) -> list[tuple[str, object]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    target = frame.table.column(frame.table.column_names[-1])
    rows: list[tuple[str, object]] = [
        ("rows", f"{frame.table.num_rows:,}"),
        ("features", len(frame.features)),
    ]
    numeric = pa.types.is_integer(target.type) or pa.types.is_floating(target.type)
    if frame.table.num_rows and numeric:
        rows.append(("target mean", f"{pc.mean(target).as_py():.4f}"))
    rows += [
        ("time", fmt_seconds(frame.seconds)),
        ("lineage hash", frame.lineage["hash"][:16]),
        ("output", output),
    ]
    return rows


def _time(value: str | None, option: str) -> datetime | None:
    """An ISO time from the command line; an aware time becomes naive UTC (as the sources store it)."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is not an ISO time", hint=f"e.g. {option} 2025-07-01T00:00:00"
        ) from None
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


def online_settings(project: Project) -> OnlineSpec:
    """``features.online`` of the project (when the project model has it) under the
    ``PRODML_FEATURES__ONLINE__*`` variables."""
    from prodml.data.online_store import online_spec

    return online_spec(getattr(project.features, "online", None))


@app.command()
@handle_errors
def materialize(
    as_of: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--as-of", help="Materialisation time T (ISO); default: the latest event in the sources."
        ),
    ] = None,
    since: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Recompute only what can have changed since this time (ISO), or 'last'."),
    ] = None,
) -> None:
    """Write every entity's latest feature values (as of T) to the online store: SQLite, or Redis when
    features.online.redis_url is set. Incremental with --since, idempotent, recorded in the store."""
    from prodml.data.online_store import opened
    from prodml.data.sources import Catalog
    from prodml.features.materialize import materialize as run

    project = project_of()
    spec = online_settings(project)
    since_value: datetime | str | None = "last" if since == "last" else _time(since, "--since")
    with opened(spec, root=project.root, name=project.name) as store, console.status("materialising"):
        result = run(Catalog(project), store, as_of=_time(as_of, "--as-of"), since=since_value)
    where = spec.redis_url.split("@")[-1] if spec.redis_url else project.resolve(spec.path)
    rows: list[tuple[str, object]] = [
        ("store", where),
        ("as of", result.as_of),
        ("since", result.since or "— (full)"),
        ("entities", f"{result.entities:,}"),
        ("written", f"{result.written:,}"),
        ("features", len(result.features)),
        ("definitions", result.definitions[:16]),
        ("time", fmt_seconds(result.seconds)),
    ]
    console.print(kv_table("Online store", rows))


@app.command()
@handle_errors
def skew(
    served: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Argument(help="Request-log directory or Parquet of served rows; default: .prodml/requests."),
    ] = None,
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Also write the report as JSON here."),
    ] = None,
    max_share: Annotated[
        float, typer.Option(help="Exit 3 when a feature differs in more than this share of rows.")
    ] = 0.0,
    rtol: Annotated[float, typer.Option(help="Relative tolerance for numbers (float32).")] = 1e-6,
) -> None:
    """Recompute logged served feature vectors on the offline path (same entity, same time) and report
    the differences per feature."""
    from rich.table import Table

    from prodml.data.sources import Catalog
    from prodml.features.skew import read_served, skew_report

    project = project_of()
    path = served or project.state_dir / "requests"
    with console.status("recomputing served rows offline"):
        report = skew_report(Catalog(project), read_served(path), rtol=rtol)
    table = Table(title=f"Train/serve skew over {report.rows:,} served rows", title_justify="left")
    for col, justify in (
        ("feature", "left"),
        ("differing", "right"),
        ("share", "right"),
        ("max |Δ|", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for f in sorted(report.features, key=lambda f: -f.share):
        style = "red" if f.share > max_share else None
        gap = "" if f.max_abs is None else f"{f.max_abs:.4g}"
        table.add_row(f.name, f"{f.differing:,}", f"{f.share:.2%}", gap, style=style)
    console.print(table)
    if report.skipped:
        console.print(f"not entity features (not compared): {', '.join(report.skipped)}")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        console.print(f"report: {output}")
    if report.worst() > max_share:
        worst = max(report.features, key=lambda f: f.share)
        example: dict[str, Any] = worst.examples[0] if worst.examples else {}
        console.print(f"[bold red]skew:[/] {worst.name} differs in {worst.share:.2%} of rows, e.g. {example}")
        raise typer.Exit(3)


@app.command("export-feast")
@handle_errors
def export_feast(
    directory: Annotated[Path, typer.Argument(help="The Feast repository to write.")],
    as_of: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--as-of", help="Time of the exported values (ISO); default: the latest event."),
    ] = None,
) -> None:
    """Write an equivalent Feast repository (entity, source, feature views) that 'feast apply' accepts;
    its online store is features.online.redis_url's Redis, or SQLite inside the repository."""
    from prodml.data.sources import Catalog
    from prodml.features.feast import export_feast as run

    project = project_of()
    spec = online_settings(project)
    with console.status("exporting"):
        result = run(
            Catalog(project),
            directory,
            as_of=_time(as_of, "--as-of"),
            redis_url=spec.redis_url,
            ttl_s=spec.ttl_s,
        )
    rows: list[tuple[str, object]] = [
        ("repository", result.directory),
        ("project", result.project),
        ("entity", result.entity),
        ("feature views", ", ".join(f"{v} ({len(n)})" for v, n in result.views.items())),
        ("entities", f"{result.rows:,}"),
        ("as of", result.as_of),
    ]
    console.print(kv_table("Feast repository", rows))
    t, second = datetime.fromisoformat(result.as_of), timedelta(seconds=1)
    window = f"{t - second:%Y-%m-%dT%H:%M:%S} {t + second:%Y-%m-%dT%H:%M:%S}"
    console.print(f"next: cd {directory} && feast apply && feast materialize {window}")
