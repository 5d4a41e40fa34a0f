"""What an engine is given (:class:`Plan`) and what it gives back (:class:`Outcome`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from prodml.batch.inputs import Input
from prodml.batch.model import Model
from prodml.batch.rejects import RejectReport

__all__ = ["Outcome", "Plan"]


@dataclass
class Plan:
    """One scoring job, resolved: the input, the model, where and how to write.

    ``staging``: the temporary directory (on ``Input``'s or the output's filesystem) to write into;
    ``scored_at``: the time written on every row (pin it for byte-identical reruns).
    """

    input: Input
    model: Model
    output_format: str
    id_column: str | None
    partition_by: str | None
    max_reject_rate: float
    batch_rows: int
    scored_at: datetime
    workers: int
    unknown_category: str = "reject"
    carry: tuple[str, ...] = ()  # input columns copied to the output (an input column to partition by)
    on_progress: Callable[[int], None] = field(default=lambda rows: None)


@dataclass
class Outcome:
    """Counts and files of a finished engine run (files: relative path → rows)."""

    rows: int
    scored: int
    rejects: RejectReport
    files: dict[str, int]
    reject_files: dict[str, int]
