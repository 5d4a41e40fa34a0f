"""``prodml features``: build the point-in-time correct training frame."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from prodml.cli._common import console, fmt_seconds, handle_errors, kv_table, project_of

if TYPE_CHECKING:
    from prodml.features.offline import TrainingFrame

app = typer.Typer(help="Build features.", no_args_is_help=True)


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
