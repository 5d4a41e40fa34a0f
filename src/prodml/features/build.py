"""``prodml features build``: compute the training frame and write it with its lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from prodml.core.files import atomic_path, atomic_write_text
from prodml.data.sources import Catalog
from prodml.features.offline import TrainingFrame, build_training_frame

__all__ = ["build_features", "lineage_path"]


def lineage_path(output: Path) -> Path:
    """Where the lineage of a training frame lives: beside it, ``<stem>.lineage.json``."""
    return output.with_name(output.stem + ".lineage.json")


def build_features(catalog: Catalog) -> tuple[TrainingFrame, Path]:
    """Build the project's training frame and write Parquet + lineage atomically; return both."""
    project = catalog.project
    frame = build_training_frame(catalog)
    output = Path(project.resolve(project.features.output))
    lineage = {
        **frame.lineage,
        "categorical": frame.categorical,
        "dates": frame.dates,
        "target": project.target.column,
        "entity": project.entity,
        "timestamp": project.target.timestamp,
    }
    # The lineage travels inside the Parquet file too, so the frame is self-describing even if the
    # human-readable sidecar is lost or stale.
    table = frame.table.replace_schema_metadata({"prodml.lineage": json.dumps(lineage)})
    with atomic_path(output) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    atomic_write_text(lineage_path(output), json.dumps(lineage, indent=2) + "\n")
    return frame, output
