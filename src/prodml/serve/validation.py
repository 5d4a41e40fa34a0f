"""Input validation against ``schema.json``: columns in, ONNX feeds out, or field-level errors.

Columns (name → one value per row) come as Python lists (the JSON forms, CSV) or numpy arrays (OIP
tensors, gRPC, batch scoring). The numeric columns are checked and converted together — one type check
over every value, one float32 matrix — and the few string columns one by one. When a check fails, each
column is examined on its own to say what is wrong: that path runs only for requests that are refused.
A refused request raises :class:`~prodml.core.errors.InvalidInput` whose ``fields`` say, per column, what
is wrong; transports answer 400 / INVALID_ARGUMENT with it.

Example:
    >>> feeds, rows = Validator(schema).feeds({"age": [42.0], "plan": ["pro"]})  # doctest: +SKIP
    >>> feeds[NUMBERS].shape, feeds[STRINGS].shape, rows  # doctest: +SKIP
    ((1, 1), (1, 1), 1)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from prodml.core.errors import InvalidInput
from prodml.serve.ranges import Ranges
from prodml.serve.tensors import TensorInputs, tensor_entries

__all__ = ["NUMBERS", "STRINGS", "FieldError", "RequestError", "Validator", "bad_field", "detailed", "short"]

FieldError = dict[str, str]
RequestError = InvalidInput  # the name transports and workers catch; its ``fields`` list the problems
NUMBERS = "__prodml_numbers"  # the runtime's two inputs: numeric columns, then string columns
STRINGS = "__prodml_strings"
_NUMBER = frozenset({int, float, type(None)})


def short(text: Any, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters: error messages never echo more of the input than that."""
    as_text = str(text)
    return as_text if len(as_text) <= limit else as_text[:limit] + "…"


def bad_field(field: str, error: str) -> InvalidInput:
    """An :class:`InvalidInput` about one field."""
    return InvalidInput(f"{field}: {error}", fields=[{"field": field, "error": error}])


def detailed(exc: InvalidInput | Any) -> str:
    """An error's message with its field errors, for clients that show one string only (OIP's ``error``,
    a gRPC status message): ``2 column(s) break the schema: age: expected numbers…; plan: …``."""
    details = [f"{f['field']}: {f['error']}" for f in exc.fields]
    details = [d for d in details if d not in exc.message]
    return exc.message + (": " + "; ".join(details) if details else "")


@dataclass(frozen=True)
class _Column:
    name: str
    nullable: bool
    categories: frozenset[str] | None
    pattern: re.Pattern[str] | None = None  # a date input's ISO 8601 form


class Validator:
    """Checks columns against a model's input schema and builds the runtime's two matrices.

    Args:
        schema: the package's ``schema.json``.
        unknown_category: ``reject`` (400) or ``map`` (pass through; the graph encodes it as all-zeros).
        max_rows: the largest batch accepted.
        extra_columns: ``reject`` (400) or ``ignore`` columns the model does not take.
        out_of_range: ``flag`` (see :meth:`outside`) or ``reject`` values outside the training ranges
            (:mod:`prodml.serve.ranges`).
    """

    def __init__(
        self,
        schema: Mapping[str, Any],
        *,
        unknown_category: str = "reject",
        max_rows: int = 10_000,
        extra_columns: str = "reject",
        out_of_range: str = "flag",
    ) -> None:
        def column(c: Mapping[str, Any]) -> _Column:
            categories, pattern = c.get("categories"), c.get("pattern")
            return _Column(
                c["name"],
                bool(c.get("nullable")),
                None if categories is None else frozenset(categories),
                re.compile(pattern) if pattern and c.get("format") == "date-time" else None,
            )

        entries = tensor_entries(schema)  # tensors are fed by name, no matrices (prodml.serve.tensors)
        self.tensors = None if entries is None else TensorInputs(entries, max_rows=max_rows)
        columns = schema["inputs"] if entries is None else []
        self._numeric = [column(c) for c in columns if c["dtype"] == "float"]
        self._strings = [column(c) for c in columns if c["dtype"] != "float"]
        self.names = [c["name"] for c in schema["inputs"]]
        self.numeric_names = [c.name for c in self._numeric]
        self.string_names = [c.name for c in self._strings]
        self.layout = (tuple(self.numeric_names), tuple(self.string_names))  # the two matrices' columns
        self.reject_unknown = unknown_category == "reject"
        self.max_rows = max_rows
        self._known = frozenset(self.names)
        self._nullable = np.array([c.nullable for c in self._numeric], dtype=bool)
        self.ignore_extra = extra_columns == "ignore"
        self.reject_out_of_range = out_of_range == "reject"
        self.ranges = Ranges(schema, self.numeric_names, self.string_names)

    def feeds(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Validate ``columns`` (name → values, all the same length); return the runtime's feeds — the
        numeric columns as one float32 matrix ``NUMBERS`` (rows × k), the string columns as one object
        matrix ``STRINGS`` (rows × m), in schema order — and the row count.

        Raises:
            InvalidInput: with one field error per problem: every problem of the request at once (a
                missing column does not hide another's bad values).
        """
        if self.tensors is not None:
            return self.tensors.feeds(columns)
        errors: list[FieldError] = []
        if columns.keys() != self._known:
            if not self.ignore_extra:
                errors += [
                    {"field": short(n), "error": "unknown column; the model does not take it"}
                    for n in sorted(set(columns) - self._known)[:20]
                ]
            errors += [
                {"field": n, "error": "required column is missing"} for n in self.names if n not in columns
            ]
            columns = {n: columns[n] for n in self.names if n in columns}
            if not columns:
                raise InvalidInput(f"{len(errors)} column problem(s)", fields=errors)
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise InvalidInput(
                "columns have different lengths",
                fields=errors + [{"field": n, "error": f"{len(v)} values"} for n, v in columns.items()],
            )
        rows = lengths.pop()
        if rows == 0:
            raise InvalidInput(
                "the request has no rows", fields=[*errors, {"field": "inputs", "error": "0 rows"}]
            )
        if rows > self.max_rows:
            raise InvalidInput(
                f"{rows} rows exceed the limit of {self.max_rows}",
                fields=[*errors, {"field": "inputs", "error": f"at most {self.max_rows} rows per request"}],
            )
        feeds: dict[str, np.ndarray] = {}
        if self._numeric:
            complete = len(columns) == len(self.names) or all(n in columns for n in self.numeric_names)
            numbers = self._numbers([columns[n] for n in self.numeric_names]) if complete else None
            if numbers is None:
                for col in self._numeric:
                    if col.name in columns and (error := self._number_error(col, columns[col.name])):
                        errors.append({"field": col.name, "error": error})
            else:
                feeds[NUMBERS] = numbers
        if self._strings:
            text = feeds[STRINGS] = np.empty((rows, len(self._strings)), dtype=object)
            for j, col in enumerate(self._strings):
                if col.name in columns and (error := self._string(col, columns[col.name], text, j)):
                    errors.append({"field": col.name, "error": error})
        if self.reject_out_of_range:  # the columns that are fine otherwise
            for name, n in self.ranges.outside(feeds, NUMBERS, STRINGS).items():
                where = self.ranges.describe(name)
                errors.append({"field": name, "error": f"{n} value(s) outside the training range {where}"})
        if errors:
            raise InvalidInput(f"{len(errors)} column(s) break the schema", fields=errors)
        return feeds, rows

    def outside(self, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Per input, how many values of valid ``feeds`` lie outside the training range, when they are
        flagged (``out_of_range: flag``); ``{}`` when they are refused, which :meth:`feeds` did."""
        return {} if self.reject_out_of_range else self.ranges.outside(feeds, NUMBERS, STRINGS)

    def _numbers(self, values: list[Any]) -> np.ndarray | None:
        """Every numeric column in one (rows, k) float32 matrix; None when any value is not a number, is
        ±inf or beyond float32, or a null (None, NaN) sits in a column that is not nullable."""
        if not all(isinstance(v, np.ndarray) and v.dtype.kind in "iuf" for v in values):
            values = [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
            if not set(map(type, chain.from_iterable(values))) <= _NUMBER:  # bool is not int here
                return None
        try:
            matrix = np.array(values, dtype=np.float64)
        except (OverflowError, ValueError, TypeError):
            return None
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
            out = np.ascontiguousarray(matrix.T, dtype=np.float32)
        if not np.isfinite(out).all() and (
            np.isinf(out).any() or not (np.isnan(matrix).any(axis=1) <= self._nullable).all()
        ):
            return None
        return out

    @staticmethod
    def _number_error(col: _Column, values: Sequence[Any] | np.ndarray) -> str | None:
        """What is wrong with one numeric column (the refused requests' path)."""
        items = values.tolist() if isinstance(values, np.ndarray) else list(values)
        wrong = [v for v in items if v is not None and type(v) not in (int, float)]
        if wrong:
            kind = "booleans" if type(wrong[0]) is bool else type(wrong[0]).__name__
            return f"expected numbers, got {kind} {short(repr(wrong[0]))}"
        try:
            arr = np.array([np.nan if v is None else v for v in items], dtype=np.float64)
        except OverflowError:
            return "a number is beyond float32's range"
        with np.errstate(over="ignore"):
            out = arr.astype(np.float32)
        if np.isinf(out).any():
            return "infinite values (or beyond float32's range) are not allowed"
        nulls = int(np.isnan(out).sum())
        if nulls and not col.nullable:
            return f"{nulls} null/NaN value(s); this input is not nullable"
        return None

    def _string(
        self, col: _Column, values: Sequence[Any] | np.ndarray, text: np.ndarray, j: int
    ) -> str | None:
        """Check one string column and write it into column ``j`` of ``text``; or say what is wrong."""
        items = values.tolist() if isinstance(values, np.ndarray) else list(values)
        wrong = next((v for v in items if v is not None and type(v) is not str), None)
        if wrong is not None:
            return f"expected strings, got {type(wrong).__name__} {short(repr(wrong))}"
        empty_is_null = col.categories is not None or col.pattern is not None
        nulls = items.count(None) + (items.count("") if empty_is_null else 0)
        if nulls:
            if not col.nullable:
                return f"{nulls} null or empty value(s); this input is not nullable"
            items = ["" if v is None else v for v in items]
        if col.pattern is not None:
            wrong = [v for v in items if v and not col.pattern.fullmatch(v)]
            if wrong:
                return (
                    f"{len(wrong)} value(s) are not ISO 8601 dates (YYYY-MM-DD, optionally THH:MM…): "
                    f"{short(repr(wrong[0]))}"
                )
        if self.reject_unknown and col.categories is not None:
            unknown = set(items) - col.categories - {""}
            if unknown:
                shown = ", ".join(sorted(repr(short(u, 20)) for u in unknown)[:5])
                known = ", ".join(sorted(col.categories)[:10])
                return f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {shown}; known: {known}"
        text[:, j] = items
        return None
