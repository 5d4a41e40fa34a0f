"""Wire formats → columns, and outputs → wire formats, for every protocol the server speaks.

- Open Inference Protocol v2 (KServe v2 / Triton): one input tensor per column. REST JSON, the binary
  tensor data extension and gRPC (typed or raw contents) each build :class:`Tensor` values, and one
  function, :func:`oip_columns`, checks and decodes them all, so every transport accepts and refuses
  the same requests.
- KServe v1: ``{"instances": [...]}`` → ``{"predictions": [...]}``.
- MLflow scoring: ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs`` (JSON) and CSV.
- prodml's ``/predict``: a list of records.

Parsing errors raise :class:`~prodml.core.errors.InvalidInput` naming the offending field; they quote at
most a short prefix of what the client sent.
"""

from __future__ import annotations

import csv
import io
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from prodml.core.errors import InvalidInput
from prodml.serve.labels import LABEL, Labels, tensor_bytes
from prodml.serve.tensors import oip_input
from prodml.serve.validation import bad_field, short

__all__ = [
    "Tensor",
    "columns_from_csv",
    "columns_from_kserve_v1",
    "columns_from_mlflow",
    "columns_from_records",
    "encode_oip",
    "kserve_v1_proba",
    "oip_columns",
    "oip_request",
    "oip_tensor",
    "predictions",
    "tensor_metadata",
]

_NAMES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
]
OIP_NUMERIC = dict(
    zip(_NAMES, ["?", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8"], strict=True)
)  # → numpy dtype
_NUMBER = frozenset({int, float, type(None)})
_ALLOWED = {"BYTES": frozenset({str, type(None)}), "BOOL": frozenset({bool})}
_NUMBER_CSV = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Tensor:
    """One OIP input tensor as a transport received it: JSON or typed ``data``, or ``raw`` bytes."""

    name: Any
    datatype: Any
    shape: Any
    data: Any = None
    raw: bytes | None = None


def oip_columns(tensors: Sequence[Tensor], *, shaped: bool = False) -> dict[str, Any]:
    """OIP input tensors (REST JSON, binary extension, gRPC) → columns (name → one value per row).

    Each input is one column: shape ``[N]`` or ``[N, 1]``; ``data`` may be flat or nested as the shape
    says, never deeper; its values must be of the declared ``datatype``. ``shaped`` (a package with
    tensor inputs, see :mod:`prodml.serve.tensors`): any shape, numbers only, each input an array of
    that shape (row-major ``data``, flat or nested exactly as the shape says).
    """
    if not tensors:
        raise bad_field("inputs", "expected a non-empty list of input tensors")
    columns: dict[str, Any] = {}
    problems: list[InvalidInput] = []  # every broken tensor is reported, not only the first
    for i, t in enumerate(tensors):
        try:
            columns[t.name] = _column(i, t, columns, shaped)
        except InvalidInput as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        fields = [f for exc in problems for f in exc.fields]
        raise InvalidInput(f"{len(problems)} input tensors are malformed", fields=fields)
    return columns


def _column(i: int, t: Tensor, columns: Mapping[str, Any], shaped: bool) -> Any:
    """One tensor's values, checked (``columns``: those decoded before it)."""
    if not isinstance(t.name, str) or not t.name:
        raise bad_field(f"inputs[{i}].name", "expected a string")
    where = f"inputs[{i}] ({short(t.name)})"
    shape = t.shape
    if shaped:
        if not (isinstance(shape, list) and shape and all(type(d) is int and d >= 0 for d in shape)):
            raise bad_field(f"{where}.shape", "expected the tensor's sizes, e.g. [N, 1, 8, 8], each >= 0")
        if t.datatype not in OIP_NUMERIC:
            raise bad_field(
                f"{where}.datatype",
                f"this model takes numbers (FP32, INT64), not {short(str(t.datatype))!r}",
            )
    elif not (
        isinstance(shape, list)
        and len(shape) in (1, 2)
        and all(type(d) is int and d >= 0 for d in shape)
        and shape[1:] in ([], [1])
    ):
        raise bad_field(f"{where}.shape", "each input is one column: shape [N] or [N, 1], N >= 0")
    if t.datatype != "BYTES" and t.datatype not in OIP_NUMERIC:
        raise bad_field(f"{where}.datatype", f"unsupported datatype {short(str(t.datatype))!r}")
    if t.name in columns:
        raise bad_field(where, "this input is given twice")
    count = math.prod(shape) if shaped else shape[0]
    values = _raw(t.raw, t.datatype, count, where) if t.raw is not None else _data(t, where, shaped)
    if len(values) != count:
        raise bad_field(where, f"shape {shape} needs {count} values, got {len(values)}")
    return values.reshape(shape) if shaped else values


def _data(t: Tensor, where: str, shaped: bool = False) -> Any:
    """JSON or typed values, flattened as deep as the shape allows and checked against the datatype."""
    data = t.data
    if not isinstance(data, list):
        raise bad_field(f"{where}.data", "expected a list")
    if shaped:
        for depth, size in enumerate(t.shape[1:]):  # nested exactly as the shape says, or flat
            if not data or type(data[0]) is not list:
                break
            if not all(type(row) is list and len(row) == size for row in data):
                raise bad_field(f"{where}.data", f"lists at depth {depth + 1} must each hold {size} items")
            data = list(chain.from_iterable(data))
    elif len(t.shape) == 2 and data and type(data[0]) is list:
        if not all(type(row) is list and len(row) == 1 for row in data):
            raise bad_field(f"{where}.data", "rows of shape [N, 1] hold one value each")
        data = [row[0] for row in data]
    allowed = _ALLOWED.get(t.datatype, _NUMBER)
    if not set(map(type, data)) <= allowed:
        wrong = next(v for v in data if type(v) not in allowed)
        nested = " (nested deeper than the shape)" if isinstance(wrong, list | dict) else ""
        raise bad_field(f"{where}.data", f"datatype {t.datatype} does not match {short(repr(wrong))}{nested}")
    if t.datatype == "BYTES":
        return data
    try:
        return np.array(data, dtype=bool if t.datatype == "BOOL" else np.float64)
    except OverflowError:
        raise bad_field(f"{where}.data", "a number is out of range") from None


def _raw(chunk: bytes, datatype: str, count: int, where: str) -> Any:
    """One tensor's raw little-endian bytes (OIP binary extension, gRPC raw contents) → its values."""
    if datatype == "BYTES":
        out, pos = [], 0
        while pos < len(chunk):
            if pos + 4 > len(chunk):
                raise bad_field(where, "truncated BYTES element length")
            (n,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + n > len(chunk):
                raise bad_field(where, "truncated BYTES element")
            out.append(chunk[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        return out
    dtype = np.dtype(OIP_NUMERIC[datatype]).newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise bad_field(
            where, f"binary data has {len(chunk)} bytes, {count} x {datatype} needs {count * dtype.itemsize}"
        )
    arr = np.frombuffer(chunk, dtype=dtype)
    return arr if datatype == "BOOL" else arr.astype(np.float64)


def oip_request(body: Any, binary: bytes = b"") -> tuple[list[Tensor], dict[str, Any]]:
    """A REST OIP v2 request body (and its binary tail) → its tensors and the request (``id``,
    ``parameters``, ``outputs``), checked."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise bad_field("inputs", "expected a non-empty list of input tensors")
    outputs = body.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise bad_field("outputs", "expected a list of objects")
    tensors, offset = [], 0
    for i, t in enumerate(body["inputs"]):
        if not isinstance(t, dict):
            raise bad_field(f"inputs[{i}]", "expected an object with name, shape, datatype, data")
        params = t.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        raw = None
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise bad_field(f"inputs[{i}].parameters.binary_data_size", "does not fit the binary body")
            raw, offset = binary[offset : offset + size], offset + size
        tensors.append(Tensor(t.get("name"), t.get("datatype"), t.get("shape"), t.get("data"), raw))
    if offset != len(binary):
        raise bad_field("body", f"{len(binary) - offset} binary bytes are not claimed by any input")
    return tensors, body


def wants_binary(request: Mapping[str, Any]) -> bool:
    """Whether an OIP request asks for binary outputs (any ``binary_data`` output parameter)."""
    params = request.get("parameters")
    if isinstance(params, dict) and params.get("binary_data_output"):
        return True
    return any(
        isinstance(o.get("parameters"), dict) and o["parameters"].get("binary_data")
        for o in request.get("outputs", [])
    )


def columns_from_records(records: Any, field: str = "records") -> dict[str, Any]:
    """``[{"a": 1, "b": "x"}, …]`` → columns; every record must have the same keys."""
    if not isinstance(records, list) or not records:
        raise bad_field(field, "expected a non-empty list of records (objects)")
    if not all(type(r) is dict for r in records):
        raise bad_field(field, "every record must be an object of column: value")
    keys = records[0].keys()
    for i, r in enumerate(records):
        if r.keys() != keys:
            missing, extra = sorted(map(short, keys - r.keys())), sorted(map(short, r.keys() - keys))
            raise bad_field(
                f"{field}[{i}]", f"has other columns than record 0 (missing {missing}, extra {extra})"
            )
    names = list(keys)
    if len(names) == 1:
        return {names[0]: [r[names[0]] for r in records]}
    return dict(zip(names, zip(*map(itemgetter(*names), records), strict=True), strict=True))


def _columns_from_lists(data: Any, names: Sequence[Any], field: str, names_field: str) -> dict[str, Any]:
    """Rows given as lists ordered like ``names`` (strings, no duplicates) → columns."""
    if not all(type(n) is str for n in names):
        raise bad_field(names_field, "column names must be strings")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise bad_field(names_field, f"column {short(dup)!r} is given twice")
    if not isinstance(data, list) or not data:
        raise bad_field(field, "expected a non-empty list of rows")
    for i, row in enumerate(data):
        if type(row) is not list or len(row) != len(names):
            raise bad_field(f"{field}[{i}]", f"expected a list of {len(names)} values")
    return dict(zip(names, zip(*data, strict=True), strict=True))


def columns_from_mlflow(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """MLflow's scoring JSON → (columns, params)."""
    if not isinstance(body, dict):
        raise bad_field(
            "body", "expected a JSON object with dataframe_split, dataframe_records, instances or inputs"
        )
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise bad_field("params", "expected an object")
    keys = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in body]
    if len(keys) != 1:
        raise bad_field("body", "give exactly one of dataframe_split, dataframe_records, instances, inputs")
    key, value = keys[0], body[keys[0]]
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("columns"), list):
            raise bad_field(key, "expected {'columns': [...], 'data': [[...], ...]}")
        return _columns_from_lists(
            value.get("data"), value["columns"], f"{key}.data", f"{key}.columns"
        ), params
    if isinstance(value, dict):  # {"col": [values]} (tensor-style column dict)
        return {k: v if isinstance(v, list) else [v] for k, v in value.items()}, params
    return columns_from_records(value, key), params


def columns_from_csv(text: str, max_rows: int) -> dict[str, list[Any]]:
    """CSV with a header row → columns: plain decimal numbers become floats, empty cells None, the rest
    text (which a numeric column refuses). At most ``max_rows`` rows are read."""
    reader = csv.reader(io.StringIO(text), strict=True)  # lines split at LF only: a bare CR is refused
    try:
        header = next(reader, None)
        if header is None:
            raise bad_field("body", "empty CSV")
        if len(set(header)) != len(header):
            raise bad_field("header", "a column name is given twice")
        out: dict[str, list[Any]] = {h: [] for h in header}
        columns = list(out.values())
        for i, row in enumerate(reader):
            if i == max_rows:
                raise InvalidInput(
                    f"the CSV has more than {max_rows} rows",
                    fields=[{"field": "body", "error": f"at most {max_rows} rows"}],
                )
            if len(row) != len(header):
                raise bad_field(f"row {i + 1}", f"has {len(row)} cells, the header has {len(header)}")
            for column, cell in zip(columns, row, strict=True):
                column.append(None if cell == "" else float(cell) if _NUMBER_CSV.fullmatch(cell) else cell)
    except csv.Error as exc:
        raise bad_field(f"CSV line {reader.line_num}", str(exc)) from None
    return out


def kserve_v1_proba(body: Any) -> bool:
    """Whether a KServe v1 request asks for class probabilities instead of labels:
    ``"parameters": {"predict_proba": true}`` (KServe's own servers ignore the key and answer labels)."""
    params = body.get("parameters") if isinstance(body, Mapping) else None
    if params is None:
        return False
    if not isinstance(params, Mapping) or type(params.get("predict_proba", False)) is not bool:
        raise bad_field("parameters.predict_proba", "expected true or false")
    return bool(params.get("predict_proba"))


def columns_from_kserve_v1(body: Any, names: Sequence[str]) -> dict[str, Any]:
    """KServe v1 ``instances``: records, or lists ordered like the model's inputs."""
    if not isinstance(body, Mapping) or not isinstance(body.get("instances"), list) or not body["instances"]:
        raise bad_field("instances", "expected a non-empty list")
    instances = body["instances"]
    if all(type(r) is dict for r in instances):
        return columns_from_records(instances, "instances")
    if all(type(r) is list for r in instances):
        return _columns_from_lists(instances, names, "instances", "the model's inputs")
    raise bad_field("instances", "expected all records (objects) or all lists")


def tensor_metadata(schema: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A model's inputs and outputs as OIP v2 tensor metadata (``name``, ``datatype``, ``shape``)."""
    inputs = [
        oip_input(c)  # a tensor input: its declared shape and datatype
        if c.get("kind") == "tensor"
        else {"name": c["name"], "datatype": "BYTES" if c["dtype"] == "string" else "FP32", "shape": [-1, 1]}
        for c in schema["inputs"]
    ]
    label = Labels(schema.get("classes")).datatype  # the class names' type (prodml.serve.labels)
    outputs = [
        {
            "name": o["name"],
            "datatype": label if o["name"] == LABEL else "INT64" if o["dtype"] == "int64" else "FP32",
            "shape": o.get("shape", [-1]),
        }
        for o in schema["outputs"]
    ]
    return inputs, outputs


def oip_tensor(arr: np.ndarray) -> tuple[str, np.ndarray]:
    """An output array's OIP datatype and its values in that type, little-endian (REST and gRPC)."""
    if arr.dtype.kind in "iu":
        return "INT64", arr.astype("<i8", copy=False)
    if arr.dtype.kind in "OUb":  # class names (prodml.serve.labels)
        return ("BOOL", arr) if arr.dtype.kind == "b" else ("BYTES", arr.astype(object, copy=False))
    if arr.dtype == np.float64:
        return "FP64", arr.astype("<f8", copy=False)
    return "FP32", arr.astype("<f4", copy=False)


def encode_oip(
    outputs: list[np.ndarray],
    output_names: list[str],
    *,
    model: str,
    version: str,
    request_id: str,
    binary: bool,
    labels: Labels | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Outputs → an OIP v2 response body (and the binary tail when ``binary``); with ``labels`` the
    ``label`` output carries class names."""
    if labels is not None:
        outputs = labels.outputs(outputs, output_names)
    tensors, tail = [], b""
    for name, arr in zip(output_names, outputs, strict=True):
        datatype, arr = oip_tensor(arr)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            raw = tensor_bytes(datatype, arr)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            tail += raw
        else:
            tensor["data"] = arr.ravel().tolist() if datatype == "BYTES" else arr.ravel()
        tensors.append(tensor)
    return {"model_name": model, "model_version": version, "id": request_id, "outputs": tensors}, tail


def predictions(
    outputs: list[np.ndarray], task: str, classes: Sequence[Any] | None, *, style: str = "proba"
) -> list[Any]:
    """Per-row predictions for the JSON protocols.

    ``style``: ``proba`` (class probabilities / values), ``label`` (the class label / value), ``records``
    (prodml's ``/predict``: label plus probabilities).
    """
    if task not in ("binary", "multiclass"):
        return outputs[0].reshape(-1).astype(float).tolist()
    proba = outputs[1]
    if style == "proba":
        return list(proba.tolist())
    indices = outputs[0].reshape(-1).tolist()
    labels = [classes[i] for i in indices] if classes else indices
    if style == "label":
        return labels
    names = [str(c) for c in (classes or range(proba.shape[1]))]
    if task == "binary":
        return [{"label": lab, "probability": float(p[1])} for lab, p in zip(labels, proba, strict=True)]
    return [
        {"label": lab, "probabilities": dict(zip(names, map(float, p), strict=True))}
        for lab, p in zip(labels, proba, strict=True)
    ]
