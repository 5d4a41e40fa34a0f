"""The label contract: a classifier's predicted label is the class *name* from training, on every protocol.

The graph's ``label`` output holds class indices (what ONNX converters emit); :class:`Labels` turns them
into the classes of ``schema.json``, as the native model's ``predict`` would return them:

==================================  ===================================  ===================================
classes in training                 OIP v2 ``label`` (REST, gRPC, meta)  KServe v1, MLflow, ``/predict`` JSON
==================================  ===================================  ===================================
strings                             ``BYTES``                            strings
integers (or whole-number floats)   ``INT64``                            integers
booleans                            ``BOOL``                             booleans
other numbers                       ``FP64``                             numbers
==================================  ===================================  ===================================

Example:
    >>> Labels(["adelie", "gentoo"]).named(np.array([1, 0])).tolist()
    ['gentoo', 'adelie']
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["LABEL", "Labels", "tensor_bytes"]

LABEL = "label"  # the classifier output that holds class indices


class Labels:
    """Class indices → class names for one model; ``datatype`` is the OIP datatype of the names.

    Args:
        classes: ``schema.json``'s ``classes`` (None: not a classifier, indices pass unchanged).
    """

    def __init__(self, classes: Sequence[Any] | None) -> None:
        self.classes = list(classes) if classes else None
        values = self.classes or []
        if not values:
            self.datatype, table = "INT64", None
        elif all(type(c) is bool for c in values):
            self.datatype, table = "BOOL", np.array(values, dtype=bool)
        elif all(type(c) is int or (type(c) is float and c.is_integer()) for c in values):
            self.datatype, table = "INT64", np.array(values, dtype="<i8")
        elif all(type(c) in (int, float) for c in values):
            self.datatype, table = "FP64", np.array(values, dtype="<f8")
        else:
            self.datatype, table = "BYTES", np.array([str(c) for c in values], dtype=object)
        self._table = table

    def named(self, indices: np.ndarray) -> np.ndarray:
        """The class of each index (shape kept)."""
        return indices if self._table is None else self._table[indices]

    def outputs(self, outputs: list[np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        """A model's outputs (graph order) with the ``label`` output's indices replaced by class names."""
        if self._table is None or LABEL not in names:
            return outputs
        i = list(names).index(LABEL)
        return [*outputs[:i], self.named(outputs[i]), *outputs[i + 1 :]]


def tensor_bytes(datatype: str, arr: np.ndarray) -> bytes:
    """An OIP tensor's raw bytes (binary extension, gRPC raw contents): BYTES elements each prefixed by
    their length (4 bytes, little-endian), other types as little-endian values."""
    if datatype != "BYTES":
        return arr.tobytes()
    encoded = [str(v).encode() for v in arr.ravel().tolist()]
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)
