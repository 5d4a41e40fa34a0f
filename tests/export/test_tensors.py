"""check_tensors beyond dtype and shape: booleans and text, float32's range, max_shape, max_size_of."""

from __future__ import annotations

import numpy as np
import pytest

from prodml.core.errors import InvalidInput
from prodml.export.tensors import check_tensors
from prodml.export.torch import check_tensors as reexported
from prodml.export.torch import tensor_input

SEQUENCE = [
    tensor_input("events", "float32", [7, 12, 3], dynamic=(1,)),
    tensor_input("lengths", "int64", [7], minimum=1, maximum=12, max_size_of=("events", 1)),
]


def test_entries_bound_dynamic_axes_and_values_by_another_input() -> None:
    assert reexported is check_tensors
    assert SEQUENCE[0]["shape"] == [-1, -1, 3]
    assert SEQUENCE[0]["max_shape"] == [-1, 12, 3]
    assert SEQUENCE[1]["max_size_of"] == ["events", 1]
    assert "max_shape" not in tensor_input("image", "float32", [2, 1, 8, 8])  # only the batch is dynamic
    feeds, rows = check_tensors(SEQUENCE, {"events": np.zeros((2, 12, 3)), "lengths": [12, 1]})
    assert rows == 2
    assert feeds["events"].shape == (2, 12, 3)


@pytest.mark.parametrize(
    ("feeds", "field", "says"),
    [
        ({"events": np.zeros((1, 13, 3)), "lengths": [1]}, "events", "too large; at most [-1, 12, 3]"),
        (
            {"events": np.zeros((1, 4, 3)), "lengths": [5]},
            "lengths",
            "at most 4, the size of events's axis 1",
        ),
        ({"events": np.zeros((1, 4, 3), bool), "lengths": [1]}, "events", "(booleans)"),
        ({"events": np.zeros((1, 4, 3)), "lengths": ["1"]}, "lengths", "(text)"),
        ({"events": np.full((1, 4, 3), 1e39), "lengths": [1]}, "events", "finite float32"),
        ({"events": np.zeros((1, 4, 3)), "lengths": [1e30]}, "lengths", "values are not int64"),
        ({"events": [[[0, 0, 0]], [[0, 0]]], "lengths": [1, 1]}, "events", "nested lists of unequal lengths"),
    ],
)
def test_what_does_not_fit_is_refused_naming_the_input(
    feeds: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_tensors(SEQUENCE, feeds)
    assert any(f["field"] == field and says in f["error"] for f in caught.value.fields), caught.value.fields
