"""The training ranges of a model's inputs, as ``schema.json`` records them, checked on every request.

A number below the input's ``min`` or above its ``max``, or a date (``format: date-time``) before its
``earliest`` or after its ``latest`` day, is *out of range*: the model never saw such a value, so its
answer is an extrapolation. The server does not score it silently as if it were normal
(``serve.out_of_range``):

- ``flag`` (default): scored, counted per input in ``/metrics`` (``prodml_out_of_range_values``) and
  named in the response: the ``X-Prodml-Out-Of-Range`` header (every HTTP route) and the OIP response
  parameter ``out_of_range`` (REST and gRPC), both ``input=count`` pairs (see :func:`flag_text`);
- ``reject``: refused with the other problems of the request (400 / INVALID_ARGUMENT), per input.

Nulls are never out of range. The check runs on the validator's float32 matrix (the bounds are cast to
float32 too, so a training value sent back is in range): a few microseconds per request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np

from prodml.core.project import ISO_DATE

__all__ = ["Ranges", "flag_text"]

_DATE = re.compile(ISO_DATE)


def _day(text: Any) -> tuple[int, int, int] | None:
    found = _DATE.fullmatch(text) if isinstance(text, str) else None
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


class Ranges:
    """One model's input ranges, aligned with the validator's two matrices.

    Args:
        schema: the package's ``schema.json``.
        numeric: the numeric matrix's columns, in order.
        strings: the string matrix's columns, in order.
    """

    def __init__(self, schema: Mapping[str, Any], numeric: Sequence[str], strings: Sequence[str]) -> None:
        spec = {c["name"]: c for c in schema["inputs"]}

        def bound(name: str, key: str, default: float) -> float:
            value = spec[name].get(key)
            return default if value is None else float(value)

        self._numeric = list(numeric)
        self._lo = np.array([bound(n, "min", -np.inf) for n in numeric], dtype=np.float32)
        self._hi = np.array([bound(n, "max", np.inf) for n in numeric], dtype=np.float32)
        self._check_numbers = bool(np.isfinite(self._lo).any() or np.isfinite(self._hi).any())
        self._dates = [
            (j, name, _day(spec[name].get("earliest")), _day(spec[name].get("latest")))
            for j, name in enumerate(strings)
            if spec[name].get("format") == "date-time"
        ]
        self._text = {n: f"[{lo:g}, {hi:g}]" for n, lo, hi in zip(numeric, self._lo, self._hi, strict=True)}
        for _, name, *_bounds in self._dates:
            self._text[name] = f"[{spec[name].get('earliest')}, {spec[name].get('latest')}]"

    def outside(self, feeds: Mapping[str, np.ndarray], numbers: str, strings: str) -> dict[str, int]:
        """How many values of each input lie outside its training range (inputs with none left out).

        Args:
            feeds: the validator's matrices (a matrix that is absent is not checked).
            numbers: the numeric matrix's key; ``strings``: the string matrix's key.
        """
        counts: dict[str, int] = {}
        matrix = feeds.get(numbers)
        if self._check_numbers and matrix is not None:
            bad = (matrix < self._lo) | (matrix > self._hi)
            if bad.any():
                per_input = bad.sum(axis=0)
                counts.update({self._numeric[j]: int(per_input[j]) for j in np.flatnonzero(per_input)})
        text = feeds.get(strings)
        if self._dates and text is not None:
            for j, name, first, last in self._dates:
                days = [d for d in map(_day, text[:, j].tolist()) if d is not None]
                n = sum((first is not None and d < first) or (last is not None and d > last) for d in days)
                if n:
                    counts[name] = n
        return counts

    def describe(self, name: str) -> str:
        """The training range of ``name``, for messages: ``[18, 90]``, ``[2024-01-01, 2024-06-30]``."""
        return self._text.get(name, "(unknown)")


def flag_text(counts: Mapping[str, int]) -> str:
    """``input=count`` pairs joined by ``, `` (names percent-encoded, so any column name fits a header)."""
    return ", ".join(f"{quote(name, safe='')}={n}" for name, n in counts.items())
