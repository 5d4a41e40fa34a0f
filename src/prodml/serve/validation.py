"""Input validation against ``schema.json``: columns in, ONNX feeds out, or field-level errors.

Every check is vectorised per column (numpy), so a 100-row request costs one array conversion per column,
not a Python loop over values. A request that breaks the schema raises :class:`InvalidInput` whose
``fields`` list says, per column, what is wrong — transports answer 400 / INVALID_ARGUMENT with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from prodml.core.errors import InvalidInput

__all__ = ["NUMBERS", "STRINGS", "FieldError", "RequestError", "Validator"]

FieldError = dict[str, str]
NUMBERS = "__prodml_numbers"  # the runtime's two inputs: numeric columns, then string columns
STRINGS = "__prodml_strings"
_NUMBER_TYPES = frozenset({int, float, type(None)})


class RequestError(InvalidInput):
    """A request that breaks the input schema; ``fields`` holds one ``{field, error}`` per problem."""

    def __init__(self, message: str, fields: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.fields = list(fields)


@dataclass(frozen=True)
class _Column:
    name: str
    dtype: Literal["float", "string"]
    nullable: bool
    categories: frozenset[str] | None


class Validator:
    """Checks columnar requests against a model's input schema.

    Args:
        schema: the package's ``schema.json``.
        unknown_category: ``reject`` (400) or ``map`` (pass through; the graph encodes it as all-zeros).
        max_rows: the largest batch accepted.
    """

    def __init__(
        self, schema: Mapping[str, Any], *, unknown_category: str = "reject", max_rows: int = 10_000
    ) -> None:
        self.columns = [
            _Column(
                c["name"],
                c["dtype"],
                bool(c.get("nullable", False)),
                frozenset(c["categories"]) if c.get("categories") is not None else None,
            )
            for c in schema["inputs"]
        ]
        self.names = [c.name for c in self.columns]
        self._known = frozenset(self.names)
        self.reject_unknown = unknown_category == "reject"
        self._numeric = [c for c in self.columns if c.dtype == "float"]
        self._strings = [c for c in self.columns if c.dtype != "float"]
        self._nullable = np.array([c.nullable for c in self._numeric], dtype=bool)
        self.max_rows = max_rows
        self.numeric_names = [c.name for c in self._numeric]
        self.string_names = [c.name for c in self._strings]

    def feeds(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Validate ``columns`` (name → values, all the same length); return the runtime's feeds — the
        numeric columns as one float32 matrix ``NUMBERS`` (rows × k) and the string columns as one object
        matrix ``STRINGS`` (rows × m), in schema order — and the row count.

        Raises:
            RequestError: with one field error per broken column.
        """
        errors: list[FieldError] = []
        if columns.keys() != self._known:
            extra = sorted(set(columns) - self._known)
            errors += [{"field": n, "error": "unknown column; the model does not take it"} for n in extra]
            missing = [n for n in self.names if n not in columns]
            errors += [{"field": n, "error": "required column is missing"} for n in missing]
            raise RequestError(f"{len(errors)} column problem(s)", errors)
        lengths = {len(columns[n]) for n in self.names}
        if len(lengths) != 1:
            raise RequestError(
                "columns have different lengths",
                [{"field": n, "error": f"{len(columns[n])} values"} for n in self.names],
            )
        rows = lengths.pop()
        if rows == 0:
            raise RequestError("the request has no rows", [{"field": "inputs", "error": "0 rows"}])
        if rows > self.max_rows:
            raise RequestError(
                f"{rows} rows exceed the limit of {self.max_rows}",
                [{"field": "inputs", "error": f"at most {self.max_rows} rows per request"}],
            )
        numbers = self._numbers_at_once(columns)
        parts: dict[str, np.ndarray] = {}
        for col in self._strings if numbers is not None else self.columns:
            try:
                parts[col.name] = (self._number if col.dtype == "float" else self._string)(
                    col, columns[col.name]
                )
            except _Bad as bad:
                errors.append({"field": col.name, "error": str(bad)})
        if errors:
            raise RequestError(f"{len(errors)} column(s) break the schema", errors)
        feeds: dict[str, np.ndarray] = {}
        if self._numeric:
            feeds[NUMBERS] = (
                numbers if numbers is not None else np.hstack([parts[n] for n in self.numeric_names])
            )
        if self._strings:
            feeds[STRINGS] = np.hstack([parts[n] for n in self.string_names])
        return feeds, rows

    def _numbers_at_once(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray | None:
        """Every numeric column in one (rows, k) float32 matrix, checked with a few vectorised calls.

        Returns None when anything is off (or unusual), so the per-column path names each problem.
        """
        if not self._numeric:
            return np.empty((0, 0), np.float32)
        values = [columns[c.name] for c in self._numeric]
        if not all(isinstance(v, np.ndarray) and v.dtype.kind in "iuf" for v in values):
            kinds = {type(x) for v in values if not isinstance(v, np.ndarray) for x in v}
            if not kinds <= _NUMBER_TYPES:  # text, booleans, objects: let the slow path say which
                return None
        try:
            matrix = np.array(values, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if matrix.ndim != 2:
            return None
        if not np.isfinite(matrix).all():
            nan = np.isnan(matrix)
            if np.isinf(matrix).any() or (nan.any(axis=1) & ~self._nullable).any():
                return None
        return np.ascontiguousarray(matrix.T, dtype=np.float32)

    @staticmethod
    def _number(col: _Column, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        arr = values if isinstance(values, np.ndarray) else np.asarray(values)
        if arr.dtype == object:  # None mixed with numbers, or worse
            bad = [
                v for v in arr if v is not None and (isinstance(v, bool) or not isinstance(v, int | float))
            ]
            if bad:
                raise _Bad(f"expected numbers, got {type(bad[0]).__name__} {str(bad[0])[:40]!r}")
            arr = np.asarray([np.nan if v is None else v for v in arr], dtype=np.float64)
        elif arr.dtype.kind not in "iuf":
            raise _Bad(f"expected numbers, got {'booleans' if arr.dtype.kind == 'b' else 'text'}")
        out = arr.astype(np.float32).reshape(-1, 1)
        if arr.dtype.kind == "f" or arr.dtype == object:
            if np.isinf(out).any():
                raise _Bad("infinite values are not allowed")
            nan = np.isnan(out)
            if not col.nullable and nan.any():
                raise _Bad(f"{int(nan.sum())} null/NaN value(s); this input is not nullable")
        return out

    def _string(self, col: _Column, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        # plain Python: for the few string columns of a request it beats numpy's per-call overhead
        items = values.tolist() if isinstance(values, np.ndarray) else list(values)
        if None in items:
            nulls = items.count(None)
            if not col.nullable:
                raise _Bad(f"{nulls} null value(s); this input is not nullable")
            items = ["" if v is None else v for v in items]
        if not all(type(v) is str for v in items):
            raise _Bad("expected strings")
        if self.reject_unknown and col.categories is not None:
            unknown = set(items) - col.categories - {""}
            if unknown:
                shown = ", ".join(sorted(map(repr, unknown))[:5])
                raise _Bad(
                    f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {shown}; "
                    f"known: {', '.join(sorted(col.categories)[:10])}"
                )
        arr = np.empty((len(items), 1), dtype=object)
        arr[:, 0] = items
        return arr


class _Bad(ValueError):
    pass
