"""Validate a project's sources against its contract and write ``validation.json`` + HTML."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from prodml.core.errors import ConfigError
from prodml.core.files import atomic_write_text
from prodml.data.contracts import ValidationReport, validate_tables
from prodml.data.report import render_validation_html
from prodml.data.sources import Catalog

__all__ = ["validate_project", "write_report"]


def validate_project(
    catalog: Catalog,
    *,
    sources: Sequence[str] = (),
    as_of: datetime | None = None,
    on_table: Callable[[str], None] | None = None,
) -> ValidationReport:
    """Read every source that has a contract (or those in ``sources``) and validate it.

    ``on_table`` is called with each source name before it is read (for progress bars).
    """
    contracts = catalog.project.contract
    names = list(sources) or list(contracts)
    for name in names:
        if name not in contracts:
            raise ConfigError(
                f"source '{name}' has no contract",
                hint=f"add 'contract.{name}' to prodml.yaml; sources with one: "
                + (", ".join(contracts) or "(none)"),
            )
    tables = {}
    for name in names:
        if on_table is not None:
            on_table(name)
        tables[name] = catalog.read(name)
    return validate_tables(tables, {n: contracts[n] for n in names}, as_of=as_of)


def write_report(report: ValidationReport, out_dir: Path, *, project: str) -> tuple[Path, Path]:
    """Write ``validation.json`` and ``validation.html`` into ``out_dir`` atomically."""
    json_path, html_path = out_dir / "validation.json", out_dir / "validation.html"
    atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    atomic_write_text(html_path, render_validation_html(report, project=project))
    return json_path, html_path
