"""Tensor inputs: packages whose ``schema.json`` lists inputs of ``"kind": "tensor"`` (a CNN's image
``[N, 1, 8, 8]``, a padded sequence ``events [N, T, F]`` with its ``lengths [N]``).

Such a package is fed by name, each request tensor straight to the ONNX session, instead of the column
packages' two matrices. The serving modules stay one path and call in here where the two kinds differ:

- ``validation``: :class:`~prodml.serve.validation.Validator` hands tensor packages to
  :class:`TensorInputs`, which checks them with the export's own
  :func:`~prodml.export.tensors.check_tensors` (dtype, rank, fixed dims, ``min``/``max``) plus the
  server's row limit; its ``layout`` is ``((), ())``, so the request log and the drift sketch record the
  predictions and no input columns (nothing is profiled for a tensor).
- ``protocols``: :func:`~prodml.serve.protocols.oip_columns` decodes OIP tensors of any rank
  (``shaped=True``) for them — REST JSON (flat or nested), the binary extension and gRPC alike; model
  metadata reports each input's declared shape (``-1`` for dynamic axes) and datatype (:func:`oip_input`).
- ``runtime``: the package's graph is used as it is (no front-loading into matrices); the warm-up runs
  :func:`warm_feeds`; the micro-batcher merges requests along axis 0 only when their other axes agree
  (:func:`same_shapes`), so sequences of different lengths run as separate calls.
- The JSON protocols carry tensors as nested lists, one per row: records (``/predict``, KServe v1
  ``instances``, MLflow ``dataframe_records``) as ``{"events": [[...], ...], "lengths": 5}``, MLflow
  ``inputs`` as ``{"events": [row, ...], "lengths": [...]}``, and KServe v1 bare rows for a model with one
  input (:func:`single_input`). CSV cannot carry a tensor: it gets the shape error. Explanations (Shapley
  values over columns) answer 400 for tensor models.
- ``cache``: the key covers each array's shape, so a ``[2, 1, 8]`` and a ``[1, 2, 8]`` request differ.

Example:
    >>> inputs = TensorInputs([{"name": "image", "kind": "tensor", "dtype": "float", "shape": [-1, 2]}])
    >>> feeds, rows = inputs.feeds({"image": [[0.5, 1.0]]})
    >>> feeds["image"].shape, rows
    ((1, 2), 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from prodml.core.errors import ConfigError, InvalidInput
from prodml.export.tensors import check_tensors

__all__ = ["TensorInputs", "oip_input", "same_shapes", "single_input", "tensor_entries", "warm_feeds"]

_OIP = {"float": "FP32", "int64": "INT64"}
_NUMPY = {"float": np.float32, "int64": np.int64}


def tensor_entries(schema: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The schema's tensor inputs, or None for a column package.

    Raises:
        ConfigError: the package mixes tensor and column inputs (export one kind).
    """
    inputs = schema["inputs"]
    tensors = [dict(e) for e in inputs if e.get("kind") == "tensor"]
    if not tensors:
        return None
    if len(tensors) != len(inputs):
        columns = [e["name"] for e in inputs if e.get("kind") != "tensor"]
        raise ConfigError(
            f"the model package mixes tensor inputs with columns ({', '.join(columns[:5])})",
            hint='export either columns (one [N, 1] input each) or tensors ("kind": "tensor")',
        )
    return tensors


class TensorInputs:
    """Checks a request's tensors (name → array or nested lists, axis 0 the rows) for the runtime.

    Args:
        entries: the schema's tensor inputs (:func:`tensor_entries`).
        max_rows: the largest batch accepted.
    """

    def __init__(self, entries: list[dict[str, Any]], *, max_rows: int = 10_000) -> None:
        self.entries = entries
        self.max_rows = max_rows
        self.names = [e["name"] for e in entries]

    def feeds(self, tensors: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
        """The ONNX feeds (float32 / int64 arrays of the declared shapes) and the row count.

        Raises:
            InvalidInput: naming each broken input, the expected dtype and shape, and what came.
        """
        feeds, rows = check_tensors(self.entries, tensors)
        if rows == 0:
            raise InvalidInput("the request has no rows", fields=[{"field": "inputs", "error": "0 rows"}])
        if rows > self.max_rows:
            raise InvalidInput(
                f"{rows} rows exceed the limit of {self.max_rows}",
                fields=[{"field": "inputs", "error": f"at most {self.max_rows} rows per request"}],
            )
        return feeds, rows


def warm_feeds(entries: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One row for the warm-up: each dynamic axis of size 1, filled with the input's ``min`` (or 0)."""
    return {
        e["name"]: np.full(
            [1 if d == -1 else d for d in e["shape"]], e.get("min") or 0, dtype=_NUMPY[e["dtype"]]
        )
        for e in entries
    }


def oip_input(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A tensor input as OIP v2 model metadata: its datatype and declared shape (``-1``: any size)."""
    return {"name": entry["name"], "datatype": _OIP[entry["dtype"]], "shape": list(entry["shape"])}


def same_shapes(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Whether two requests' feeds agree beyond axis 0, so one call along axis 0 can run both."""
    return all(a[name].shape[1:] == b[name].shape[1:] for name in a)


def single_input(tensors: TensorInputs | None, body: Any) -> dict[str, Any] | None:
    """KServe v1 ``instances`` given as bare rows (each one row of the tensor) for a model with one tensor
    input → that input; None for column models, several inputs, or records (objects name the inputs)."""
    rows = body.get("instances") if isinstance(body, dict) else None
    if tensors is None or len(tensors.names) != 1 or not isinstance(rows, list) or not rows:
        return None
    return None if any(type(r) is dict for r in rows) else {tensors.names[0]: rows}
