"""``prodml init DIR --from TABLE --target COL``: a working, commented project from any table.

The table is read the way training will read it, profiled (exact distinct counts), and each column is
given a role with a reason the file states: the target and the task it implies; features with their
transforms (one-hot for strings with few values, date parts for dates); and what is left out (ID-like,
high-cardinality, constant or empty columns) as commented lines the user can bring back. The contract
is the one the table satisfies today, the metrics and promotion gate suit the task (the gate asks for
better than the trivial model), and unlabelled rows are dropped when the target has any.

Example:
    >>> scaffold(Path("weather"), Path("weather.csv"), target="rain")  # doctest: +SKIP
    PosixPath('weather/prodml.yaml')
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from prodml.core.errors import ConfigError, DataError
from prodml.core.files import atomic_write_text
from prodml.core.types import Task
from prodml.data.profile import ColumnProfile, infer_contract, profile_table
from prodml.data.sources import infer_format, read_files

__all__ = ["Plan", "plan_project", "render_project", "scaffold"]

MAX_ONEHOT = 50  # a string column with more distinct values is left out (one-hot would be too wide)
MAX_CLASSES = 20  # an integer target with at most this many values is a class label
ID_SHARE = 0.95  # a string or int column with this share of distinct values identifies rows
_ID_NAME = re.compile(r"(^|[^a-z])(id|uuid|guid|key)$|^(id|uuid)([^a-z]|$)", re.IGNORECASE)
SEASONAL_PARTS = ["month", "dayofweek", "dayofyear"]
HOLDOUT = 0.2

Role = Literal["feature", "left out"]


@dataclass
class Column:
    """One column's role in the project and the reason, as the file will say it."""

    name: str
    role: Role
    why: str
    transform: dict[str, Any] | None = None


@dataclass
class Plan:
    """What ``prodml init --from`` decided about a table."""

    name: str
    source: str
    path: str
    task: Task
    target: str
    classes: list[Any] | None
    unlabelled: int
    rows: int
    entity: str | None
    timestamp: str | None
    columns: list[Column]
    contract: dict[str, Any]
    folds: int
    strategy: str
    gate: tuple[str, float]
    metrics: list[str]
    notes: list[str] = field(default_factory=list)


def _identifier(text: str) -> str:
    ident = re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_").lower() or "project"
    return ident if not ident[0].isdigit() else f"t_{ident}"


def _q(name: str) -> str:
    """A YAML scalar for a column name as it comes (a JSON string is a YAML double-quoted scalar)."""
    return json.dumps(name, ensure_ascii=False)


def _need(table: pa.Table, column: str | None, option: str) -> None:
    if column is not None and column not in table.column_names:
        import difflib

        close = difflib.get_close_matches(column, table.column_names, n=1)
        fix = f"did you mean '{close[0]}'?" if close else "columns: " + ", ".join(table.column_names)
        raise ConfigError(f"{option} '{column}': the table has no such column", hint=fix)


def _labels(table: pa.Table, target: str) -> pa.Array:
    """The target's labelled values (null, NaN and empty strings are unlabelled)."""
    values = table.column(target).combine_chunks()
    keep = pc.is_valid(values)
    if pa.types.is_floating(values.type):
        keep = pc.and_(keep, pc.invert(pc.is_nan(values)))
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        keep = pc.and_(keep, pc.not_equal(values, ""))
    return values.filter(keep)


def _task(values: pa.Array, asked: str) -> Task:
    distinct = pc.unique(values)
    n = len(distinct)
    if asked != "auto":
        if asked not in ("binary", "multiclass", "regression"):
            raise ConfigError(f"--task '{asked}'", hint="use auto, binary, multiclass or regression")
        return asked  # type: ignore[return-value]
    if n < 2:
        raise DataError(
            f"the target has {n} distinct labelled value(s); a model needs at least two",
            hint="check the --target column",
        )
    t = values.type
    integral = pa.types.is_integer(t) or pa.types.is_boolean(t)
    if pa.types.is_floating(t):
        x = distinct.to_numpy(zero_copy_only=False)
        integral = bool(np.all(x == np.round(x))) and n <= MAX_CLASSES
    if pa.types.is_string(t) or pa.types.is_large_string(t) or (integral and n <= MAX_CLASSES):
        return "binary" if n == 2 else "multiclass"
    return "regression"


def _role(p: ColumnProfile, n: int) -> Column:
    """A feature column's role: kept (with a transform when it needs one) or left out, and why."""
    present = n - p.nulls
    if present == 0:
        return Column(p.name, "left out", "empty (every value is missing)")
    if p.distinct <= 1 and p.dtype != "date" and p.dtype != "timestamp":
        return Column(p.name, "left out", "constant (one value)")
    if p.dtype in ("int", "string") and present > 20 and p.distinct >= ID_SHARE * present:
        return Column(p.name, "left out", f"ID-like ({p.distinct:,} distinct values in {present:,} rows)")
    if p.dtype == "int" and _ID_NAME.search(p.name) and p.distinct >= 0.5 * present:
        return Column(p.name, "left out", f"ID-like (named like a key, {p.distinct:,} distinct values)")
    if p.dtype == "string":
        if p.distinct > MAX_ONEHOT:
            return Column(
                p.name,
                "left out",
                f"high-cardinality text ({p.distinct:,} distinct values): one-hot would add as many "
                "columns — group it upstream to bring it in",
            )
        return Column(p.name, "feature", f"{p.distinct} values", {"column": p.name, "op": "onehot"})
    if p.dtype in ("date", "timestamp"):
        return Column(p.name, "feature", "date parts computed in the model", {"column": p.name, "op": "date"})
    if p.dtype in ("int", "float", "bool"):
        return Column(p.name, "feature", "number")
    return Column(p.name, "left out", "a type prodml cannot use as a feature")


def plan_project(
    path: Path,
    target: str,
    *,
    task: str = "auto",
    entity: str | None = None,
    timestamp: str | None = None,
    name: str | None = None,
    source_path: str | None = None,
) -> Plan:
    """Read and profile the table at ``path`` and decide the project (nothing is written).

    Raises:
        ConfigError: a named column is missing, or --timestamp is not a date column.
        DataError: the table cannot be read, or the target is constant.
    """
    fmt = infer_format(str(path))
    if fmt not in ("csv", "parquet", "orc"):
        raise ConfigError(f"--from {path}: cannot tell the format", hint="give a .csv, .parquet or .orc file")
    table = read_files(str(path), fmt)
    _need(table, target, "--target")
    _need(table, entity, "--entity")
    _need(table, timestamp, "--timestamp")
    n, profiles = profile_table(table)
    by_name = {p.name: p for p in profiles}
    stamp = by_name.get(timestamp) if timestamp is not None else None
    if timestamp is not None and (stamp is None or stamp.dtype not in ("date", "timestamp")):
        raise ConfigError(
            f"--timestamp '{timestamp}' is not a date or timestamp column",
            hint="name a column of ISO dates (YYYY-MM-DD[ HH:MM:SS]); CSV dates in other formats are "
            "read as text",
        )
    labels = _labels(table, target)
    chosen: Task = _task(labels, task)
    classes: list[Any] | None = None
    counts: dict[Any, int] = {}
    if chosen != "regression":
        vc = pc.value_counts(labels).to_pylist()
        counts = {v["values"]: int(v["counts"]) for v in vc}
        classes = sorted(counts)
    columns: list[Column] = []
    for p in profiles:
        if p.name == target:
            continue
        if p.name == entity:
            columns.append(Column(p.name, "left out", "the entity key (identifies rows, not a signal)"))
            continue
        if p.name == timestamp:
            parts = [*SEASONAL_PARTS, *(["hour"] if p.dtype == "timestamp" else [])]
            columns.append(
                Column(
                    p.name,
                    "feature",
                    "the label time: the holdout is its latest rows, so only its seasonal parts are used",
                    {"column": p.name, "op": "date", "parts": parts},
                )
            )
            continue
        columns.append(_role(p, n))
    for c in table.column_names:
        if c not in by_name and c != target:
            columns.append(Column(c, "left out", f"type {table.schema.field(c).type} is not supported"))
    if not any(c.role == "feature" for c in columns):
        raise DataError(
            "no column of the table can be a feature (all are left out: "
            + "; ".join(f"{c.name}: {c.why}" for c in columns)
            + ")",
            hint="check --target, or add feature columns to the table",
        )
    folds, strategy, notes = 5, "kfold", []
    if classes is not None:
        rarest = min(counts.values())
        in_training = int(rarest * (1 - HOLDOUT))  # what the stratified holdout leaves for the folds
        if in_training >= folds:
            strategy = "stratified"
        elif in_training >= 2:
            strategy, folds = "stratified", in_training
            notes.append(f"folds lowered to {folds}: the rarest class has {rarest} rows")
        else:
            notes.append(f"plain k-fold: the rarest class has {rarest} row(s), too few to stratify")
    contract = infer_contract(table, profile=(n, profiles))
    # the contract must hold on tomorrow's rows too: unlabelled rows and new IDs are normal
    contract["columns"][target]["nullable"] = True
    contract["columns"][target].pop("min", None)
    contract["columns"][target].pop("max", None)
    id_columns = [c.name for c in columns if c.why.startswith("ID-like") or c.name == entity]
    if id_columns:
        contract["id_column"] = entity or id_columns[0]
    metrics: list[str]
    if chosen == "binary":
        metrics, gate = ["roc_auc", "pr_auc", "f1", "log_loss", "brier"], ("roc_auc", 0.55)
    elif chosen == "multiclass":
        majority = max(counts.values()) / len(labels)
        metrics = ["macro_f1", "weighted_f1", "accuracy", "log_loss", "roc_auc_ovr"]
        gate = ("accuracy", round(float(majority), 4))
    else:
        metrics, gate = ["r2", "rmse", "mae"], ("r2", 0.0)
    stem = path.name.split(".")[0]
    return Plan(
        name=_identifier(name or stem),
        source=_identifier(stem),
        path=source_path or str(path),
        task=chosen,
        target=target,
        classes=classes,
        unlabelled=table.num_rows - len(labels),
        rows=n,
        entity=entity,
        timestamp=timestamp,
        columns=columns,
        contract=contract,
        folds=folds,
        strategy=strategy,
        gate=gate,
        metrics=metrics,
        notes=notes,
    )


def _yaml_block(data: Any, indent: int) -> str:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
    pad = " " * indent
    return "".join(pad + line + "\n" for line in text.splitlines())


def render_project(plan: Plan, table_path: Path) -> str:
    """The commented ``prodml.yaml`` for ``plan``."""
    out: list[str] = [
        f"# prodml project written by `prodml init --from {table_path.name} --target {plan.target}`.",
        "# Every choice below was inferred from the table; edit freely, then run `prodml train`.",
        f"name: {plan.name}",
    ]
    why = {
        "binary": f"two classes {plan.classes}; the positive class is {plan.classes[-1]!r}"
        if plan.classes
        else "",
        "multiclass": f"{len(plan.classes or [])} classes",
        "regression": "a numeric target with many values",
    }[plan.task]
    out.append(f"task: {plan.task}                      # {why}")
    if plan.entity:
        out.append(f"entity: {_q(plan.entity)}")
    out += ["", "sources:", f"  {plan.source}: {{path: {_q(plan.path)}}}", "", "target:"]
    out += [f"  source: {plan.source}", f"  column: {_q(plan.target)}"]
    if plan.timestamp:
        out.append(
            f"  timestamp: {_q(plan.timestamp)}          # the holdout is the latest rows by this time"
        )
    if plan.unlabelled:
        out.append(f"  drop_missing: true               # {plan.unlabelled:,} row(s) have no label")
    out += [
        "",
        "# The data contract the table satisfies today (`prodml data validate` checks it).",
        "contract:",
    ]
    out += [f"  {plan.source}:", _yaml_block(plan.contract, 4).rstrip("\n")]
    out += ["", "features:", "  attributes:", f"    - source: {plan.source}", "      columns:"]
    width = max(len(_q(c.name)) for c in plan.columns)
    for c in plan.columns:
        if c.role == "feature":
            out.append(f"        - {_q(c.name):<{width}}   # {c.why}")
    for c in plan.columns:
        if c.role == "left out":
            out.append(f"        # - {_q(c.name):<{width}} # left out: {c.why}")
    transforms = [c.transform for c in plan.columns if c.transform is not None]
    if transforms:
        out.append(
            "  transforms:                      # one-hot for text, date parts (in the ONNX graph) for dates"
        )
        for t in transforms:
            flow = yaml.safe_dump(t, default_flow_style=True, allow_unicode=True, width=1000).strip()
            out.append(f"    - {flow}")
    out += [
        "",
        "model:",
        "  estimator: hist_gradient_boosting   # handles missing values; try random_forest or lightgbm",
        "  params: {}",
        f"validation: {{strategy: {plan.strategy}, folds: {plan.folds}, holdout: {HOLDOUT}}}"
        + (f"   # {'; '.join(plan.notes)}" if plan.notes else ""),
        f"metrics: [{', '.join(plan.metrics)}]",
    ]
    metric, floor = plan.gate
    baseline = {
        "binary": "better than chance (0.5)",
        "multiclass": "better than always predicting the most frequent class",
        "regression": "better than predicting the mean",
    }[plan.task]
    out += [
        f"promotion: {{metric: {metric}, min: {floor}, max_drop_vs_champion: 0.01}}   # {baseline}",
        "",
    ]
    return "\n".join(out)


def scaffold(
    directory: Path,
    table: Path,
    *,
    target: str,
    task: str = "auto",
    entity: str | None = None,
    timestamp: str | None = None,
    force: bool = False,
) -> tuple[Path, Plan]:
    """Write ``directory/prodml.yaml`` for ``table``; the source path is relative to the directory.

    Raises:
        ConfigError: a project file exists (and not ``force``), the table is missing, or an option names
            a column the table lacks.
    """
    project_file = directory / "prodml.yaml"
    if project_file.exists() and not force:
        raise ConfigError(
            f"{project_file} already exists", hint="choose another directory, or pass --force to overwrite it"
        )
    if not table.is_file():
        raise ConfigError(f"--from {table}: no such file", hint="give the path of a CSV or Parquet file")
    directory.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(table.resolve(), directory.resolve())
    plan = plan_project(
        table,
        target,
        task=task,
        entity=entity,
        timestamp=timestamp,
        name=directory.resolve().name,
        source_path=relative,
    )
    text = render_project(plan, table)
    atomic_write_text(project_file, text)
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        atomic_write_text(gitignore, "# prodml's local state: tracking store, features, caches\n.prodml/\n")
    return project_file, plan
