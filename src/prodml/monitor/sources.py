"""Where monitored rows come from: the server's request log, or any Parquet/CSV path or project source.

Every source becomes one pandas frame with the feature columns, ``__prediction__`` (one score per row,
see :func:`prodml.export.drift.prediction_score`), and when known ``ts`` (epoch seconds), ``version``,
``request_id`` and ``label`` (feedback joined by request id).

Source specs (``prodml monitor report --source …``):

- ``requests`` (default): the project's request log: ``.prodml/requests``, or the Kafka topic when
  ``serve.request_log.kafka`` is set (:mod:`prodml.monitor.kafka`);
- ``kafka``: the Kafka request log (and its feedback topic) of ``serve.request_log.kafka``;
- ``log:DIR``: a request log directory (``requests/`` and ``feedback/`` Parquet parts);
- ``source:NAME``: a source of ``prodml.yaml`` (a batch output, a stream's log, a table);
- anything else: a path, directory or glob of Parquet or CSV files (``s3://`` too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from prodml.core.errors import DataError, SourceNotFound
from prodml.core.project import Project
from prodml.export.drift import PREDICTION, prediction_score

__all__ = ["from_table", "kafka_log", "load", "request_log"]

TIME_COLUMNS = ("ts", "timestamp", "event_ts", "prediction_ts")
PREDICTION_COLUMNS = ("prediction", "score", "probability", "variable")


def request_log(directory: Path) -> pd.DataFrame:
    """Every logged row of a request log directory, its prediction score, and its label if one arrived."""
    import duckdb

    parts = directory / "requests"
    if not any(parts.glob("*.parquet")):
        raise SourceNotFound(
            f"no request log under {parts}",
            hint="serve with request logging on (the default) and send traffic, or name --source",
        )
    con = duckdb.connect()
    table = con.sql(
        f"SELECT * FROM read_parquet('{parts}/*.parquet', union_by_name=true) ORDER BY ts, row"
    ).to_arrow_table()
    frame = from_table(table, ts="ts", prediction="prediction")
    feedback = directory / "feedback"
    if any(feedback.glob("*.parquet")):
        labels = con.sql(
            f"SELECT request_id, last(label ORDER BY ts) AS label "
            f"FROM read_parquet('{feedback}/*.parquet') GROUP BY request_id"
        ).df()
        frame = frame.merge(labels, on="request_id", how="left")
    return frame.drop(columns=["row"], errors="ignore")


def from_table(table: pa.Table, *, ts: str | None = None, prediction: str | None = None) -> pd.DataFrame:
    """A frame of ``table`` with ``__prediction__`` (from ``prediction``, or a column named like one) and
    ``ts`` in epoch seconds (from ``ts``, or a column named like a timestamp)."""
    frame = table.to_pandas()
    for column in frame.columns:  # dictionary-encoded text comes back as categoricals
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(object)
    prediction = prediction or next((c for c in PREDICTION_COLUMNS if c in frame.columns), None)
    if prediction is not None and prediction in frame.columns:
        raw = frame[prediction]
        if raw.dtype == object:
            matrix = np.stack([np.asarray(v, np.float64) for v in raw]) if len(raw) else np.zeros((0, 1))
            frame["__outputs__"] = list(matrix)
            frame[PREDICTION] = prediction_score(matrix)
        else:
            frame[PREDICTION] = raw.to_numpy(np.float64)
        if prediction != "prediction" or raw.dtype == object:
            frame = frame.drop(columns=[prediction])
    ts = ts or next((c for c in TIME_COLUMNS if c in frame.columns), None)
    if ts is not None and ts in frame.columns:
        col = frame[ts]
        if pd.api.types.is_datetime64_any_dtype(col):
            frame["ts"] = col.astype("datetime64[us]").astype(np.int64).to_numpy() / 1e6
        else:
            frame["ts"] = pd.to_numeric(col, errors="coerce").astype(np.float64)
    return frame


def kafka_log(project: Project) -> pd.DataFrame:
    """The request log on Kafka, as :func:`request_log` gives the Parquet one (labels joined by id)."""
    from prodml.monitor.kafka import read_request_log

    spec = project.serve.request_log.kafka
    if spec is None:
        raise DataError(
            "--source kafka needs serve.request_log.kafka in prodml.yaml",
            hint="set serve.request_log.kafka.bootstrap_servers (or PRODML_SERVE__REQUEST_LOG__KAFKA__"
            "BOOTSTRAP_SERVERS)",
        )
    table, labels = read_request_log(spec)
    frame = from_table(
        table.sort_by([("ts", "ascending"), ("row", "ascending")]), ts="ts", prediction="prediction"
    )
    if labels:
        frame["label"] = frame["request_id"].map(labels)
    return frame.drop(columns=["row"], errors="ignore")


def load(spec: str, project: Project | None) -> pd.DataFrame:
    """The rows named by ``spec`` (see the module doc)."""
    if spec == "kafka" or (spec == "requests" and project is not None and project.serve.request_log.kafka):
        if project is None:
            raise DataError("--source kafka needs a project", hint="pass --project")
        return kafka_log(project)
    if spec == "requests" or spec.startswith("log:"):
        if spec == "requests" and project is None:
            raise DataError("--source requests needs a project", hint="pass --project, or a path")
        directory = Path(spec[4:]) if spec.startswith("log:") else project.state_dir / "requests"  # type: ignore[union-attr]
        return request_log(directory)
    if spec.startswith("source:"):
        if project is None:
            raise DataError(f"--source {spec} needs a project", hint="pass --project")
        from prodml.data.sources import Catalog

        return from_table(Catalog(project).read(spec[7:]))
    from prodml.data.sources import read_files

    return from_table(read_files(spec, name=spec))
