"""``prodml models``: list, show, verify and promote registered model versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from prodml.cli._common import console, handle_errors, kv_table, project_of, tracking_uri

if TYPE_CHECKING:
    from prodml.core.project import Project
    from prodml.registry.mlflow import Registry

app = typer.Typer(help="Inspect, verify and promote registered models.", no_args_is_help=True)


def _registry() -> tuple[Project, Registry]:
    from prodml.registry.mlflow import Registry, tracking_uri_for

    project = project_of()
    return project, Registry(tracking_uri_for(project, override=tracking_uri()))


@app.command("list")
@handle_errors
def list_() -> None:
    """Every registered model and version with its aliases and holdout metrics."""
    from prodml.registry.promotion import METRIC_TAG

    _, registry = _registry()
    table = Table(title="Registered models", title_justify="left")
    for col in ("model", "version", "aliases", "estimator", "metrics", "created"):
        table.add_column(col)
    for name in registry.models():
        for mv in registry.versions(name):
            metrics = ", ".join(
                f"{k.removeprefix(METRIC_TAG)} {float(v):.4f}"
                for k, v in sorted(mv.tags.items())
                if k.startswith(METRIC_TAG)
            )
            created = datetime.fromtimestamp(mv.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
            table.add_row(
                name, mv.version, ", ".join(mv.aliases), mv.tags.get("prodml.estimator", ""), metrics, created
            )
    console.print(table)


@app.command()
@handle_errors
def show(ref: Annotated[str, typer.Argument(help="NAME@alias, NAME/VERSION or NAME (latest).")]) -> None:
    """Aliases, metrics, lineage and digests of one version."""
    _, registry = _registry()
    from prodml.registry.mlflow import DIGEST_TAG

    mv = registry.resolve(ref)
    rows = [
        ("model", mv.name),
        ("version", mv.version),
        ("aliases", ", ".join(mv.aliases) or "-"),
        ("run id", mv.run_id),
        ("source", mv.source),
    ]
    rows += [(k, v) for k, v in sorted(mv.tags.items()) if not k.startswith(DIGEST_TAG)]
    console.print(kv_table(f"{mv.name} version {mv.version}", rows))
    console.print(kv_table("sha256 digests", sorted(mv.digests.items())))


@app.command()
@handle_errors
def verify(ref: Annotated[str, typer.Argument(help="NAME@alias, NAME/VERSION or NAME (latest).")]) -> None:
    """Download the stored package and re-check every digest; exit non-zero naming a bad file."""
    import tempfile
    from pathlib import Path

    from prodml.export.package import load_package

    _, registry = _registry()
    mv = registry.resolve(ref)
    with tempfile.TemporaryDirectory() as tmp:
        package = load_package(registry.download(mv, Path(tmp) / "package"), mv.digests)
    console.print(
        f"[green]✓[/] {mv.name} version {mv.version}: {len(package.digests)} files match their digests"
    )


@app.command()
@handle_errors
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to give it.")] = "champion",
    force: Annotated[bool, typer.Option(help="Override a failing gate (needs --reason).")] = False,
    reason: Annotated[Optional[str], typer.Option(help="Why the gate is overridden.")] = None,  # noqa: UP045
) -> None:
    """Give a version an alias if it passes the promotion gate in prodml.yaml."""
    from prodml.registry.promotion import promote as run

    project, registry = _registry()
    verdict = run(registry, project.promotion, name, version, alias=alias, force=force, reason=reason)
    registry.cache_ref(f"{name}@{alias}", project.state_dir / "models")  # a local server starts on it at once
    note = "" if verdict.passed else " [yellow](gate overridden: " + "; ".join(verdict.reasons) + ")[/]"
    console.print(
        f"[green]✓[/] {name} version {version} is now '{alias}' ({verdict.metric} {verdict.value:.4f}){note}"
    )
