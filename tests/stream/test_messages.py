"""Decoding request messages, encoding results and dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest

from prodml.core.errors import InvalidInput
from prodml.stream.messages import Dead, NotJson, Request, dead_letter, decode, encode


@dataclass
class FakeMessage:
    """What the worker reads of a consumed message (confluent_kafka.Message's methods)."""

    _value: bytes | None
    _key: bytes | None = None
    _offset: int = 7

    def topic(self) -> str:
        return "requests"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)

    def headers(self) -> Any:
        return None

    def error(self) -> Any:
        return None


def test_a_record_takes_its_id_from_the_id_field_then_the_key_then_its_coordinates() -> None:
    r = decode(FakeMessage(b'{"a": 1, "request_id": "r1"}', b"k"))
    assert (r.request_id, r.records, r.rows) == ("r1", [{"a": 1}], 1)
    assert decode(FakeMessage(b'{"a": 1}', b"k")).request_id == "k"
    assert decode(FakeMessage(b'{"a": 1}')).request_id == "requests/2/7"
    assert decode(FakeMessage(b'{"a": 1, "rid": 5}'), "rid").request_id == "5"


def test_a_list_of_records_is_one_request_of_many_rows() -> None:
    r = decode(FakeMessage(b'[{"a": 1}, {"a": 2}]', b"batch-1"))
    assert (r.request_id, r.rows, r.records) == ("batch-1", 2, [{"a": 1}, {"a": 2}])


def test_an_oip_body_is_decoded_by_the_servers_decoder() -> None:
    body = {"id": "o1", "inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]}]}
    r = decode(FakeMessage(orjson.dumps(body)))
    assert (r.request_id, r.rows, r.records) == ("o1", 2, None)
    assert np.asarray(r.columns["a"]).tolist() == [1.5, 2.5]
    bad = {"inputs": [{"name": "a", "shape": [3], "datatype": "FP32", "data": [1.5]}]}
    with pytest.raises(InvalidInput, match="shape"):
        decode(FakeMessage(orjson.dumps(bad)))


@pytest.mark.parametrize("value", [None, b"", b"{not json", b"\xff\xfe"])
def test_values_that_are_not_json_are_refused_as_such(value: bytes | None) -> None:
    with pytest.raises(NotJson):
        decode(FakeMessage(value))


@pytest.mark.parametrize("value", [b"3", b'"text"', b"[]", b"null"])
def test_json_of_another_shape_is_a_schema_error(value: bytes) -> None:
    with pytest.raises(InvalidInput, match="expected a JSON object"):
        decode(FakeMessage(value))


def test_results_carry_the_model_and_the_request_id_in_value_key_and_headers() -> None:
    r = Request(FakeMessage(b"{}"), "r9", records=[{}], rows=1)
    out = encode(r, [], [{"label": 1, "probability": 0.75}], model="churn", version="4", output_names=[])
    assert out.key == b"r9"
    assert orjson.loads(out.value) == {
        "request_id": "r9",
        "model": "churn",
        "version": "4",
        "predictions": [{"label": 1, "probability": 0.75}],
    }
    assert ("prodml-version", b"4") in out.headers and ("prodml-model", b"churn") in out.headers


def test_an_oip_request_gets_an_oip_response() -> None:
    r = Request(FakeMessage(b"{}"), "o1", columns={"a": [1.0]}, rows=1)
    proba = np.array([[0.25, 0.75]], dtype=np.float32)
    out = encode(
        r, [np.array([1]), proba], [], model="churn", version="4", output_names=["label", "probabilities"]
    )
    body = orjson.loads(out.value)
    assert (body["id"], body["model_version"]) == ("o1", "4")
    assert body["outputs"][1] == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [1, 2],
        "data": [0.25, 0.75],
    }


def test_a_dead_letter_keeps_the_original_bytes_and_says_why_and_where() -> None:
    message = FakeMessage(b"\x00raw", b"key", 41)
    letter = dead_letter(
        Dead(message, "schema", "1 column(s) break the schema", [{"field": "a", "error": "x"}])
    )
    assert (letter.key, letter.value) == (b"key", b"\x00raw")
    headers = dict(letter.headers)
    assert headers["prodml-error-reason"] == b"schema"
    assert headers["prodml-source-topic"] == b"requests"
    assert (headers["prodml-source-partition"], headers["prodml-source-offset"]) == (b"2", b"41")
    assert orjson.loads(headers["prodml-error-fields"]) == [{"field": "a", "error": "x"}]
