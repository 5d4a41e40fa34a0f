"""Wire formats → columns, and outputs → wire formats, for every protocol the server speaks.

- Open Inference Protocol v2 (KServe v2 / Triton): one input tensor per column, BYTES for strings,
  including the binary tensor data extension (``Inference-Header-Content-Length``).
- KServe v1: ``{"instances": [...]}`` → ``{"predictions": [...]}``.
- MLflow scoring: ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs`` (JSON) and CSV.
- prodml's ``/predict``: a list of records.

Parsing errors raise :class:`RequestError` naming the offending field.
"""

from __future__ import annotations

import csv
import io
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from prodml.serve.validation import Rows, bad_field

__all__ = [
    "columns_from_csv",
    "columns_from_mlflow",
    "decode_binary",
    "encode_oip",
    "oip_tensor",
    "parse_oip",
    "predictions",
    "rows_from_kserve_v1",
    "rows_from_records",
    "tensor_metadata",
]

OIP_NUMERIC = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


_DICT = frozenset({dict})
_LIST = frozenset({list})
_STR = frozenset({str})


def rows_from_records(records: Any, field: str = "records", *, body: bytes | None = None) -> Rows:
    """``[{"a": 1, "b": "x"}, …]`` → :class:`Rows` of records (their keys are compared only if the lean
    path cannot take them, see ``Rows.columns``)."""
    if not isinstance(records, list) or not records:
        raise bad_field(field, "expected a non-empty list of records (objects)")
    if not set(map(type, records)) <= _DICT:
        raise bad_field(field, "every record must be an object of column: value")
    return Rows(records, None, field, body)


def _rows_from_lists(data: Any, names: Sequence[str], field: str, error: str, body: bytes | None) -> Rows:
    """Rows given as lists ordered like ``names``; each must hold ``len(names)`` values."""
    if not isinstance(data, list):
        raise bad_field(field, error)
    if not (set(map(type, data)) <= _LIST and set(map(len, data)) <= {len(names)}):
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(names):
                raise bad_field(f"{field}[{i}]", error)
    return Rows(data, tuple(names), field, body)


def _rows_from_split(split: Any, field: str, body: bytes | None) -> Rows:
    if (
        not isinstance(split, dict)
        or not isinstance(split.get("columns"), list)
        or not isinstance(split.get("data"), list)
    ):
        raise bad_field(field, "expected {'columns': [...], 'data': [[...], ...]}")
    columns = split["columns"]
    if not set(map(type, columns)) <= _STR:  # one C-level pass; a str subclass cannot come from JSON
        raise bad_field(f"{field}.columns", "column names must be strings")
    return _rows_from_lists(
        split["data"], columns, f"{field}.data", f"expected a list of {len(columns)} values", body
    )


def columns_from_mlflow(
    body: Any, *, raw: bytes | None = None
) -> tuple[dict[str, Any] | Rows, dict[str, Any]]:
    """MLflow's scoring JSON → (columns or rows, params). ``raw``: the body's bytes, see :class:`Rows`."""
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
    key = keys[0]
    value = body[key]
    if key == "dataframe_split":
        return _rows_from_split(value, key, raw), params
    if isinstance(value, dict):  # {"col": [values]} (tensor-style column dict)
        cols = {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return cols, params
    return rows_from_records(value, key, body=raw), params


def columns_from_csv(text: str) -> dict[str, list[Any]]:
    """CSV with a header row → columns; numbers become floats, empty cells None."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise bad_field("body", "empty CSV") from None
    rows = list(reader)
    out: dict[str, list[Any]] = {h: [] for h in header}
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise bad_field(f"row {i + 1}", f"has {len(row)} cells, the header has {len(header)}")
        for h, cell in zip(header, row, strict=True):
            out[h].append(_csv_value(cell))
    return out


def _csv_value(cell: str) -> Any:
    if cell == "":
        return None
    try:
        return float(cell)
    except ValueError:
        return cell


def parse_oip(body: Any, binary: bytes = b"") -> tuple[dict[str, Any], dict[str, Any]]:
    """An OIP v2 inference request → (columns, request header). ``binary`` holds the appended tensor data."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise bad_field("inputs", "expected a non-empty list of input tensors")
    columns: dict[str, Any] = {}
    offset = 0
    for i, tensor in enumerate(body["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise bad_field(where, "expected an object with name, shape, datatype, data")
        name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if not isinstance(name, str):
            raise bad_field(f"{where}.name", "expected a string")
        where = f"inputs[{i}] ({name})"
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise bad_field(f"{where}.shape", "expected a list of non-negative integers")
        if datatype != "BYTES" and datatype not in OIP_NUMERIC:
            raise bad_field(f"{where}.datatype", f"unsupported datatype {datatype!r}")
        count = int(np.prod(shape))
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise bad_field(f"{where}.shape", "each input is one column: shape [N] or [N, 1]")
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise bad_field(f"{where}.parameters.binary_data_size", "does not fit the binary body")
            chunk = binary[offset : offset + size]
            offset += size
            values: Any = decode_binary(chunk, datatype, count, where)
        else:
            values = _flatten(tensor.get("data"), where)
        if len(values) != count:
            raise bad_field(where, f"shape {shape} needs {count} values, got {len(values)}")
        columns[name] = values
    if offset != len(binary):
        raise bad_field("body", f"{len(binary) - offset} binary bytes are not claimed by any input")
    return columns, body


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise bad_field(f"{where}.data", "expected a list")
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        for row in data:
            if not isinstance(row, list):
                raise bad_field(f"{where}.data", "mixed nested and flat values")
            flat.extend(row)
        return flat
    return data


def decode_binary(chunk: bytes, datatype: str, count: int, where: str) -> Any:
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
    return arr.astype(np.float64) if arr.dtype.kind in "iuf" else arr


def tensor_metadata(schema: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A model's inputs and outputs as OIP v2 tensor metadata (``name``, ``datatype``, ``shape``)."""
    inputs = [
        {"name": c["name"], "datatype": "BYTES" if c["dtype"] == "string" else "FP32", "shape": [-1, 1]}
        for c in schema["inputs"]
    ]
    outputs = [
        {
            "name": o["name"],
            "datatype": "INT64" if o["dtype"] == "int64" else "FP32",
            "shape": o.get("shape", [-1]),
        }
        for o in schema["outputs"]
    ]
    return inputs, outputs


def oip_tensor(arr: np.ndarray) -> tuple[str, np.ndarray]:
    """An output array's OIP datatype and its values in that type, little-endian (REST and gRPC)."""
    if arr.dtype.kind in "iu":
        return "INT64", arr.astype("<i8", copy=False)
    return "FP32", arr.astype("<f4", copy=False)


def encode_oip(
    outputs: list[np.ndarray],
    output_names: list[str],
    *,
    model: str,
    version: str,
    request_id: str,
    binary: bool = False,
) -> tuple[dict[str, Any], bytes]:
    """Outputs → an OIP v2 response body (and the binary tail when ``binary``)."""
    tensors, tail = [], b""
    for name, arr in zip(output_names, outputs, strict=True):
        datatype, arr = oip_tensor(arr)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            raw = arr.tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            tail += raw
        else:
            tensor["data"] = arr.ravel()
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


def rows_from_kserve_v1(body: Any, names: Sequence[str], *, raw: bytes | None = None) -> Rows:
    """KServe v1 ``instances``: records, or lists ordered like the model's inputs."""
    if not isinstance(body, Mapping) or not isinstance(body.get("instances"), list) or not body["instances"]:
        raise bad_field("instances", "expected a non-empty list")
    instances = body["instances"]
    kinds = set(map(type, instances))
    if kinds <= _DICT:
        return rows_from_records(instances, "instances", body=raw)
    if kinds <= _LIST:
        return _rows_from_lists(
            instances,
            names,
            "instances",
            f"expected {len(names)} values in input order: {', '.join(names)}",
            raw,
        )
    raise bad_field("instances", "expected all records (objects) or all lists")
