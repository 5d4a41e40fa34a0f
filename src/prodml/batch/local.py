"""The embedded engine: record batches streamed from pyarrow, scored on every core, written in order.

The main thread reads batches (pyarrow decodes on its own threads) and writes results; ``workers``
threads each validate and score one batch at a time with the server's Validator and Runtime. ONNX Runtime
releases the GIL while it runs, so one thread's model call overlaps another's validation. At most
``2 × workers`` batches are in flight, so memory holds a few batches whatever the input's size.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from prodml.batch.commit import REJECTS, Staging
from prodml.batch.outputs import PartWriter
from prodml.batch.plan import Outcome, Plan
from prodml.batch.rejects import RejectReport
from prodml.batch.scorer import Scored, Scorer

__all__ = ["run_local"]

logger = logging.getLogger(__name__)


def run_local(plan: Plan, staging: Staging) -> Outcome:
    """Score ``plan``'s input into ``staging`` (not committed here)."""
    scorer = Scorer(
        plan.model.package,
        version=plan.model.version,
        id_column=plan.id_column,
        carry=plan.carry,
        max_rows=plan.batch_rows,
        unknown_category=plan.unknown_category,
    )
    schema = plan.input.schema
    out = PartWriter(
        staging.fs,
        staging.tmp,
        plan.output_format,
        scorer.output_schema(schema),
        partition_by=plan.partition_by,
    )
    bad: PartWriter | None = None
    report = RejectReport()
    total = plan.input.count_rows()
    rows = scored = 0
    where = f"scoring {plan.input.path}"
    pending: deque[Future[Scored]] = deque()

    def drain(result: Scored) -> None:
        nonlocal rows, scored, bad
        rows += result.rows
        if result.output is not None:
            out.write(result.output)
            scored += result.output.num_rows
        if result.rejects is not None:
            report.add(result.rejects)
            if total is not None:
                report.check(total, plan.max_reject_rate, where=where, final=False)
            if bad is None:
                bad = PartWriter(
                    staging.fs, staging.path(REJECTS), plan.output_format, scorer.rejects_schema(schema)
                )
            bad.write(result.rejects)
        plan.on_progress(result.rows)

    try:
        with ThreadPoolExecutor(plan.workers, thread_name_prefix="prodml-batch") as pool:
            try:
                first = 0
                for batch in plan.input.batches(scorer.columns, plan.batch_rows):
                    pending.append(
                        pool.submit(scorer.score, batch, first_row=first, scored_at=plan.scored_at)
                    )
                    first += batch.num_rows
                    while len(pending) >= 2 * plan.workers:
                        drain(pending.popleft().result())
                while pending:
                    drain(pending.popleft().result())
            finally:
                for future in pending:
                    future.cancel()
        report.check(rows, plan.max_reject_rate, where=where)
        files = out.close()
        reject_files = bad.close() if bad is not None else {}
    except BaseException:
        out.abort()
        if bad is not None:
            bad.abort()
        raise
    return Outcome(rows, scored, report, files, {f"{REJECTS}/{k}": v for k, v in reject_files.items()})
