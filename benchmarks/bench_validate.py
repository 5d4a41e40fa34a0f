"""Validate the same rules on the same frame with prodml, Great Expectations and pandera.

    python benchmarks/bench_validate.py [--rows 10000000] [--only prodml,gx,pandera]

The frame has 20 columns (10 float, 4 int, 3 categorical, 1 e-mail string, 1 unique id, 1 timestamp) and
a planted 0.1% of bad values; the 38 rules are not-null, between, in-set, regex (anchored, so every tool
reads it the same way) and unique. Each tool gets the input it is built for: prodml an Arrow table (also
timed from pandas, conversion included), GX and pandera a pandas DataFrame. Every tool must report the
same failing rules — the same (column, rule) pairs, each tool's names mapped to the shared ones — or the
run fails. Prints one table: seconds, rows/s, and the speed-up vs GX.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

Failing = set[tuple[str, str]]  # (column, rule), in the shared rule names of rules()

CATEGORIES = {
    "c0": ["basic", "pro", "enterprise"],
    "c1": ["US", "DE", "GB", "FR", "IN", "BR"],
    "c2": ["web", "ios", "android", "tv"],
}
EMAIL = r"^user[0-9]+@example\.com$"
FLOAT_RANGE = (-10.0, 10.0)
INT_RANGE = (0, 1000)


def make_frame(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    bad = max(rows // 1000, 1)
    cols: dict[str, Any] = {"id": np.arange(rows, dtype=np.int64)}
    cols["id"][-1] = 0  # one duplicate id
    for i in range(10):
        x = rng.normal(0, 2, rows)
        x[rng.integers(0, rows, bad)] = 50.0  # out of range
        if i % 3 == 0:
            x[rng.integers(0, rows, bad)] = np.nan  # nulls
        cols[f"f{i}"] = x
    for i in range(4):
        cols[f"i{i}"] = rng.integers(INT_RANGE[0], INT_RANGE[1] + 1, rows)
    cols["i0"][rng.integers(0, rows, bad)] = -1
    table = pa.table(cols)
    for name, values in CATEGORIES.items():
        arr = np.array(values)[rng.integers(0, len(values), rows)]
        if name == "c1":
            arr[rng.integers(0, rows, bad)] = "XX"
        table = table.append_column(name, pa.array(arr))
    email = pc.binary_join_element_wise(
        "user", pc.cast(pa.array(cols["id"]), pa.string()), "@example.com", ""
    )
    email = email.to_numpy(zero_copy_only=False)
    email[rng.integers(0, rows, bad)] = "not-an-email"
    table = table.append_column("email", pa.array(email))
    start = np.datetime64(datetime(2025, 1, 1), "us").astype(np.int64)
    ts = start + rng.integers(0, 365 * 86_400_000_000, rows)
    return table.append_column("ts", pa.array(ts, pa.timestamp("us")))


def rules() -> list[tuple[str, str, Any]]:
    """(column, rule, argument) triples shared by every tool."""
    out: list[tuple[str, str, Any]] = [("id", "not_null", None), ("id", "unique", None)]
    for i in range(10):
        out += [(f"f{i}", "not_null", None), (f"f{i}", "between", FLOAT_RANGE)]
    for i in range(4):
        out += [(f"i{i}", "not_null", None), (f"i{i}", "between", INT_RANGE)]
    for name, values in CATEGORIES.items():
        out += [(name, "not_null", None), (name, "in_set", values)]
    out += [("email", "regex", EMAIL), ("ts", "not_null", None)]
    return out


def run_prodml(table: pa.Table) -> Failing:
    from prodml.core.project import ColumnRule, TableContract
    from prodml.data.contracts import validate_tables

    columns: dict[str, dict[str, Any]] = {}
    for col, rule, arg in rules():
        spec = columns.setdefault(col, {})
        if rule == "not_null":
            spec["nullable"] = False
        elif rule == "unique":
            spec["unique"] = True
        elif rule == "between":
            spec["min"], spec["max"] = arg
        elif rule == "in_set":
            spec["allowed"] = arg
        elif rule == "regex":
            spec["regex"] = arg
    contract = TableContract(columns={c: ColumnRule(**s) for c, s in columns.items()})
    report = validate_tables({"t": table}, {"t": contract})
    # prodml reports min and max apart; the other tools have one "between" rule
    shared = {"min": "between", "max": "between", "allowed": "in_set"}
    return {(v.column, shared.get(v.rule, v.rule)) for v in report.violations}


def run_prodml_from_pandas(frame: pd.DataFrame) -> Failing:
    return run_prodml(pa.Table.from_pandas(frame, preserve_index=False))


GX_RULES = {
    "expect_column_values_to_not_be_null": "not_null",
    "expect_column_values_to_be_unique": "unique",
    "expect_column_values_to_be_between": "between",
    "expect_column_values_to_be_in_set": "in_set",
    "expect_column_values_to_match_regex": "regex",
}


def run_gx(frame: pd.DataFrame) -> Failing:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    context = gx.get_context(mode="ephemeral")
    batch_def = (
        context.data_sources.add_pandas("pandas")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = gx.ExpectationSuite(name="bench")
    for col, rule, arg in rules():
        if rule == "not_null":
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=col))
        elif rule == "unique":
            suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=col))
        elif rule == "between":
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeBetween(column=col, min_value=arg[0], max_value=arg[1])
            )
        elif rule == "in_set":
            suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=arg))
        elif rule == "regex":
            suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column=col, regex=arg))
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format="SUMMARY")
    return {
        (r.expectation_config.kwargs["column"], GX_RULES[r.expectation_config.type])
        for r in result.results
        if not r.success
    }


def pandera_rule(check: str) -> str:
    """pandera's check name → the shared rule name (``in_range(-10.0, 10.0)`` → ``between``)."""
    fixed = {"not_nullable": "not_null", "field_uniqueness": "unique"}
    prefixes = {"in_range": "between", "isin": "in_set", "str_matches": "regex"}
    return fixed.get(check) or prefixes[check.split("(")[0]]


def run_pandera(frame: pd.DataFrame) -> Failing:
    import pandera.pandas as pa_
    from pandera.errors import SchemaErrors

    columns: dict[str, Any] = {}
    for col in dict.fromkeys(c for c, _, _ in rules()):
        checks, unique, nullable = [], False, True
        for c, rule, arg in rules():
            if c != col:
                continue
            if rule == "not_null":
                nullable = False
            elif rule == "unique":
                unique = True
            elif rule == "between":
                checks.append(pa_.Check.in_range(*arg))
            elif rule == "in_set":
                checks.append(pa_.Check.isin(arg))
            elif rule == "regex":
                checks.append(pa_.Check.str_matches(arg))
        columns[col] = pa_.Column(checks=checks, nullable=nullable, unique=unique)
    schema = pa_.DataFrameSchema(columns)
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        pairs = exc.failure_cases[["column", "check"]].drop_duplicates().itertuples(index=False)
        return {(column, pandera_rule(check)) for column, check in pairs}
    return set()


def timed(fn: Callable[[Any], Failing], data: Any) -> tuple[float, Failing]:
    gc.collect()
    start = time.perf_counter()
    found = fn(data)
    return time.perf_counter() - start, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--only", default="prodml,prodml-pandas,gx,pandera")
    args = parser.parse_args()
    chosen = args.only.split(",")

    t0 = time.perf_counter()
    table = make_frame(args.rows)
    frame = table.to_pandas()
    print(
        f"frame: {args.rows:,} rows x {table.num_columns} columns, {len(rules())} rules "
        f"(built in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    # (--only key, row name, run, its input, the modules it imports: imported before any timing, since an
    # import is not validation — GX alone takes ~2.6 s)
    tools: list[tuple[str, str, Callable[[Any], Failing], Any, list[str]]] = [
        ("prodml", "prodml (Arrow)", run_prodml, table, ["prodml.data.contracts"]),
        ("prodml-pandas", "prodml (from pandas)", run_prodml_from_pandas, frame, ["prodml.data.contracts"]),
        (
            "gx",
            "Great Expectations 1.x",
            run_gx,
            frame,
            ["great_expectations", "great_expectations.expectations"],
        ),
        ("pandera", "pandera", run_pandera, frame, ["pandera.pandas"]),
    ]
    tools = [t for t in tools if t[0] in chosen]
    for *_, modules in tools:
        for module in modules:
            importlib.import_module(module)
    results: dict[str, tuple[float, Failing]] = {}
    for _, name, fn, data, _ in tools:
        results[name] = timed(fn, data)
        print(f"  {name}: {results[name][0]:.2f} s", flush=True)
    gx_s = results.get("Great Expectations 1.x", (float("nan"), set()))[0]
    print("\n| tool | seconds | rows/s | failing rules | speed-up vs GX |\n|---|---:|---:|---:|---:|")
    for name, (seconds, found) in results.items():
        print(
            f"| {name} | {seconds:.2f} | {args.rows / seconds:,.0f} | {len(found)} | {gx_s / seconds:.1f}x |"
        )
    first, (_, expected) = next(iter(results.items()))
    disagree = False
    for name, (_, found) in results.items():
        if found != expected:
            disagree = True
            print(
                f"\nERROR: {name} and {first} disagree: only {name}: {sorted(found - expected)}; "
                f"only {first}: {sorted(expected - found)}",
                file=sys.stderr,
            )
    if not disagree:
        print(f"\nevery tool reports the same {len(expected)} failing (column, rule) pairs")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
