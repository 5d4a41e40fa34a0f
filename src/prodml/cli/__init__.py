"""The ``prodml`` command line: ``prodml --help`` lists the commands."""

from __future__ import annotations

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``prodml`` script."""
    from prodml.cli.main import app

    app()


def __getattr__(name: str) -> object:
    if name == "app":
        from prodml.cli.main import app

        return app
    raise AttributeError(name)
