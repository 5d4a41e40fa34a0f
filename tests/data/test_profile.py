import pyarrow as pa

from prodml.core.project import TableContract
from prodml.data.contracts import validate_tables
from prodml.data.profile import infer_contract, profile_table
from prodml.data.simulate import simulate


def test_profile_counts() -> None:
    table = pa.table({"a": [1, 2, None, 2], "s": ["x", "y", "x", "x"]})
    n, cols = profile_table(table)
    assert n == 4
    a, s = cols
    assert (a.nulls, a.min, a.max) == (1, 1, 2)
    assert s.top == [("x", 3), ("y", 1)]


def test_inferred_contract_holds_on_its_data_and_catches_change() -> None:
    customers = simulate(300, 150, seed=2)["customers"]
    contract = TableContract.model_validate(infer_contract(customers))
    assert contract.columns["customer_id"].unique
    assert contract.columns["plan"].allowed == ["basic", "enterprise", "pro"]
    assert contract.columns["age"].nullable is False
    assert validate_tables({"c": customers}, {"c": contract}).ok
    changed = customers.set_column(
        customers.schema.get_field_index("plan"),
        "plan",
        pa.array(["gold"] * customers.num_rows),
    )
    report = validate_tables({"c": changed}, {"c": contract})
    assert [(v.column, v.rule) for v in report.violations] == [("plan", "allowed")]


def test_distinct_counts_are_exact_and_say_when_they_are_estimates(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import prodml.data.profile as profile

    table = pa.table({"a": list(range(5000))})
    (exact,) = profile_table(table)[1]
    assert (exact.distinct, exact.approximate) == (5000, False)
    monkeypatch.setattr(profile, "EXACT_DISTINCT_ROWS", 100)
    (estimate,) = profile_table(table)[1]
    assert estimate.approximate
    assert abs(estimate.distinct - 5000) < 500
