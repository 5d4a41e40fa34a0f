"""``prodml.batch.score``: one scoring job as a plain function (the CLI, the pipeline and Airflow call it)."""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prodml.batch.commit import PROFILE, OutputError, Staging
from prodml.batch.inputs import FORMATS, open_input
from prodml.batch.model import resolve_model
from prodml.batch.plan import Outcome, Plan
from prodml.batch.profile import batch_profile
from prodml.batch.scorer import check_input_schema
from prodml.core.errors import ConfigError, DataError, ProdmlError
from prodml.core.files import atomic_write_text
from prodml.core.project import Project

__all__ = ["ENGINES", "BatchResult", "score"]

logger = logging.getLogger(__name__)

ENGINES = ("local", "spark")
BATCH_ROWS = 65_536


@dataclass
class BatchResult:
    """A committed job: where, how many rows, and the ``_SUCCESS`` document."""

    output: str
    rows: int
    scored: int
    rejected: int
    seconds: float
    success: dict[str, Any]
    profile_path: Path | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def score(
    input: str,
    output: str,
    *,
    model: str | None = None,
    package: Path | None = None,
    project: Project | None = None,
    tracking_uri: str | None = None,
    engine: str = "local",
    id_column: str | None = None,
    output_format: str | None = None,
    input_format: str | None = None,
    max_reject_rate: float = 0.01,
    partition_by: str | None = None,
    batch_rows: int = BATCH_ROWS,
    workers: int | None = None,
    scored_at: datetime | None = None,
    spark_master: str | None = None,
    profile: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> BatchResult:
    """Score every row of ``input`` with a registered model (or a package directory) into ``output``.

    Args:
        input: a file, directory, glob or ``s3://`` URI of Parquet, ORC or CSV.
        output: the output directory (local or ``s3://``), replaced atomically on success.
        model: ``NAME@alias``, ``NAME/VERSION`` or ``NAME``; default ``<project>@champion``.
        package: a local package directory instead of the registry.
        project: the project (tracking URI, entity column, package cache, serve settings).
        engine: ``local`` (pyarrow + ONNX Runtime) or ``spark`` (``mapInArrow``).
        id_column: the row id copied to the output; default the project's entity when the input has it,
            else ``row`` (the row's position; the local engine only).
        output_format: ``parquet``, ``orc`` or ``csv`` (default: the input's).
        max_reject_rate: the job fails, writing nothing, when more rows than this fraction break the
            model's input schema.
        partition_by: write ``COL=value/`` directories by this column (an input or output column).
        scored_at: the time written on every row; pin it for a byte-identical rerun.
        spark_master: the Spark master (default ``PRODML_SPARK_MASTER``, else ``local[2]``).
        on_progress: called with the row count of each finished batch.

    Returns:
        The committed job's counts and its ``_SUCCESS`` document.

    Raises:
        ConfigError: bad arguments, or an input the model cannot take (missing columns, wrong types).
        TooManyRejects: the reject rate was exceeded; nothing was written.
        OutputError: the output could not be written (e.g. a full disk); the previous output is intact.

    Example:
        >>> score("data/customers.parquet", "out/scores", model="churn@champion", project=p)  # doctest: +SKIP
    """
    started = time.perf_counter()
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}", hint="use --engine local or --engine spark")
    if not 0.0 <= max_reject_rate <= 1.0:
        raise ConfigError(f"--max-reject-rate {max_reject_rate!r} is not a fraction", hint="e.g. 0.01 or 1%")
    if output_format is not None and output_format not in FORMATS:
        raise ConfigError(f"unknown output format {output_format!r}", hint="use parquet, orc or csv")
    if batch_rows < 1:
        raise ConfigError(f"batch size {batch_rows} must be positive", hint="e.g. 65536")
    resolved = _model(model, package, project, tracking_uri)
    schema = resolved.package.schema
    strings = [c["name"] for c in schema["inputs"] if c["dtype"] == "string"]
    source = open_input(input, input_format, strings=strings)
    check_input_schema(source.schema, schema, f"input {input}")
    columns = set(source.schema.names)
    if id_column is None and project is not None and project.entity in columns:
        id_column = project.entity
    for option, column in (("--id-column", id_column), ("--partition-by", partition_by)):
        if (
            column is not None
            and column not in columns
            and not (option == "--partition-by" and column in ("prediction", "model_version"))
        ):
            raise ConfigError(
                f"{option} {column!r} is not a column of {input}",
                hint=f"its columns: {', '.join(sorted(columns)[:20])}",
            )
    if engine == "spark" and id_column is None:
        raise ConfigError(
            "the Spark engine needs an id column (rows have no global order there)",
            hint="pass --id-column COLUMN",
        )
    plan = Plan(
        input=source,
        model=resolved,
        output_format=output_format or source.format,
        id_column=id_column,
        partition_by=partition_by,
        carry=(partition_by,) if partition_by is not None and partition_by in columns else (),
        max_reject_rate=max_reject_rate,
        batch_rows=batch_rows,
        scored_at=scored_at or datetime.now(UTC),
        workers=workers or _usable_cpus(),
        unknown_category=project.serve.unknown_category if project is not None else "reject",
        on_progress=on_progress or (lambda rows: None),
    )
    staging = Staging(output)
    staging.begin()
    timings: dict[str, float] = {"model": time.perf_counter() - started}
    try:
        t0 = time.perf_counter()
        outcome = _run(plan, staging, engine, spark_master)
        timings["score"] = time.perf_counter() - t0
        fingerprint = source.fingerprint()
        profiled = None
        if profile:
            t0 = time.perf_counter()
            profiled = _profile(plan, staging, outcome)
            with staging.fs.open_output_stream(staging.path(PROFILE)) as out:
                out.write(json.dumps(profiled, indent=2).encode())
            timings["profile"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - started
        success = _success(plan, engine, outcome, fingerprint, timings)
        staging.commit(success)
    except OSError as exc:
        staging.abort()
        raise _translated(exc, output) from exc
    except BaseException:
        staging.abort()
        raise
    profile_path = None
    if profiled is not None and project is not None:
        profile_path = project.state_dir / "profiles" / "batch" / resolved.name / f"{fingerprint[:16]}.json"
        atomic_write_text(profile_path, json.dumps({**profiled, "job": success}, indent=2, default=str))
    seconds = time.perf_counter() - started
    return BatchResult(
        output, outcome.rows, outcome.scored, outcome.rejects.rows, seconds, success, profile_path
    )


def _model(model: str | None, package: Path | None, project: Project | None, tracking_uri: str | None) -> Any:
    if model is not None and package is not None:
        raise ConfigError(
            "give --model or --package, not both", hint="--package scores with a local directory"
        )
    cache = (
        project.state_dir / "models"
        if project is not None
        else Path(os.environ.get("PRODML_CACHE_DIR", Path.home() / ".cache" / "prodml")) / "models"
    )
    if package is None:
        if model is None:
            if project is None:
                raise ConfigError("no model given", hint="pass --model NAME@alias or --package DIR")
            model = f"{project.tracking.registered_model or project.name}@champion"
        if project is not None:
            from prodml.registry.mlflow import tracking_uri_for

            tracking_uri = tracking_uri_for(project, override=tracking_uri)
        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if tracking_uri is None:
            raise ConfigError(
                f"no registry to resolve {model!r} in",
                hint="run inside a project, set PRODML_TRACKING_URI, or pass --package DIR",
            )
    return resolve_model(ref=model, package_dir=package, tracking_uri=tracking_uri, cache_dir=cache)


def _run(plan: Plan, staging: Staging, engine: str, master: str | None) -> Outcome:
    if engine == "spark":
        from prodml.batch.spark import run_spark

        return run_spark(plan, staging, master=master)
    from prodml.batch.local import run_local

    return run_local(plan, staging)


def _prediction_column(schema: dict[str, Any]) -> str | None:
    task, classes = schema.get("task"), schema.get("classes")
    if task == "binary" and classes and len(classes) == 2:
        return f"probability_{classes[1]}"
    if task in ("regression", "ranking"):
        return "prediction"
    return None


def _profile(plan: Plan, staging: Staging, outcome: Outcome) -> dict[str, Any]:
    prediction = _prediction_column(plan.model.package.schema)
    files = [staging.path(f) for f in outcome.files]
    if plan.partition_by is not None:
        files = []  # partition columns are not in the files; the prediction profile is skipped
    return batch_profile(
        plan.input, plan.model.package.schema, (staging.fs, files, plan.output_format), prediction
    )


def _success(
    plan: Plan, engine: str, outcome: Outcome, fingerprint: str, timings: dict[str, float]
) -> dict[str, Any]:
    from prodml import __version__

    return {
        "rows": outcome.rows,
        "scored": outcome.scored,
        "rejected": outcome.rejects.rows,
        "reject_rate": outcome.rejects.rows / outcome.rows if outcome.rows else 0.0,
        "max_reject_rate": plan.max_reject_rate,
        "rejects": outcome.rejects.by_column,
        "input": {
            "path": plan.input.path,
            "format": plan.input.format,
            "files": len(plan.input.files),
            "fingerprint": fingerprint,
        },
        "model": {
            "name": plan.model.name,
            "version": plan.model.version,
            "sha256": plan.model.digests.get("model.onnx"),
        },
        "output": {"format": plan.output_format, "files": outcome.files, "rejects": outcome.reject_files},
        "engine": engine,
        "scored_at": plan.scored_at.isoformat(),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "rows_per_s": round(outcome.rows / timings["score"], 1) if timings.get("score") else None,
        "prodml": __version__,
    }


def _translated(exc: OSError, output: str) -> ProdmlError:
    text = str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text:
        return OutputError(
            f"the disk is full writing {output}: {text.splitlines()[0]}",
            hint="the previous output (if any) is unchanged, no temporary file is left; free space and rerun",
        )
    return DataError(
        f"scoring into {output} failed: {text.splitlines()[0]}",
        hint="the previous output (if any) is unchanged; check the input, the output path and access",
    )
