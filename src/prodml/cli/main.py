"""The root of the CLI: global options and one sub-app per lifecycle stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prodml import __version__
from prodml.cli import batch, data, features, models, rollout
from prodml.cli._common import State, set_state
from prodml.cli.demo import demo
from prodml.cli.deploy import app as deploy_app
from prodml.cli.monitor import app as monitor_app
from prodml.cli.project import init
from prodml.cli.serve import serve
from prodml.cli.stream import app as stream_app
from prodml.cli.train import train
from prodml.core.logging import configure_logging
from prodml.core.settings import Settings

app = typer.Typer(
    name="prodml",
    help="From raw data to a monitored production ML service, driven by prodml.yaml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(features.app, name="features")
app.add_typer(models.app, name="models")
app.add_typer(monitor_app, name="monitor")
app.add_typer(deploy_app, name="deploy")
app.add_typer(stream_app, name="stream")
app.add_typer(batch.app, name="batch")
app.add_typer(rollout.app, name="rollout")
app.command()(init)
app.command()(train)
app.command()(serve)
app.command()(demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prodml {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    project: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--project", "-p", help="prodml.yaml, or its directory (default: ./prodml.yaml)."),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """prodml: one project file, one CLI, the whole ML lifecycle."""
    settings = Settings()
    configure_logging(
        "DEBUG" if debug or settings.debug else settings.log_level, json_lines=settings.log_json
    )
    set_state(
        State(
            project=project or settings.project,
            debug=debug or settings.debug,
            tracking_uri=settings.tracking_uri,
            admin_token=settings.admin_token,
        )
    )
