"""Check request tensors against a package's tensor inputs (``"kind": "tensor"`` in ``schema.json``).

Its own module, numpy only, so the server can import it without the export code around it (which
reaches skl2onnx and torch); :func:`prodml.export.torch.tensor_input` writes the entries.

Example:
    >>> entry = {"name": "image", "kind": "tensor", "dtype": "float", "shape": [-1, 1, 8, 8]}
    >>> feeds, rows = check_tensors([entry], {"image": np.zeros((2, 1, 8, 8))})
    >>> feeds["image"].dtype, rows
    (dtype('float32'), 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from prodml.core.errors import InvalidInput

__all__ = ["check_tensors"]


def _reason(exc: Exception) -> str:
    text = str(exc)
    return "nested lists of unequal lengths" if "inhomogeneous" in text else text[:40]


def check_tensors(
    inputs: list[dict[str, Any]], feeds: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], int]:
    """Check request tensors against ``schema.json``'s tensor entries; return the ONNX feeds and rows.

    What a server does for a tensor-input package before it runs the graph: every input present and no
    other, the shape as declared (``-1`` takes any size; axis 0, the batch, the same for all), numbers of
    the declared dtype (float → float32, finite; int64 → whole numbers), values within ``min``/``max``;
    dynamic axes within ``max_shape``; values at most another input's size (``max_size_of``: [input, axis]).

    Raises:
        InvalidInput: naming each input, what was expected (dtype and shape) and what came.
    """
    problems: list[dict[str, str]] = []
    out: dict[str, np.ndarray] = {}
    rows: set[int] = set()
    declared = {e["name"] for e in inputs}
    for extra in sorted(set(feeds) - declared):
        problems.append(
            {"field": extra, "error": f"unknown input; this model takes {', '.join(sorted(declared))}"}
        )
    for entry in inputs:
        name, dims, dtype = entry["name"], entry["shape"], entry["dtype"]
        expected = f"expected {dtype} {dims} (-1: any size)"
        if name not in feeds:
            problems.append({"field": name, "error": f"required input is missing; {expected}"})
            continue
        try:
            given = np.asarray(feeds[name])
            if given.dtype.kind in "bUS":  # numpy would turn True into 1.0 and "7" into 7
                raise ValueError("booleans" if given.dtype.kind == "b" else "text")
            array = given.astype(np.float64) if dtype == "float" else given
            if dtype == "int64":
                with np.errstate(invalid="ignore"):  # NaN or beyond int64: not equal below
                    as_int = array.astype(np.int64)
                if array.dtype.kind not in "iu" and not np.array_equal(as_int, array):
                    raise ValueError("not whole numbers")
                array = as_int
        except (TypeError, ValueError) as exc:
            problems.append({"field": name, "error": f"values are not {dtype} ({_reason(exc)}); {expected}"})
            continue
        if array.ndim != len(dims) or any(
            d != -1 and d != n for d, n in zip(dims, array.shape, strict=False)
        ):
            problems.append({"field": name, "error": f"shape {list(array.shape)} does not fit; {expected}"})
            continue
        limits = entry.get("max_shape") or dims
        if any(d != -1 and n > d for d, n in zip(limits, array.shape, strict=False)):
            problems.append(
                {
                    "field": name,
                    "error": f"shape {list(array.shape)} is too large; at most {limits} (-1: any)",
                }
            )
            continue
        if dtype == "float":
            with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
                array = array.astype(np.float32)
            if not np.isfinite(array).all():
                problems.append(
                    {
                        "field": name,
                        "error": "values must be finite float32 (no NaN, infinity or beyond 3.4e38)",
                    }
                )
                continue
        low, high = entry.get("min"), entry.get("max")
        if (low is not None and (array < low).any()) or (high is not None and (array > high).any()):
            problems.append({"field": name, "error": f"values must lie in [{low}, {high}]"})
            continue
        rows.add(int(array.shape[0]))
        out[name] = array
    for entry in inputs:  # bounds by another input's size: after every shape is known
        name, (other, axis) = entry["name"], entry.get("max_size_of") or (None, 0)
        if name in out and other in out and (out[name] > out[other].shape[axis]).any():
            size = out[other].shape[axis]
            problems.append(
                {"field": name, "error": f"values must be at most {size}, the size of {other}'s axis {axis}"}
            )
    if not problems and len(rows) > 1:
        problems.append(
            {"field": ", ".join(out), "error": f"inputs disagree on the batch size: {sorted(rows)}"}
        )
    if problems:
        first = problems[0]
        raise InvalidInput(f"{first['field']}: {first['error']}", fields=problems)
    return out, rows.pop() if rows else 0
