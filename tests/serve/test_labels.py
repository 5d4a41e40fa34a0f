"""The label contract: class indices become the classes from training, typed as they were."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from prodml.serve.labels import Labels, tensor_bytes
from prodml.serve.protocols import encode_oip, tensor_metadata


@pytest.mark.parametrize(
    ("classes", "datatype", "named"),
    [
        (["adelie", "gentoo", "rockhopper"], "BYTES", ["rockhopper", "adelie"]),
        ([3, 5, 7], "INT64", [7, 3]),
        ([0.0, 1.0, 2.0], "INT64", [2, 0]),
        ([0.5, 1.5, 2.5], "FP64", [2.5, 0.5]),
        ([False, True, True], "BOOL", [True, False]),
        (None, "INT64", [2, 0]),
    ],
)
def test_indices_become_class_names_of_their_type(
    classes: list[object], datatype: str, named: list[object]
) -> None:
    labels = Labels(classes)
    assert labels.datatype == datatype
    assert labels.named(np.array([2, 0], dtype=np.int64)).tolist() == named


def test_oip_responses_and_metadata_carry_string_classes_as_bytes() -> None:
    labels = Labels(["adelie", "gentoo"])
    outputs = [np.array([1, 0], dtype=np.int64), np.array([[0.2, 0.8], [0.9, 0.1]], dtype=np.float32)]
    body, _ = encode_oip(
        outputs,
        ["label", "probabilities"],
        model="m",
        version="1",
        request_id="r",
        binary=False,
        labels=labels,
    )
    assert body["outputs"][0] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["gentoo", "adelie"],
    }
    assert (
        orjson.loads(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))["outputs"][1]["datatype"]
        == "FP32"
    )
    head, tail = encode_oip(
        outputs,
        ["label", "probabilities"],
        model="m",
        version="1",
        request_id="r",
        binary=True,
        labels=labels,
    )
    size = head["outputs"][0]["parameters"]["binary_data_size"]
    assert tail[:size] == b"\x06\x00\x00\x00gentoo\x06\x00\x00\x00adelie"
    schema = {
        "inputs": [],
        "outputs": [{"name": "label", "dtype": "int64"}, {"name": "probabilities", "dtype": "float"}],
        "classes": ["adelie", "gentoo"],
    }
    assert [o["datatype"] for o in tensor_metadata(schema)[1]] == ["BYTES", "FP32"]


def test_bytes_tensors_read_back_with_tritons_client() -> None:
    from tritonclient.utils import deserialize_bytes_tensor

    raw = tensor_bytes("BYTES", np.array(["île", "bill length/mm"], dtype=object))
    assert [b.decode() for b in deserialize_bytes_tensor(raw)] == ["île", "bill length/mm"]
    assert tensor_bytes("INT64", np.array([1, 2], dtype="<i8")) == np.array([1, 2], dtype="<i8").tobytes()
