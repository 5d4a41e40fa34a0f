"""What every command shares: the console, global options, project loading and error handling."""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from prodml.core.errors import ProdmlError
from prodml.core.project import Project, load_project

__all__ = ["State", "console", "err_console", "handle_errors", "project_of", "set_state"]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
logger = logging.getLogger("prodml.cli")

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class State:
    """Global options, set by the root callback and read by every command."""

    project: Path | None = None
    debug: bool = False
    tracking_uri: str | None = None
    admin_token: str | None = None


# Set by the root callback for the one command a process (or a CliRunner call) runs.
_state = State()


def set_state(state: State) -> None:
    global _state
    _state = state


def tracking_uri() -> str | None:
    """PRODML_TRACKING_URI, when set (it wins over the project file and MLFLOW_TRACKING_URI)."""
    return _state.tracking_uri


def admin_token() -> str | None:
    """PRODML_ADMIN_TOKEN: enables the server's admin port."""
    return _state.admin_token


def project_of() -> Project:
    """Load the project named by ``--project`` (or ``./prodml.yaml``)."""
    return load_project(_state.project)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn prodml errors into a short message and their exit code; ``--debug`` adds the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        debug = _state.debug
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except ProdmlError as exc:
            if debug:
                err_console.print(traceback.format_exc(), markup=False)
            # the message and hint are plain text: "pip install 'prodml[serve]'" keeps its brackets
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
            if exc.hint:
                err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:  # an unexpected bug: still no traceback unless asked for
            if debug:
                err_console.print(traceback.format_exc(), markup=False)
            err_console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}", soft_wrap=True
            )
            err_console.print("[yellow]hint:[/] rerun with --debug for the traceback, and report it")
            raise typer.Exit(1) from None

    return wrapper


def fmt_seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows:
        table.add_row(k, str(v))
    return table
