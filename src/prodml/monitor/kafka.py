"""The server's request log read back from Kafka (``serve.request_log.kafka``), for ``prodml monitor``.

The only module of the monitor that imports ``confluent_kafka``. It reads each topic from its beginning
to the end offsets of the moment it starts (a snapshot: what arrives meanwhile waits for the next run),
with no consumer group commits, so reading never moves another consumer's position. Messages are those
:mod:`prodml.serve.kafka` writes: one per request (or its ``part``\\ s), columns of ``inputs`` and one
``prediction`` per row; feedback labels come from the feedback topic, the newest per request id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa

from prodml.core.errors import ConfigError, DataError, MissingDependency, SourceNotFound, Unavailable
from prodml.core.project import KafkaLog

__all__ = ["read_request_log"]

_TIMEOUT_S = 10.0


def _messages(spec: KafkaLog, topic: str) -> Iterator[dict[str, Any]]:
    """Every message of ``topic`` up to its end offsets now, decoded (malformed ones are skipped)."""
    try:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
    except ImportError as exc:
        raise MissingDependency("confluent_kafka", "kafka") from exc
    settings = {
        **{k: v for k, v in spec.config.items() if not k.startswith(("compression", "linger", "acks"))},
        "bootstrap.servers": spec.bootstrap_servers,
        "group.id": f"prodml-monitor-{uuid.uuid4().hex[:12]}",  # reads only: nothing is committed
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    try:
        consumer = Consumer(settings)
    except KafkaException as exc:
        raise ConfigError(
            f"serve.request_log.kafka.config: {exc}", hint="check the librdkafka settings"
        ) from exc
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=_TIMEOUT_S)
        except KafkaException as exc:
            raise Unavailable(
                f"Kafka at {spec.bootstrap_servers} did not answer: {exc}",
                hint="check serve.request_log.kafka.bootstrap_servers and that the broker is up",
            ) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise SourceNotFound(
                f"no topic {topic!r} on {spec.bootstrap_servers}",
                hint="serve with serve.request_log.kafka set and send traffic, or name --source",
            )
        ends: dict[int, int] = {}
        for partition in found.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=_TIMEOUT_S)
            if high > low:
                ends[partition] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        left = dict(ends)
        while left:
            message = consumer.poll(_TIMEOUT_S)
            if message is None:
                raise Unavailable(
                    f"Kafka topic {topic!r} stopped delivering before its end offsets",
                    hint="check the broker; rerun the command",
                )
            error = message.error()
            if error is not None:
                if error.code() == -191:  # _PARTITION_EOF, when the client reports it
                    continue
                raise Unavailable(f"reading {topic!r}: {error}", hint="check the broker")
            partition, offset = message.partition() or 0, message.offset() or 0
            if offset + 1 >= left.get(partition, 0):
                left.pop(partition, None)
            if partition not in ends or offset >= ends[partition]:
                continue
            try:
                value = orjson.loads(message.value() or b"")
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value
    finally:
        consumer.close()


def read_request_log(spec: KafkaLog) -> tuple[pa.Table, dict[str, Any]]:
    """The logged rows (``request_id``, ``model``, ``version``, ``variant``, ``ts``, ``row``, every input,
    ``prediction``) and the newest label per request id from the feedback topic."""
    columns: dict[str, list[Any]] = {}
    meta: dict[str, list[Any]] = {k: [] for k in ("request_id", "model", "version", "variant", "ts", "row")}
    predictions: list[Any] = []
    n = 0
    for message in _messages(spec, spec.topic):
        inputs, predicted = message.get("inputs"), message.get("prediction")
        rows = message.get("rows")
        if not isinstance(inputs, dict) or not isinstance(predicted, list) or not isinstance(rows, int):
            continue
        if len(predicted) != rows or any(not isinstance(v, list) or len(v) != rows for v in inputs.values()):
            continue
        for name, values in inputs.items():
            columns.setdefault(name, [None] * n).extend(values)
        for name, values in columns.items():
            if name not in inputs:
                values.extend([None] * rows)
        first = int(message.get("first_row") or 0)
        for key in ("request_id", "model", "version"):
            meta[key].extend([message.get(key)] * rows)
        meta["variant"].extend([message.get("variant") or "primary"] * rows)
        meta["ts"].extend([message.get("ts")] * rows)
        meta["row"].extend(range(first, first + rows))
        predictions.extend(predicted)
        n += rows
    if not n:
        raise SourceNotFound(
            f"no request log messages on Kafka topic {spec.topic!r}",
            hint="send traffic to a server that logs to Kafka, or name --source",
        )
    try:
        table = pa.table({**meta, **columns, "prediction": predictions})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"the messages on {spec.topic!r} do not form one table: {exc}") from exc
    labels: dict[str, Any] = {}
    newest: dict[str, float] = {}
    try:
        for message in _messages(spec, spec.feedback_topic):
            rid, ts = message.get("request_id"), message.get("ts") or 0.0
            if isinstance(rid, str) and "label" in message and ts >= newest.get(rid, float("-inf")):
                labels[rid], newest[rid] = message["label"], ts
    except SourceNotFound:  # no feedback was ever sent
        pass
    return table, labels
