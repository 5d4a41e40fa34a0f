"""Rejected rows: counted per column with sample ids and a sample reason; the reject-rate limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from prodml.core.errors import ContractViolation

__all__ = ["RejectReport", "TooManyRejects"]

SAMPLES = 5


class TooManyRejects(ContractViolation):
    """More rows than the job allows broke the model's input schema; nothing was written."""


@dataclass
class RejectReport:
    """Rejects by column: ``{column: {"rows": n, "sample_ids": [...], "sample_reason": "..."}}``."""

    rows: int = 0
    by_column: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, rejects: pa.RecordBatch) -> None:
        """Count one batch of rejects (id, column, reason)."""
        self.rows += rejects.num_rows
        ids, columns, reasons = (rejects.column(i).to_pylist() for i in range(3))
        for row_id, column, reason in zip(ids, columns, reasons, strict=True):
            entry = self.by_column.setdefault(column, {"rows": 0, "sample_ids": [], "sample_reason": reason})
            entry["rows"] += 1
            if len(entry["sample_ids"]) < SAMPLES:
                entry["sample_ids"].append(row_id)

    def check(self, rows: int, limit: float, *, where: str, final: bool = True) -> None:
        """Raise :class:`TooManyRejects` when more than ``limit`` (a fraction) of ``rows`` were rejected.

        ``final=False``: ``rows`` is the whole input's count, known before its end (a partial check)."""
        if not rows or self.rows <= limit * rows:
            return
        worst = sorted(self.by_column.items(), key=lambda kv: -kv[1]["rows"])[:3]
        detail = "; ".join(
            f"{col}: {e['rows']} row(s), e.g. ids {e['sample_ids'][:3]} — {e['sample_reason']}"
            for col, e in worst
        )
        counted = ("" if final else "at least ") + f"{self.rows} of {rows} rows"
        raise TooManyRejects(
            f"{where}: {counted} ({self.rows / rows:.2%}) break the model's input schema, above the "
            f"limit of {limit:.2%}; nothing was written. {detail}",
            hint="fix the input, or raise --max-reject-rate if these rows may be dropped",
        )

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "by_column": self.by_column}
