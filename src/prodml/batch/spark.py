"""The Spark engine: the same job on PySpark, the only module of prodml that imports pyspark.

The package's files are shipped to the executors with ``SparkContext.addFile`` (a directory named by the
package's digests) and verified there by :func:`prodml.export.package.load_package` against the digests
the driver resolved; each Python worker keeps one :class:`~prodml.batch.scorer.Scorer` (one ONNX Runtime
session) per package for as long as it lives. ``mapInArrow`` hands it Arrow record batches and takes back
one batch per input batch holding both the scored rows and the rejects (told apart by a kind column); the
result is persisted, counted (the reject-rate limit applies before anything is written), and written by
Spark's own writers into the job's temporary directory, whose files are then renamed into the local
engine's layout (:func:`prodml.batch.outputs.spark_layout`) so both engines commit the same way.

The master is ``--spark-master``, else ``PRODML_SPARK_MASTER``, else ``local[2]``; on a cluster the
executors need prodml installed (PySpark ships the scoring function by reference, the package as files).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from prodml.batch.commit import REJECTS, Staging
from prodml.batch.outputs import spark_layout
from prodml.batch.plan import Outcome, Plan
from prodml.batch.rejects import RejectReport
from prodml.batch.scorer import Scorer
from prodml.core.errors import DataError, MissingDependency, ProdmlError
from prodml.export.package import FILES, TamperedArtifact, load_package

__all__ = ["run_spark", "spark_session"]

logger = logging.getLogger(__name__)

KIND = "__prodml_kind"
REJECT_COLUMN, REJECT_REASON = "__prodml_reject_column", "__prodml_reject_reason"
DEFAULT_MASTER = "local[2]"
_SCORERS: dict[str, Scorer] = {}  # in each Python worker: one scorer (one ORT session) per package


@dataclass(frozen=True)
class _Job:
    """What each Python worker needs, shipped with the scoring function (plain values only)."""

    package_dir: str  # the name given to SparkContext.addFile
    digests: tuple[tuple[str, str], ...]
    version: str
    id_column: str | None
    carry: tuple[str, ...]
    max_rows: int
    unknown_category: str
    scored_at: datetime

    @property
    def key(self) -> str:
        return f"{self.package_dir}:{self.version}:{self.id_column}:{self.carry}:{self.max_rows}"


def _scorer(job: _Job) -> Scorer:
    scorer = _SCORERS.get(job.key)
    if scorer is None:
        from pyspark import SparkFiles

        package = load_package(SparkFiles.get(job.package_dir), dict(job.digests))  # verified here
        scorer = Scorer(
            package,
            version=job.version,
            id_column=job.id_column,
            carry=job.carry,
            max_rows=job.max_rows,
            unknown_category=job.unknown_category,
        )
        _SCORERS[job.key] = scorer
    return scorer


def _score_batches(batches: Iterator[pa.RecordBatch], job: _Job) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: each input batch → one batch of scored rows and rejects."""
    scorer = _scorer(job)
    for batch in batches:
        if batch.num_rows:
            result = scorer.score(batch, first_row=0, scored_at=job.scored_at)
            yield _combined(scorer.output_schema(batch.schema), result.output, result.rejects)


def _combined(
    schema: pa.Schema, output: pa.RecordBatch | None, rejects: pa.RecordBatch | None
) -> pa.RecordBatch:
    """Scored rows and rejects in one batch of the combined schema (:func:`_combined_schema`)."""
    parts = []
    if output is not None and output.num_rows:
        n = output.num_rows
        parts.append(
            pa.RecordBatch.from_arrays(
                [
                    *output.columns,
                    pa.nulls(n, pa.string()),
                    pa.nulls(n, pa.string()),
                    pa.repeat(pa.scalar("scored"), n),
                ],
                schema=_combined_schema(schema),
            )
        )
    if rejects is not None and rejects.num_rows:
        n = rejects.num_rows
        arrays = [rejects.column(0)] + [pa.nulls(n, f.type) for f in list(schema)[1:]]
        parts.append(
            pa.RecordBatch.from_arrays(
                [*arrays, rejects.column(1), rejects.column(2), pa.repeat(pa.scalar("rejected"), n)],
                schema=_combined_schema(schema),
            )
        )
    if not parts:
        return pa.RecordBatch.from_pylist([], schema=_combined_schema(schema))
    return parts[0] if len(parts) == 1 else pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


def _combined_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [
            *(f.with_nullable(True) for f in schema),
            pa.field(REJECT_COLUMN, pa.string()),
            pa.field(REJECT_REASON, pa.string()),
            pa.field(KIND, pa.string()),
        ]
    )


def spark_session(master: str | None = None) -> Any:
    """The active Spark session, else a new one on ``master`` / ``PRODML_SPARK_MASTER`` / ``local[2]``."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDependency("pyspark", "spark") from exc
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this venv's pyarrow and prodml
    master = master or os.environ.get("PRODML_SPARK_MASTER") or DEFAULT_MASTER
    builder: Any = SparkSession.builder
    return (
        builder.master(master)
        .appName("prodml-batch")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )


def _ship(spark: Any, plan: Plan) -> str:
    """Copy the verified package to a directory named by its digests and add it to the Spark job."""
    digests = plan.model.digests
    key = hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()[:16]
    name = f"prodml-package-{key}"
    local = Path(tempfile.gettempdir()) / "prodml-spark" / key / name
    if not local.is_dir():
        staging = local.parent / f".{name}.{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=True)
        for file in FILES:
            shutil.copyfile(plan.model.package.path / file, staging / file)
        try:
            staging.rename(local)
        except OSError:  # another job copied it first
            shutil.rmtree(staging, ignore_errors=True)
    if not any(f.rstrip("/").endswith(name) for f in spark.sparkContext.listFiles):
        spark.sparkContext.addFile(str(local), recursive=True)
    return name


def _uri(staging: Staging, path: str) -> str:
    return f"file://{path}" if staging.local else f"s3a://{path}"


def run_spark(plan: Plan, staging: Staging, *, master: str | None = None) -> Outcome:
    """Score ``plan``'s input on Spark into ``staging`` (not committed here)."""
    try:
        return _run(plan, staging, master)
    except ProdmlError:
        raise
    except Exception as exc:
        text = str(exc)
        if "TamperedArtifact" in text:
            lines = [ln.strip() for ln in text.splitlines() if "TamperedArtifact: " in ln]
            said = lines[-1].split("TamperedArtifact: ", 1)[1] if lines else "a package file was altered"
            raise TamperedArtifact(f"on a Spark executor: {said}") from exc
        if type(exc).__module__.startswith(("pyspark", "py4j")):
            first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
            raise DataError(
                f"the Spark job scoring {plan.input.path} failed: {first[:500]}",
                hint="rerun with --debug for Spark's message; the previous output is unchanged",
            ) from exc
        raise


def _run(plan: Plan, staging: Staging, master: str | None) -> Outcome:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    spark = spark_session(master)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(plan.batch_rows))
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    package_dir = _ship(spark, plan)
    scorer = Scorer(
        plan.model.package, version=plan.model.version, id_column=plan.id_column, carry=plan.carry, max_rows=1
    )
    source = plan.input
    local_input = isinstance(source.fs, pafs.LocalFileSystem)
    uris = [f"file://{f}" if local_input else f"s3a://{f}" for f in source.files]
    reader = spark.read.format(source.format)
    if source.format == "csv":
        reader = reader.option("header", True).schema(
            from_arrow_schema(source.schema, prefer_timestamp_ntz=True)
        )
    frame = reader.load(uris).select(*scorer.columns)
    out_schema = scorer.output_schema(source.schema)
    job = _Job(
        package_dir,
        tuple(sorted(plan.model.digests.items())),
        plan.model.version,
        plan.id_column,
        plan.carry,
        plan.batch_rows,
        plan.unknown_category,
        plan.scored_at,
    )
    combined = _combined_schema(out_schema)
    mapped = frame.mapInArrow(
        functools.partial(_score_batches, job=job), from_arrow_schema(combined, prefer_timestamp_ntz=True)
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {r[KIND]: int(r["count"]) for r in mapped.groupBy(KIND).count().collect()}
        rows, rejected = sum(counts.values()), counts.get("rejected", 0)
        report = RejectReport()
        if rejected:
            sample = mapped.filter(F.col(KIND) == "rejected").select(
                out_schema.names[0], REJECT_COLUMN, REJECT_REASON
            )
            for batch in pa.Table.from_pylist(
                [r.asDict() for r in sample.limit(10_000).collect()]
            ).to_batches():
                report.add(batch)
            report.rows = rejected  # the sample fills the examples; the count is the whole job's
        report.check(rows, plan.max_reject_rate, where=f"scoring {source.path}")
        written = f"{staging.tmp}/_spark"
        scored = mapped.filter(F.col(KIND) == "scored").select(*out_schema.names)
        _write(scored, _uri(staging, f"{written}/out"), plan)
        files = spark_layout(staging.fs, f"{written}/out", staging.tmp, plan.output_format)
        reject_files: dict[str, int] = {}
        if rejected:
            bad = mapped.filter(F.col(KIND) == "rejected").select(
                out_schema.names[0],
                F.col(REJECT_COLUMN).alias("column"),
                F.col(REJECT_REASON).alias("reason"),
            )
            _write(bad, _uri(staging, f"{written}/rejects"), plan, partition=False)
            reject_files = spark_layout(
                staging.fs, f"{written}/rejects", staging.path(REJECTS), plan.output_format
            )
        with contextlib.suppress(OSError):
            staging.fs.delete_dir(written)
    finally:
        mapped.unpersist()
    plan.on_progress(rows)
    return Outcome(
        rows, rows - rejected, report, files, {f"{REJECTS}/{k}": v for k, v in reject_files.items()}
    )


def _write(frame: Any, uri: str, plan: Plan, *, partition: bool = True) -> None:
    writer = frame.write.mode("error").format(plan.output_format)
    if plan.output_format == "csv":
        writer = writer.option("header", True)
    if partition and plan.partition_by is not None:
        writer = writer.partitionBy(plan.partition_by)
    writer.save(uri)
