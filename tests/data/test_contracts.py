from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest

from prodml.core.errors import ConfigError
from prodml.core.project import ColumnRule, Freshness, RowCount, TableContract
from prodml.data.contracts import dtype_family, validate_tables


def _check(table: pa.Table, contract: TableContract, **kw: object):  # type: ignore[no-untyped-def]
    return validate_tables({"t": table}, {"t": contract}, **kw)  # type: ignore[arg-type]


def _rules(report) -> dict[tuple[str | None, str], tuple[int, list[object]]]:  # type: ignore[no-untyped-def]
    return {(v.column, v.rule): (v.count, v.sample) for v in report.violations}


GOOD = pa.table(
    {
        "id": pa.array([1, 2, 3, 4], pa.int64()),
        "age": pa.array([20, 30, 40, 50], pa.int32()),
        "score": pa.array([0.1, 0.5, 0.9, 1.0]),
        "plan": pa.array(["basic", "pro", "basic", "enterprise"]),
        "email": pa.array(["a@x.io", "b@y.com", None, "c@z.org"]),
        "ts": pa.array([datetime(2025, 1, d) for d in (1, 2, 3, 4)], pa.timestamp("us")),
    }
)

FULL = TableContract(
    id_column="id",
    row_count=RowCount(min=1, max=10),
    freshness=Freshness(column="ts", max_age_days=3),
    columns={
        "id": ColumnRule(dtype="int", nullable=False, unique=True),
        "age": ColumnRule(dtype="int", min=18, max=120),
        "score": ColumnRule(dtype="float", nullable=False, min=0, max=1),
        "plan": ColumnRule(dtype="string", allowed=["basic", "pro", "enterprise"]),
        "email": ColumnRule(dtype="string", regex=r"[^@]+@[^@]+\.[a-z]+"),
        "ts": ColumnRule(dtype="timestamp", nullable=False),
    },
)


def test_good_data_passes_every_rule() -> None:
    report = _check(GOOD, FULL, as_of=datetime(2025, 1, 5))
    assert report.ok, report.violations
    assert report.rows == {"t": 4}


def test_each_rule_catches_its_violation_with_counts_and_sample_ids() -> None:
    bad = pa.table(
        {
            "id": pa.array([10, 11, 11, 13, 14], pa.int64()),
            "age": pa.array([5, 30, 200, None, 40], pa.int32()),
            "score": pa.array([0.1, float("nan"), None, 1.5, -0.5]),
            "plan": pa.array(["basic", "gold", "pro", None, "silver"]),
            "email": pa.array(["a@x.io", "nope", "b@y.com", "c@", None]),
            "ts": pa.array([datetime(2024, 6, 1)] * 5, pa.timestamp("us")),
        }
    )
    rules = _rules(_check(bad, FULL, as_of=datetime(2025, 1, 5)))
    assert rules[("id", "unique")] == (1, [11, 11])
    assert rules[("age", "min")] == (1, [10])
    assert rules[("age", "max")] == (1, [11])
    assert rules[("score", "not_null")] == (2, [11, 11])  # NaN and null both count
    assert rules[("score", "min")] == (1, [14])
    assert rules[("score", "max")] == (1, [13])
    assert rules[("plan", "allowed")] == (2, [11, 14])  # null is not a category
    assert rules[("email", "regex")] == (2, [11, 13])
    assert rules[("ts", "freshness")][0] == 1
    assert len(rules) == 9


def test_row_numbers_are_the_sample_without_id_column() -> None:
    table = pa.table({"x": [1, None, 3, None]})
    report = _check(table, TableContract(columns={"x": ColumnRule(nullable=False)}))
    assert _rules(report) == {("x", "not_null"): (2, [1, 3])}
    assert "rows 1, 3" in report.violations[0].message


def test_missing_column_and_wrong_dtype_are_schema_violations() -> None:
    contract = TableContract(columns={"nope": ColumnRule(), "age": ColumnRule(dtype="string", min=1)})
    rules = _rules(_check(GOOD, contract))
    assert rules[("nope", "present")][0] == 4
    assert rules[("age", "dtype")][0] == 4
    assert len(rules) == 2  # value rules of a wrongly typed column are not run


def test_row_count_bounds() -> None:
    assert _rules(_check(GOOD, TableContract(row_count=RowCount(min=5)))) == {(None, "row_count"): (4, [])}
    assert _rules(_check(GOOD, TableContract(row_count=RowCount(max=3)))) == {(None, "row_count"): (4, [])}


def test_min_max_on_text_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="numeric column"):
        _check(GOOD, TableContract(columns={"plan": ColumnRule(min=1)}))


def test_unknown_id_column_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="id_column"):
        _check(GOOD, TableContract(id_column="nope", columns={"age": ColumnRule(min=30)}))


def test_dictionary_strings_and_integer_categories() -> None:
    table = pa.table({"plan": pa.array(["a", "b", "c"]).dictionary_encode(), "k": [0, 1, 2]})
    contract = TableContract(
        columns={
            "plan": ColumnRule(dtype="string", allowed=["a", "b"]),
            "k": ColumnRule(dtype="int", allowed=[0, 1]),
        }
    )
    assert _rules(_check(table, contract)) == {
        ("plan", "allowed"): (1, [2]),
        ("k", "allowed"): (1, [2]),
    }


def test_large_table_counts_are_exact() -> None:
    n = 200_000
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    table = pa.table({"x": x})
    report = _check(table, TableContract(columns={"x": ColumnRule(min=-2, max=2)}))
    rules = _rules(report)
    assert rules[("x", "min")][0] == int((x < -2).sum())
    assert rules[("x", "max")][0] == int((x > 2).sum())


@pytest.mark.parametrize(
    ("array", "family"),
    [
        (pa.array([1], pa.int8()), "int"),
        (pa.array([1.0], pa.float32()), "float"),
        (pa.array(["a"], pa.large_string()), "string"),
        (pa.array([True]), "bool"),
        (pa.array([datetime(2025, 1, 1)]), "timestamp"),
        (pa.array([[1]]), None),
    ],
)
def test_dtype_families(array: pa.Array, family: str | None) -> None:
    assert dtype_family(array.type) == family


def test_samples_beyond_the_head_of_a_large_table() -> None:
    from prodml.data.contracts import HEAD_ROWS

    n = HEAD_ROWS * 2
    x = np.zeros(n)
    x[[5, 7, HEAD_ROWS + 10, HEAD_ROWS + 20, HEAD_ROWS + 30, n - 1]] = 9.0
    y = np.zeros(n)
    y[n - 2] = 9.0
    report = _check(
        pa.table({"x": x, "y": y}), TableContract(columns={"x": ColumnRule(max=1), "y": ColumnRule(max=1)})
    )
    assert _rules(report) == {
        ("x", "max"): (6, [5, 7, HEAD_ROWS + 10, HEAD_ROWS + 20, HEAD_ROWS + 30]),
        ("y", "max"): (1, [n - 2]),
    }
