"""The request log with its feedback labels, wherever the server writes it: the A/B report's input.

The Parquet log under the project's state directory (joined by :func:`prodml.serve.reqlog.join_feedback`),
or the Kafka topics when ``serve.request_log.kafka`` is set (read by :mod:`prodml.monitor.kafka`, the
newest label per request id). Either way one row per logged row, with ``variant``, ``prediction`` and
``label`` (null until feedback arrives).
"""

from __future__ import annotations

import pyarrow as pa

from prodml.core.errors import SourceNotFound
from prodml.core.project import Project

__all__ = ["labelled_log"]


def labelled_log(project: Project) -> pa.Table:
    """Every logged row with its label where one arrived (see the module's docstring).

    Raises:
        SourceNotFound: nothing was logged yet.
        Unavailable: the Kafka broker did not answer.
    """
    kafka = project.serve.request_log.kafka
    if kafka is not None:
        from prodml.monitor.kafka import read_request_log

        table, labels = read_request_log(kafka)
        ids = table.column("request_id").to_pylist()
        return table.append_column("label", pa.array([labels.get(rid) for rid in ids]))
    from prodml.serve.reqlog import join_feedback

    directory = project.state_dir / "requests"
    if not any((directory / "requests").glob("*.parquet")):
        raise SourceNotFound(f"no request log under {directory}", hint="serve with request logging on")
    return join_feedback(directory)
