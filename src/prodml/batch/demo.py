"""``prodml demo``'s batch step: score the latest feature row of every entity with the champion."""

from __future__ import annotations

from prodml.batch.job import BatchResult, score
from prodml.core.errors import DataError
from prodml.core.files import atomic_path
from prodml.core.project import Project

__all__ = ["score_latest"]


def score_latest(
    project: Project, *, tracking_uri: str | None = None, model: str | None = None
) -> BatchResult:
    """Score each entity's latest row of the training frame (``prodml features build``'s output) with
    ``model`` (default ``<project>@champion``) into ``.prodml/batch/latest/``.

    Returns the committed job (its ``_SUCCESS`` document holds the counts and timings).
    """
    import duckdb

    frame = project.state_dir / "features" / "training.parquet"
    if not frame.is_file():
        raise DataError(f"no feature frame at {frame}", hint="run 'prodml features build' first")
    entity, at = project.entity, project.target.timestamp
    latest = project.state_dir / "batch" / "latest-input.parquet"
    latest.parent.mkdir(parents=True, exist_ok=True)
    newest = f'ORDER BY "{at}" DESC' if at else ""
    with atomic_path(latest) as tmp:
        duckdb.execute(
            f"COPY (SELECT * FROM read_parquet('{frame}') QUALIFY row_number() OVER "
            f'(PARTITION BY "{entity}" {newest}) = 1 ORDER BY "{entity}") TO \'{tmp}\' (FORMAT parquet)'
        )
    return score(
        str(latest),
        str(project.state_dir / "batch" / "latest"),
        model=model,
        project=project,
        tracking_uri=tracking_uri,
        id_column=entity,
    )
