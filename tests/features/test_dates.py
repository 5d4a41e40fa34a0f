"""Date parts: numpy and the ONNX graph compute the same parts from the ISO string a client sends."""

import numpy as np
import pandas as pd
import pytest

from prodml.core.errors import FeatureError
from prodml.core.project import DATE_PARTS, Features
from prodml.features.dates import DateParts
from prodml.features.transforms import build_preprocessor

EDGES = [
    "2024-02-29",  # leap day
    "2024-12-31T23:59:59",  # last day of a leap year: day of year 366
    "1969-12-31T05:00:00+02:00",  # before the epoch; the offset is ignored (wall-clock parts)
    "1900-03-01 07:15",  # a space instead of the T; 1900 is no leap year
    "2100-01-01T00",
    "2000-1-2",  # unpadded month and day
]
BAD = ["", "garbage", "2024-13-01", "2024-00-10", "2024-01-32", "2024-01-01T24:00", "24-01-01", "2024/01/01"]


def _expected(values: list[str]) -> np.ndarray:
    stamps = pd.to_datetime(
        [v[:19].replace(" ", "T") if "T" in v or " " in v else v for v in values], format="mixed"
    )
    epoch = (stamps.normalize() - pd.Timestamp("1970-01-01")).days
    return np.column_stack(
        [stamps.year, stamps.month, stamps.day, stamps.dayofweek, stamps.dayofyear, stamps.hour, epoch]
    ).astype(np.float64)


def test_parts_match_pandas_on_edge_dates() -> None:
    got = (
        DateParts()
        .fit(np.array([["2024-01-01"]], dtype=object))
        .transform(np.array(EDGES, dtype=object).reshape(-1, 1))
    )
    np.testing.assert_array_equal(got, _expected(EDGES))
    assert got[1, DATE_PARTS.index("dayofyear")] == 366
    assert got[2, DATE_PARTS.index("epoch_days")] == -1


def test_missing_or_malformed_dates_give_nan_parts() -> None:
    got = DateParts(parts=("year", "hour")).fit_transform(np.array(BAD, dtype=object).reshape(-1, 1))
    assert got.shape == (len(BAD), 2)
    assert np.isnan(got).all()
    assert np.isnan(DateParts().fit_transform(np.array([[None]], dtype=object))).all()


def test_parts_are_named_and_checked() -> None:
    frame = pd.DataFrame({"when": ["2024-03-15"]})
    dp = DateParts(parts=("month", "dayofweek")).fit(frame)
    assert list(dp.get_feature_names_out()) == ["when_month", "when_dayofweek"]
    assert dp.transform(frame).tolist() == [[3.0, 4.0]]  # a Friday
    with pytest.raises(ValueError, match="subset"):
        DateParts(parts=("week",)).fit(frame)


def test_onnx_graph_computes_the_same_parts() -> None:
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType

    from prodml.export.onnx import DATE_OPSET, _register_converters

    _register_converters()
    values = np.array(EDGES + BAD, dtype=object).reshape(-1, 1)
    dp = DateParts().fit(values)
    model = convert_sklearn(
        dp,
        initial_types=[("when", StringTensorType([None, 1]))],
        target_opset={"": DATE_OPSET, "ai.onnx.ml": 3},
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"when": values})
    np.testing.assert_array_equal(got, dp.transform(values).astype(np.float32))
    # one row alone, and a batch where no row has a time: the string splits still find their pieces
    (one,) = session.run(None, {"when": np.array([["2024-03-15"]], dtype=object)})
    assert one.tolist() == [[2024, 3, 15, 4, 75, 0, 19797]]


def test_date_columns_get_parts_and_a_date_op_must_name_a_date() -> None:
    frame = pd.DataFrame({"when": ["2024-03-15", ""], "n": [1.0, 2.0]})
    pre = build_preprocessor(Features(), ["when", "n"], dates=["when"]).fit(frame)
    assert pre.transform(frame).shape == (2, len(DATE_PARTS) + 1)
    chosen = Features.model_validate({"transforms": [{"column": "when", "op": "date", "parts": ["month"]}]})
    assert build_preprocessor(chosen, ["when", "n"], dates=["when"]).fit(frame).transform(frame).shape == (
        2,
        2,
    )
    wrong = Features.model_validate({"transforms": [{"column": "n", "op": "date"}]})
    with pytest.raises(FeatureError, match="'n' holds no dates"):
        build_preprocessor(wrong, ["when", "n"], dates=["when"])
    onehot = Features.model_validate({"transforms": [{"column": "when", "op": "onehot"}]})
    with pytest.raises(FeatureError, match="holds dates"):
        build_preprocessor(onehot, ["when", "n"], dates=["when"])
