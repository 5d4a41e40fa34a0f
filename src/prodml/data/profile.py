"""Profile a table and infer a starting data contract from it (for the user to edit).

Distinct counts are exact up to ``EXACT_DISTINCT_ROWS`` rows and HyperLogLog estimates (DuckDB's
``approx_count_distinct``, a few percent off) above; :attr:`ColumnProfile.approximate` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from prodml.data.contracts import dtype_family, quote_ident

__all__ = ["ColumnProfile", "infer_contract", "profile_table"]

MAX_CATEGORIES = 20
EXACT_DISTINCT_ROWS = 1_000_000


@dataclass(frozen=True)
class ColumnProfile:
    """Summary statistics of one column."""

    name: str
    dtype: str | None
    nulls: int
    distinct: int
    min: Any
    max: Any
    top: list[tuple[Any, int]]
    approximate: bool = False
    """Whether ``distinct`` is an estimate (tables over ``EXACT_DISTINCT_ROWS`` rows)."""


def profile_table(table: pa.Table) -> tuple[int, list[ColumnProfile]]:
    """Row count and per-column profile, computed in one DuckDB scan plus one query per category column."""
    con = duckdb.connect()
    con.register("__t", table)
    try:
        cols = [c for c in table.column_names if dtype_family(table.schema.field(c).type)]
        approximate = table.num_rows > EXACT_DISTINCT_ROWS
        count_distinct = "approx_count_distinct({})" if approximate else "count(DISTINCT {})"
        exprs = ["count(*)"]
        for c in cols:
            qc = quote_ident(c)
            exprs += [
                f"count(*) - count({qc})",
                count_distinct.format(qc),
                f"min({qc})",
                f"max({qc})",
            ]
        row = con.execute(f"SELECT {', '.join(exprs)} FROM __t").fetchall()[0]
        assert row is not None
        n, out = int(row[0]), []
        for i, c in enumerate(cols):
            nulls, distinct, lo, hi = row[1 + 4 * i : 5 + 4 * i]
            family = dtype_family(table.schema.field(c).type)
            top: list[tuple[Any, int]] = []
            if family in ("string", "bool") or (family == "int" and distinct <= MAX_CATEGORIES):
                qc = quote_ident(c)
                top = [
                    (v, int(k))
                    for v, k in con.execute(
                        f"SELECT {qc}, count(*) AS k FROM __t WHERE {qc} IS NOT NULL "
                        f"GROUP BY 1 ORDER BY k DESC, 1 LIMIT {MAX_CATEGORIES + 1}"
                    ).fetchall()
                ]
            out.append(ColumnProfile(c, family, int(nulls), int(distinct), lo, hi, top, approximate))
        return n, out
    finally:
        con.close()


def infer_contract(
    table: pa.Table, *, profile: tuple[int, list[ColumnProfile]] | None = None
) -> dict[str, Any]:
    """A contract (as plain data, ready for YAML) that the table satisfies today.

    Numeric ranges are the observed min/max, string columns with few values get an ``allowed`` list,
    columns without nulls are ``nullable: false`` and columns whose values are all distinct ``unique``
    (checked exactly, every candidate column in one scan).
    ``profile``: the table's :func:`profile_table`, when the caller has it already (one scan, not two).
    """
    n, profiles = profile if profile is not None else profile_table(table)
    # near-distinct int/string columns may be unique: count their duplicates exactly
    candidates = [
        p.name for p in profiles if p.dtype in ("int", "string") and p.distinct >= 0.97 * (n - p.nulls) > 0
    ]
    unique: set[str] = set()
    if candidates:
        con = duckdb.connect()
        try:
            con.register("__t", table)
            counts = ", ".join(
                f"count({quote_ident(c)}) - count(DISTINCT {quote_ident(c)})" for c in candidates
            )
            row = con.execute(f"SELECT {counts} FROM __t").fetchone()
        finally:
            con.close()
        unique = {c for c, dup in zip(candidates, row or (), strict=False) if dup == 0}
    columns = {p.name: _rule(p, p.name in unique) for p in profiles}
    return {"row_count": {"min": max(1, n // 2)}, "columns": columns}


def _rule(p: ColumnProfile, unique: bool) -> dict[str, Any]:
    """The contract rule one column's profile supports."""
    rule: dict[str, Any] = {"dtype": p.dtype}
    if p.nulls == 0:
        rule["nullable"] = False
    if p.dtype in ("int", "float") and p.min is not None:
        rule["min"], rule["max"] = float(p.min), float(p.max)
        if p.dtype == "int":
            rule["min"], rule["max"] = int(p.min), int(p.max)
    if p.dtype == "string" and p.top and len(p.top) <= MAX_CATEGORIES:
        rule["allowed"] = sorted(str(v) for v, _ in p.top)
    if unique:
        rule["unique"] = True
        rule.pop("min", None)
        rule.pop("max", None)
    return rule
