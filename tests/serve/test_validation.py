"""The validator: one float32 and one string matrix out, or field errors naming each broken column."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodml.core.errors import InvalidInput
from prodml.serve.validation import NUMBERS, STRINGS, Validator, detailed

SCHEMA = {
    "inputs": [
        {"name": "age", "dtype": "float", "nullable": False},
        {"name": "gap", "dtype": "float", "nullable": True},
        {"name": "plan", "dtype": "string", "nullable": False, "categories": ["basic", "pro"]},
    ]
}


def test_validator_builds_one_float32_and_one_string_matrix() -> None:
    validator = Validator(SCHEMA)
    feeds, rows = validator.feeds({"age": [30, 41.5], "gap": [None, 2], "plan": ["pro", "basic"]})
    assert rows == 2
    assert (validator.numeric_names, validator.string_names) == (["age", "gap"], ["plan"])
    numbers = feeds[NUMBERS]
    assert numbers.dtype == np.float32
    assert numbers.shape == (2, 2)
    assert numbers.flags.c_contiguous
    assert numbers[:, 0].tolist() == [30.0, 41.5]
    assert np.isnan(numbers[0, 1])
    assert feeds[STRINGS].tolist() == [["pro"], ["basic"]]
    # typed columns (OIP tensors, batch scoring) give the same matrices
    typed, _ = validator.feeds(
        {"age": np.array([30, 41.5]), "gap": np.array([np.nan, 2.0]), "plan": ["pro", "basic"]}
    )
    np.testing.assert_array_equal(typed[NUMBERS], numbers)


@pytest.mark.parametrize(
    ("columns", "field", "error"),
    [
        ({"age": [1], "plan": ["pro"]}, "gap", "missing"),
        ({"age": [1], "gap": [1], "plan": ["pro"], "x": [1]}, "x", "unknown column"),
        ({"age": [float("nan")], "gap": [1], "plan": ["pro"]}, "age", "not nullable"),
        ({"age": [None], "gap": [1], "plan": ["pro"]}, "age", "not nullable"),
        ({"age": [float("inf")], "gap": [1], "plan": ["pro"]}, "age", "infinite"),
        ({"age": [1e39], "gap": [1], "plan": ["pro"]}, "age", "float32"),
        ({"age": [10**400], "gap": [1], "plan": ["pro"]}, "age", "float32"),
        ({"age": ["1"], "gap": [1], "plan": ["pro"]}, "age", "expected numbers"),
        ({"age": [True], "gap": [1], "plan": ["pro"]}, "age", "booleans"),
        ({"age": np.array([True]), "gap": [1], "plan": ["pro"]}, "age", "booleans"),
        ({"age": [[1]], "gap": [1], "plan": ["pro"]}, "age", "expected numbers, got list"),
        ({"age": [{"a": 1}], "gap": [1], "plan": ["pro"]}, "age", "expected numbers, got dict"),
        ({"age": [1], "gap": [1], "plan": ["gold"]}, "plan", "unknown category 'gold'"),
        ({"age": [1], "gap": [1], "plan": [""]}, "plan", "not nullable"),
        ({"age": [1], "gap": [1], "plan": [["pro"]]}, "plan", "expected strings, got list"),
        ({"age": [1], "gap": [1], "plan": [1]}, "plan", "expected strings"),
        ({"age": [1, 2], "gap": [1], "plan": ["pro"]}, "age", "values"),
    ],
)
def test_validator_field_errors(columns: dict[str, list[object]], field: str, error: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Validator(SCHEMA).feeds(columns)
    assert any(f["field"] == field and error in f["error"] for f in info.value.fields), info.value.fields


def test_errors_quote_only_a_short_prefix_of_the_input() -> None:
    long = "x" * 10_000
    for columns in (
        {"age": [long], "gap": [1], "plan": ["pro"]},
        {"age": [1], "gap": [1], "plan": [long]},
        {"age": [1], "gap": [1], "plan": ["pro"], long: [1]},
    ):
        with pytest.raises(InvalidInput) as info:
            Validator(SCHEMA).feeds(columns)
        assert len(str(info.value.fields)) < 400


_VALUES = st.one_of(
    st.integers(-5, 5),
    st.integers(2**53, 2**60),
    st.sampled_from([1e39, 2.0**128 - 2.0**103, float(np.nextafter(2.0**128 - 2.0**103, 0))]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.none(),
    st.booleans(),
    st.sampled_from(["pro", "basic", "gold", "", "1.5"]),
)


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.lists(_VALUES, min_size=3, max_size=3), min_size=1, max_size=4))
def test_a_request_is_refused_or_scored_alike_as_lists_or_as_arrays(data: list[list[object]]) -> None:
    """What the JSON forms (lists) and the typed forms (arrays) carry is judged by the same rules."""
    validator = Validator(SCHEMA)
    lists = {n: [row[j] for row in data] for j, n in enumerate(["age", "gap", "plan"])}
    arrays = {n: np.array(v, dtype=object) for n, v in lists.items()}
    outcomes = []
    for columns in (lists, arrays):
        try:
            feeds, _ = validator.feeds(columns)
        except InvalidInput as exc:
            outcomes.append(("refused", exc.fields))
        else:
            outcomes.append(("scored", feeds[NUMBERS].tobytes(), feeds[STRINGS].tolist()))
    assert outcomes[0] == outcomes[1]
    if outcomes[0][0] == "scored":
        assert all(type(v) is not bool for row in data for v in row[:2])


def test_unknown_categories_can_be_mapped_and_rows_are_capped() -> None:
    feeds, _ = Validator(SCHEMA, unknown_category="map").feeds({"age": [1], "gap": [1], "plan": ["gold"]})
    assert feeds[STRINGS].tolist() == [["gold"]]
    with pytest.raises(InvalidInput, match="exceed the limit of 2"):
        Validator(SCHEMA, max_rows=2).feeds({"age": [1] * 3, "gap": [1] * 3, "plan": ["pro"] * 3})


RANGED = {
    "inputs": [
        {"name": "age", "dtype": "float", "nullable": True, "min": 18.0, "max": 90.0},
        {"name": "plan", "dtype": "string", "nullable": False, "categories": ["basic", "pro"]},
        {
            "name": "day",
            "dtype": "string",
            "format": "date-time",
            "pattern": r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:[T ]([0-9]{1,2})(?::.*)?)?",
            "nullable": True,
            "earliest": "2024-01-01",
            "latest": "2024-06-30",
        },
    ]
}


def test_extra_columns_are_ignored_or_refused_as_configured() -> None:
    columns = {"age": [30.0], "plan": ["pro"], "day": ["2024-02-01"], "customer_id": ["c-17"]}
    feeds, rows = Validator(RANGED, extra_columns="ignore").feeds(columns)
    assert rows == 1 and feeds[STRINGS].tolist() == [["pro", "2024-02-01"]]
    with pytest.raises(InvalidInput) as info:
        Validator(RANGED, extra_columns="reject").feeds(columns)
    assert info.value.fields == [
        {"field": "customer_id", "error": "unknown column; the model does not take it"}
    ]


def test_every_problem_of_a_request_is_reported_at_once() -> None:
    columns = {"plan": ["gold"], "day": ["next tuesday"], "shoe_size": [44]}
    with pytest.raises(InvalidInput) as info:
        Validator(RANGED).feeds(columns)
    fields = {f["field"]: f["error"] for f in info.value.fields}
    assert set(fields) == {"shoe_size", "age", "plan", "day"}
    assert fields["age"] == "required column is missing"
    assert "unknown category 'gold'" in fields["plan"]
    assert "not ISO 8601 dates" in fields["day"] and "next tuesday" in fields["day"]
    # the one string a client may print names them all
    text = detailed(info.value)
    assert all(name in text for name in fields), text


def test_dates_must_match_their_pattern_and_empty_is_null() -> None:
    validator = Validator(RANGED)
    feeds, _ = validator.feeds({"age": [30.0, None], "plan": ["pro", "basic"], "day": ["2024-3-5T08:30", ""]})
    assert feeds[STRINGS][:, 1].tolist() == ["2024-3-5T08:30", ""]
    with pytest.raises(InvalidInput) as info:
        validator.feeds({"age": [30.0], "plan": ["pro"], "day": ["05/03/2024"]})
    assert [f["field"] for f in info.value.fields] == ["day"]


def test_values_outside_the_training_range_are_flagged_or_refused() -> None:
    columns = {
        "age": [17.0, 30.0, 91.0, None, 90.0],
        "plan": ["pro"] * 5,
        "day": ["2023-12-31", "2024-06-30T23:00", "2024-07-01", "", "2024-01-01"],
    }
    flagging = Validator(RANGED)
    feeds, _ = flagging.feeds(columns)
    assert flagging.outside(feeds) == {"age": 2, "day": 2}  # nulls and the bounds themselves are in range
    refusing = Validator(RANGED, out_of_range="reject")
    with pytest.raises(InvalidInput) as info:
        refusing.feeds(columns)
    assert info.value.fields == [
        {"field": "age", "error": "2 value(s) outside the training range [18, 90]"},
        {"field": "day", "error": "2 value(s) outside the training range [2024-01-01, 2024-06-30]"},
    ]
    inside = {k: v[1:2] for k, v in columns.items()}
    assert refusing.outside(refusing.feeds(inside)[0]) == {} == flagging.outside(flagging.feeds(inside)[0])
