"""schema.json: inputs as training saw them, date inputs described for the server to check."""

import re

import numpy as np
import pandas as pd

from prodml.export.schema import infer_schema


def test_a_date_input_is_a_string_with_its_format_pattern_and_range() -> None:
    frame = pd.DataFrame(
        {
            "day": ["2024-03-15T00:00:00", "", "2023-01-02T00:00:00"],
            "plan": ["a", "b", None],
            "x/y": np.array([1.0, np.nan, 3.0], dtype=np.float32),
        }
    )
    schema = infer_schema(frame, ["plan"], task="regression", classes=None, target="t", dates=["day"])
    day, plan, xy = schema["inputs"]
    assert day == {
        "name": "day",
        "dtype": "string",
        "format": "date-time",
        "pattern": day["pattern"],
        "nullable": True,
        "earliest": "2023-01-02T00:00:00",
        "latest": "2024-03-15T00:00:00",
    }
    assert re.fullmatch(day["pattern"], "2024-03-15 10:30")
    assert not re.fullmatch(day["pattern"], "next tuesday")
    assert plan["categories"] == ["a", "b"] and plan["nullable"]
    assert (xy["name"], xy["min"], xy["max"], xy["nullable"]) == ("x/y", 1.0, 3.0, True)
