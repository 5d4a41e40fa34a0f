"""Wire formats → columns: one OIP decoder for every transport, the MLflow forms, CSV, KServe v1."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from prodml.core.errors import InvalidInput
from prodml.serve.protocols import (
    Tensor,
    columns_from_csv,
    columns_from_kserve_v1,
    columns_from_mlflow,
    columns_from_records,
    oip_columns,
    oip_request,
    predictions,
)


def test_oip_json_nested_and_binary_decode_to_the_same_columns() -> None:
    flat = {
        "inputs": [
            {"name": "age", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "plan", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["bc"]]},
        ]
    }
    columns = oip_columns(oip_request(flat)[0])
    assert columns["age"].tolist() == [1.0, 2.0]
    assert columns["plan"] == ["a", "bc"]
    age = np.array([1, 2], "<f4").tobytes()
    plan = struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc"
    binary = {
        "inputs": [
            {"name": "age", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": len(age)}},
            {
                "name": "plan",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(plan)},
            },
        ]
    }
    columns = oip_columns(oip_request(binary, age + plan)[0])
    assert columns["age"].tolist() == [1.0, 2.0]
    assert columns["plan"] == ["a", "bc"]
    with pytest.raises(InvalidInput, match="not claimed"):
        oip_request(binary, age + plan + b"x")
    half = np.array([1.5], "<f2").tobytes()
    assert oip_columns([Tensor("age", "FP16", [1], raw=half)])["age"].tolist() == [1.5]
    assert oip_columns([Tensor("age", "FP16", [1], data=[1.5])])["age"].tolist() == [1.5]
    assert oip_columns([Tensor("ok", "BOOL", [1], data=[True])])["ok"].dtype == bool


@pytest.mark.parametrize(
    ("tensor", "error"),
    [
        (Tensor("age", "FP32", [2, 3], data=[1] * 6), "one column"),
        (Tensor("age", "FP32", [-1], data=[]), "one column"),
        (Tensor("age", "FP32", [1, 1, 1], data=[1]), "one column"),
        (Tensor("age", "FP32", [2], data=[1]), "needs 2 values, got 1"),
        (Tensor("age", "FP32", [1], data=[[1]]), "nested deeper than the shape"),
        (Tensor("age", "FP32", [1, 1], data=[[[1]]]), "nested deeper than the shape"),
        (Tensor("age", "FP32", [1], data=["1"]), "does not match"),
        (Tensor("age", "FP32", [1], data=[True]), "does not match"),
        (Tensor("age", "BOOL", [1], data=[1.0]), "does not match"),
        (Tensor("plan", "BYTES", [1], data=[1]), "does not match"),
        (Tensor("age", "FP17", [1], data=[1]), "unsupported datatype"),
        (Tensor(5, "FP32", [1], data=[1]), "expected a string"),
        (Tensor("age", "FP32", [2], raw=b"\x00" * 4), "needs 8"),
        (Tensor("plan", "BYTES", [1], raw=b"\x09\x00\x00\x00ab"), "truncated"),
        (Tensor("age", "FP32", [1], data=5), "expected a list"),
    ],
)
def test_bad_oip_tensors_are_refused_with_their_field(tensor: Tensor, error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        oip_columns([tensor])


def test_every_broken_tensor_is_reported() -> None:
    with pytest.raises(InvalidInput) as info:
        oip_columns([Tensor("age", "FP32", [2, 3], data=[1] * 6), Tensor("plan", "BYTES", [1], data=[1])])
    assert [f["field"] for f in info.value.fields] == ["inputs[0] (age).shape", "inputs[1] (plan).data"]


def test_oip_requests_refuse_duplicates_bad_outputs_and_empty_inputs() -> None:
    with pytest.raises(InvalidInput, match="given twice"):
        oip_columns([Tensor("age", "FP32", [1], data=[1]), Tensor("age", "FP32", [1], data=[2])])
    with pytest.raises(InvalidInput, match="outputs"):
        oip_request({"inputs": [], "outputs": 5})
    with pytest.raises(InvalidInput, match="non-empty"):
        oip_columns(oip_request({"inputs": []})[0])


def test_mlflow_forms() -> None:
    split, _ = columns_from_mlflow({"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}})
    records, params = columns_from_mlflow(
        {
            "dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}],
            "params": {"predict_method": "predict_proba"},
        }
    )
    assert (
        {k: list(v) for k, v in split.items()}
        == {k: list(v) for k, v in records.items()}
        == {"a": [1, 2], "b": ["x", "y"]}
    )
    assert params == {"predict_method": "predict_proba"}
    assert columns_from_mlflow({"inputs": {"a": [1, 2]}})[0] == {"a": [1, 2]}
    for body, error in [
        (
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2]]}},
            r"data\[1\]: expected a list of 2",
        ),
        ({"dataframe_split": {"columns": ["a", 2], "data": [[1, "x"]]}}, "column names must be strings"),
        ({"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}, "given twice"),
        ({"dataframe_split": {"columns": ["a"]}}, "non-empty list of rows"),
        ({"dataframe_records": [{"a": 1}, {"b": 2}]}, r"dataframe_records\[1\]: has other columns"),
        ({"dataframe_records": [[1]]}, "every record must be an object"),
        ({"instances": [], "inputs": []}, "exactly one"),
        ({"inputs": [1]}, "every record must be an object"),
        ([1], "expected a JSON object"),
    ]:
        with pytest.raises(InvalidInput, match=error):
            columns_from_mlflow(body)


def test_records_and_kserve_v1() -> None:
    assert columns_from_records([{"a": 1}]) == {"a": [1]}
    assert columns_from_kserve_v1({"instances": [[1, "x"]]}, ["a", "b"]) == {"a": (1,), "b": ("x",)}
    with pytest.raises(InvalidInput, match="all records"):
        columns_from_kserve_v1({"instances": [[1, "x"], {"a": 1}]}, ["a", "b"])


def test_csv() -> None:
    assert columns_from_csv("a,b\n1,x\n,y\n", 10) == {"a": [1.0, None], "b": ["x", "y"]}
    assert columns_from_csv("a\n1_0\n", 10) == {"a": ["1_0"]}  # text, which a numeric column refuses
    assert columns_from_csv("a\n-1.5e3\n", 10) == {"a": [-1500.0]}
    for text, error in [
        ("", "empty CSV"),
        ("a,a\n1,2\n", "given twice"),
        ("a,b\n1\n", "has 1 cells"),
        ("a\n1\r2\n", "CSV line"),
        ("a\n" + "x" * 200_000 + "\n", "CSV line"),
        ("a\n" + "1\n" * 11, "more than 10 rows"),
    ]:
        with pytest.raises(InvalidInput, match=error):
            columns_from_csv(text, 10)


def test_prediction_styles() -> None:
    outputs = [np.array([1, 0]), np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)]
    assert predictions(outputs, "binary", [0, 1], style="label") == [1, 0]
    records = predictions(outputs, "binary", ["stay", "churn"], style="records")
    assert records[0]["label"] == "churn"
    assert records[0]["probability"] == pytest.approx(0.8)
    assert predictions([np.array([[1.5], [2.5]])], "regression", None) == [1.5, 2.5]
