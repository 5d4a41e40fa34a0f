"""The offline store: point-in-time correct training frames, computed in SQL.

For each labelled row (entity, t):

- **window aggregates** over an event table — count/sum/mean/min/max over the last N days and days
  since the last event — are computed by :func:`aggregate_sql`: the label rows are unioned into the
  event stream as markers and every aggregate is a window function whose frame ends at the marker's
  own timestamp (``RANGE BETWEEN INTERVAL 'N days' PRECEDING AND CURRENT ROW``). An event after t
  cannot fall in the frame, so no feature can leak the future. The SQL is portable: the same query runs
  on DuckDB and on PostgreSQL.
- **attributes** of an entity table are joined with DuckDB's ``ASOF JOIN`` when the table has a
  timestamp (the latest row at or before t) and with a plain join otherwise. Attributes of the label
  table itself may include its timestamp (a date is a feature when declared so); string columns are
  categorical, date and timestamp columns become date parts in the model.

With ``target.drop_missing`` the rows whose label is null (or NaN) are dropped first; the lineage
counts them (``unlabelled_dropped``).

Example:
    >>> frame = build_training_frame(catalog)  # doctest: +SKIP
    >>> frame.table.column_names[:4]  # doctest: +SKIP
    ['customer_id', 'prediction_ts', 'sessions_count_7d', 'sessions_count_30d']
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prodml.core.errors import FeatureError
from prodml.core.project import Aggregate, Attributes, Project
from prodml.data.contracts import quote_ident as q
from prodml.data.sources import Catalog

__all__ = [
    "TrainingFrame",
    "aggregate_sql",
    "build_training_frame",
    "feature_names",
    "table_digest",
]

LABEL_ROW = "__label_row"


@dataclass
class TrainingFrame:
    """A training frame: keys, features and target, with its lineage."""

    table: pa.Table
    features: list[str]
    categorical: list[str]
    lineage: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    dates: list[str] = field(default_factory=list)
    """Feature columns of date or timestamp type (the model turns them into date parts)."""


def _prefix(agg: Aggregate) -> str:
    return agg.prefix or agg.source


def feature_names(agg: Aggregate) -> list[str]:
    """The output columns of one aggregate block, in order."""
    names = []
    for w in agg.windows:
        for m in agg.metrics:
            for fn in m.agg:
                col = "" if m.column == "*" else f"{m.column}_"
                names.append(f"{_prefix(agg)}_{col}{fn}_{w}d")
    if agg.days_since_last:
        names.append(f"{_prefix(agg)}_days_since_last")
    return names


def aggregate_sql(
    agg: Aggregate,
    *,
    entity: str,
    events: str,
    spine: str,
    spine_ts: str,
    bool_columns: frozenset[str] = frozenset(),
) -> str:
    """SQL computing ``agg`` for every row of ``spine`` (columns ``__label_row``, entity, ``spine_ts``).

    Args:
        agg: the aggregate definition.
        entity: the entity key column, present in both tables.
        events: the event table (or view) name.
        spine: the label table name; it must carry a ``__label_row`` id column.
        spine_ts: the label timestamp column of ``spine``.
        bool_columns: value columns of boolean type; they are summed as 0/1 (PostgreSQL cannot
            sum booleans).

    Returns:
        A query yielding ``__label_row`` and one column per name of :func:`feature_names`.
    """
    value_cols = sorted({m.column for m in agg.metrics if m.column != "*"})
    e, ts = q(entity), q(agg.timestamp)
    ev_values = "".join(
        f", {f'CAST({q(c)} AS INTEGER)' if c in bool_columns else q(c)} AS {q('v_' + c)}" for c in value_cols
    )
    marker_values = "".join(f", NULL AS {q('v_' + c)}" for c in value_cols)
    selects: list[str] = []
    windows: list[str] = []
    names = iter(feature_names(agg))
    for w in agg.windows:
        wname = f"w{w}"
        windows.append(
            f"{wname} AS (PARTITION BY __e ORDER BY __ts "
            f"RANGE BETWEEN INTERVAL '{w} days' PRECEDING AND CURRENT ROW)"
        )
        for m in agg.metrics:
            for fn in m.agg:
                arg = "__ev" if m.column == "*" else q("v_" + m.column)
                sql_fn = "avg" if fn == "mean" else fn
                cast = "CAST({} AS DOUBLE PRECISION)" if fn in ("sum", "mean") else "{}"
                selects.append(f"{cast.format(f'{sql_fn}({arg}) OVER {wname}')} AS {q(next(names))}")
    if agg.days_since_last:
        windows.append(
            "wall AS (PARTITION BY __e ORDER BY __ts RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        )
        selects.append("max(CASE WHEN __ev = 1 THEN __ts END) OVER wall AS __last")
    epoch = "EXTRACT(EPOCH FROM (__ts - __last))"
    outer = [q(n) for n in feature_names(agg) if not n.endswith("_days_since_last")]
    if agg.days_since_last:
        outer.append(f"CAST({epoch} AS DOUBLE PRECISION) / 86400.0 AS {q(_prefix(agg) + '_days_since_last')}")
    return (
        f"WITH u AS (\n"
        f"  SELECT {e} AS __e, {ts} AS __ts, CAST(NULL AS BIGINT) AS {LABEL_ROW}, 1 AS __ev{ev_values}\n"
        f"  FROM {q(events)} WHERE {ts} IS NOT NULL AND {e} IS NOT NULL\n"
        f"  UNION ALL\n"
        f"  SELECT {e}, {q(spine_ts)}, {LABEL_ROW}, NULL{marker_values} FROM {q(spine)}\n"
        f"), w AS (\n"
        f"  SELECT {LABEL_ROW}, __ts, {', '.join(selects)}\n"
        f"  FROM u\n"
        f"  WINDOW {', '.join(windows)}\n"
        f")\n"
        f"SELECT {LABEL_ROW}, {', '.join(outer)} FROM w WHERE {LABEL_ROW} IS NOT NULL"
    )


def table_digest(table: pa.Table) -> str:
    """sha256 of an Arrow table's content (IPC stream bytes), for lineage."""
    digest = hashlib.sha256()

    class _Sink:
        def write(self, b: Any) -> int:
            digest.update(b)
            return len(b)

        closed = False

        def flush(self) -> None:
            pass

    sink = pa.PythonFile(_Sink(), mode="w")
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return digest.hexdigest()


def _need_columns(table: pa.Table, source: str, columns: list[str], where: str) -> None:
    for col in columns:
        if col not in table.column_names:
            close = difflib.get_close_matches(col, table.column_names, n=1)
            fix = f"did you mean '{close[0]}'?" if close else "columns: " + ", ".join(table.column_names)
            raise FeatureError(
                f"{where}: source '{source}' has no column '{col}'",
                hint=f"{fix} — fix the name in prodml.yaml",
            )


def _attribute_columns(att: Attributes, table: pa.Table, project: Project) -> list[str]:
    if att.columns != ["*"]:
        return att.columns
    skip = {project.entity, project.target.column, project.target.timestamp, att.timestamp}
    return [c for c in table.column_names if c not in skip]


def _is_date(t: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(t) or pa.types.is_date(t))


def _labelled(labels: pa.Table, column: str) -> pa.Table:
    """The rows of ``labels`` whose ``column`` holds a value (not null, not NaN)."""
    values = labels.column(column)
    keep = pc.is_valid(values)
    if pa.types.is_floating(values.type):
        keep = pc.and_(keep, pc.invert(pc.is_nan(values)))
    return labels.filter(keep)


def build_training_frame(catalog: Catalog) -> TrainingFrame:
    """Compute the project's training frame: label keys, every feature as of each label, the target.

    Raises:
        FeatureError: a definition names a column the data lacks, or a join key is not unique.
    """
    start = time.perf_counter()
    project = catalog.project
    target = project.target
    labels = catalog.read(target.source)
    keys = [k for k in (project.entity, target.timestamp) if k]
    _need_columns(labels, target.source, [*keys, target.column], "target")
    dropped = 0
    if target.drop_missing:
        rows = labels.num_rows
        labels = _labelled(labels, target.column)
        dropped = rows - labels.num_rows
    key_features: set[str] = set()  # keys of the label table that are also declared as features
    spine = labels.select([*keys, target.column]).append_column(
        LABEL_ROW, pa.array(np.arange(labels.num_rows, dtype=np.int64))
    )
    con = duckdb.connect()
    con.register("__spine", spine)
    parts: list[tuple[str, list[str]]] = []  # (sql selecting __label_row + features, feature names)
    inputs: dict[str, str] = {target.source: table_digest(labels)}
    categorical: list[str] = []
    dates: list[str] = []

    for i, agg in enumerate(project.features.aggregates):
        events = catalog.read(agg.source)
        cols = [project.entity or "", agg.timestamp] + [m.column for m in agg.metrics if m.column != "*"]
        _need_columns(events, agg.source, cols, f"features.aggregates[{i}]")
        view = f"__ev{i}"
        con.register(view, events.select(list(dict.fromkeys(cols))))
        bools = frozenset(c for c in cols[2:] if pa.types.is_boolean(events.schema.field(c).type))
        sql = aggregate_sql(
            agg,
            entity=project.entity or "",
            events=view,
            spine="__spine",
            spine_ts=target.timestamp or "",
            bool_columns=bools,
        )
        parts.append((sql, feature_names(agg)))
        inputs[agg.source] = inputs.get(agg.source) or table_digest(events)

    for i, att in enumerate(project.features.attributes):
        table = catalog.read(att.source)
        columns = _attribute_columns(att, table, project)
        _need_columns(table, att.source, columns, f"features.attributes[{i}].columns")
        categorical += [
            c
            for c in columns
            if pa.types.is_string(table.schema.field(c).type)
            or pa.types.is_large_string(table.schema.field(c).type)
        ]
        dates += [c for c in columns if _is_date(table.schema.field(c).type)]
        if att.source == target.source:
            view = "__labels_full"
            con.register(view, labels.append_column(LABEL_ROW, spine.column(LABEL_ROW)))
            key_features |= set(columns) & set(keys)
            sel = "".join(f", {q(c)}" for c in columns if c not in keys)
            parts.append((f"SELECT {LABEL_ROW}{sel} FROM {view}", columns))
            continue
        entity = project.entity
        assert entity is not None  # checked when the project was loaded
        _need_columns(
            table,
            att.source,
            [entity] + ([att.timestamp] if att.timestamp else []),
            f"features.attributes[{i}]",
        )
        view = f"__att{i}"
        con.register(view, table)
        sel = ", ".join(f"a.{q(c)}" for c in columns)
        if att.timestamp:
            sql = (
                f"SELECT s.{LABEL_ROW}, {sel} FROM __spine s ASOF LEFT JOIN {view} a "
                f"ON s.{q(entity)} = a.{q(entity)} AND s.{q(target.timestamp or '')} >= a.{q(att.timestamp)}"
            )
        else:
            dup = con.execute(f"SELECT count(*) - count(DISTINCT {q(entity)}) FROM {view}").fetchall()[0]
            if dup and dup[0]:
                raise FeatureError(
                    f"features.attributes[{i}]: source '{att.source}' has {dup[0]} duplicate "
                    f"'{entity}' values, so the join is ambiguous",
                    hint="deduplicate the table, or set 'timestamp' for an as-of join",
                )
            sql = f"SELECT s.{LABEL_ROW}, {sel} FROM __spine s LEFT JOIN {view} a USING ({q(entity)})"
        parts.append((sql, columns))
        inputs[att.source] = inputs.get(att.source) or table_digest(table)

    features = [n for _, names in parts for n in names]
    dupes = sorted(
        {n for n in features if features.count(n) > 1}
        | (set(features) & {*keys, target.column}) - key_features
    )
    if dupes:
        raise FeatureError(
            f"features: the column name(s) {', '.join(dupes)} would appear twice in the frame",
            hint="set 'prefix' on an aggregate block, or drop the column from the attributes",
        )
    ctes = ",\n".join(f"p{i} AS ({sql})" for i, (sql, _) in enumerate(parts))
    joins = " ".join(f"LEFT JOIN p{i} USING ({LABEL_ROW})" for i in range(len(parts)))
    select = ", ".join(
        [*(f"s.{q(k)}" for k in keys), *(q(f) for f in features if f not in keys), f"s.{q(target.column)}"]
    )
    order = ", ".join(q(k) for k in reversed(keys)) or LABEL_ROW
    sql = (f"WITH {ctes}\n" if parts else "") + (
        f"SELECT {select} FROM __spine s {joins} ORDER BY {order}, {LABEL_ROW}"
    )
    try:
        table = con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise FeatureError(
            f"computing the features failed: {str(exc).splitlines()[0]}",
            hint="check the types of the feature columns (numbers for sum/mean/min/max)",
        ) from exc
    finally:
        con.close()
    definitions = project.features.model_dump(exclude={"output"}, mode="json")
    spec = {
        "entity": project.entity,
        "target": target.model_dump(mode="json"),
        "features": definitions,
    }
    definition_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    lineage = {
        "inputs": dict(sorted(inputs.items())),
        "definitions": definition_hash,
        "hash": hashlib.sha256(
            json.dumps({"inputs": inputs, "definitions": definition_hash}, sort_keys=True).encode()
        ).hexdigest(),
        "rows": table.num_rows,
        "features": features,
    }
    if target.drop_missing:
        lineage["unlabelled_dropped"] = dropped
    seconds = time.perf_counter() - start
    return TrainingFrame(table, features, categorical, lineage, seconds, dates=dates)
