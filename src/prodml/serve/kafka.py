"""The request/response log on Kafka: JSON messages keyed by request id.

The only module of the server that imports ``confluent_kafka`` (librdkafka). A request costs what the
Parquet log costs it — ``record`` keeps a tuple — and every 0.1 s the server hands what was recorded to
librdkafka's in-memory queue (``produce`` never waits for the broker); librdkafka's own threads batch,
compress and deliver, retrying while the broker is away. Nothing here ever fails a request:

- a full queue (a broker away for long; 64 MiB by default, ``queue.buffering.max.kbytes``) drops log
  messages, counted in ``dropped`` (rows), as the Parquet log does beyond ``max_rows``;
- a message the broker never acknowledged (``message.timeout.ms``) is counted in ``lost``;
- both are exposed at ``/metrics`` and logged.

Message value (JSON), one per request — or several, ``part`` 0 to ``parts`` - 1 under the same key, when
one would pass ``message.max.bytes``::

    {"request_id": "...", "model": "churn", "version": "3", "ts": 1795000000.1, "rows": 2,
     "first_row": 0, "part": 0, "parts": 1,
     "inputs": {"<column>": [value per row], ...}, "prediction": [[...] per row]}

``inputs`` are the validated values the model ran on (numbers as float32, nulls as null), ``prediction``
its last output (class probabilities for classifiers, values for regressors), as in the Parquet log.
Labels sent to ``POST /v2/models/{name}/feedback`` go to ``feedback_topic`` as
``{"request_id": ..., "label": ..., "ts": ...}``, keyed by request id, so a consumer joins them by key.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from prodml.core.errors import ConfigError, MissingDependency
from prodml.core.project import KafkaLog
from prodml.serve.reqlog import Entry, Recorder

__all__ = ["KafkaRequestLog", "messages_of"]

logger = logging.getLogger(__name__)

_QUIET_S = 30.0  # at most one warning of each kind per this many seconds
_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes


def _message(entry: Entry, start: int, stop: int, part: int, parts: int) -> bytes:
    request_id, model, version, variant, ts, (numbers, strings), numeric, text, prediction = entry
    inputs: dict[str, Any] = {}
    if numeric is not None:  # float32 columns, NaN → null
        inputs.update(zip(numbers, np.ascontiguousarray(numeric[start:stop].T), strict=True))
    if text is not None:
        inputs.update(zip(strings, text[start:stop].T.tolist(), strict=True))
    predicted = prediction[start:stop]
    return orjson.dumps(
        {
            "request_id": request_id,
            "model": model,
            "version": version,
            "variant": variant,
            "ts": ts,
            "rows": stop - start,
            "first_row": start,
            "part": part,
            "parts": parts,
            "inputs": inputs,
            "prediction": (
                predicted.tolist() if predicted.dtype == object else np.ascontiguousarray(predicted)
            ),
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def messages_of(entry: Entry, max_bytes: int = _MAX_BYTES) -> list[tuple[int, bytes]]:
    """One recorded request as (rows, message value) pairs: one, or as many row slices as keep each
    under ``max_bytes`` (a row that alone passes it still makes a message, which the producer refuses)."""
    rows = len(entry[-1])
    whole = _message(entry, 0, rows, 0, 1)
    if len(whole) <= max_bytes or rows == 1:
        return [(rows, whole)]
    parts = min(rows, math.ceil(len(whole) / (max_bytes * 0.9)))  # JSON sizes vary a little per row
    while True:
        step = math.ceil(rows / parts)
        parts = math.ceil(rows / step)
        bounds = [(i * step, min(rows, (i + 1) * step)) for i in range(parts)]
        out = [
            (stop - start, _message(entry, start, stop, i, parts)) for i, (start, stop) in enumerate(bounds)
        ]
        if parts == rows or max(len(value) for _, value in out) <= max_bytes:
            return out
        parts = min(rows, parts * 2)


class KafkaRequestLog(Recorder):
    """The request log as messages on ``spec.topic`` (see the module's docstring).

    Raises:
        ConfigError: librdkafka refuses the settings (an unknown or malformed ``config`` entry).
        MissingDependency: ``confluent-kafka`` is not installed (``pip install 'prodml[kafka]'``).
    """

    def __init__(self, spec: KafkaLog, *, max_rows: int = 50_000) -> None:
        super().__init__(max_rows=max_rows)
        try:
            from confluent_kafka import KafkaException, Producer
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise MissingDependency("confluent-kafka", "kafka") from exc
        self._kafka_exception = KafkaException
        self.topic, self.feedback_topic = spec.topic, spec.feedback_topic
        self.lost = 0  # messages the broker never acknowledged
        self._entries: list[Entry] = []  # recorded, not yet queued for Kafka
        self._waiting = 0  # rows in _entries
        self._warned: dict[str, float] = {}
        settings: dict[str, Any] = {
            "bootstrap.servers": spec.bootstrap_servers,
            "client.id": f"prodml-serve-{os.getpid()}",
            "linger.ms": 20,  # batch 20 ms of requests per partition
            "compression.type": "lz4",
            # what waits while the broker is away, per worker (librdkafka's default is 1 GiB)
            "queue.buffering.max.kbytes": 65_536,
            # acks=all (librdkafka's default) and retries until message.timeout.ms; not idempotent: a
            # broker that comes back without its state (a new cluster) would stall an idempotent
            # producer for good. A retry may write a message twice: consumers key by request id.
            **spec.config,
            "error_cb": self._error,
            "on_delivery": self._delivered,
        }
        self._max_bytes = int(settings.get("message.max.bytes", _MAX_BYTES))
        try:
            self._producer = Producer(settings, logger=logger)
        except (KafkaException, ValueError, TypeError) as exc:
            raise ConfigError(
                f"serve.request_log.kafka: librdkafka refuses the settings: {exc}",
                hint="see librdkafka's CONFIGURATION.md for the producer properties",
            ) from None

    def _keep(self, entry: Entry) -> None:
        """Hold the request until the next ``absorb`` (a tuple of references, about a microsecond)."""
        self._entries.append(entry)
        self._waiting += len(entry[-1])

    @property
    def pending(self) -> int:
        """Rows recorded and not yet queued for Kafka."""
        return self._waiting

    def absorb(self, limit: int = 64) -> bool:
        """Queue up to ``limit`` recorded requests (and the labels) for delivery; True while more wait."""
        taken = self._entries[:limit]
        del self._entries[:limit]
        self._waiting -= sum(len(entry[-1]) for entry in taken)
        more = bool(self._entries)
        for entry in taken:
            parts = messages_of(entry, self._max_bytes)
            for i, (_, value) in enumerate(parts):
                if not self._send(self.topic, entry[0], value):
                    self.dropped += sum(rows for rows, _ in parts[i:])  # this part and those not sent
                    break
        for label in self._take_feedback():
            self._send(self.feedback_topic, label["request_id"], orjson.dumps(label))
        self._producer.poll(0)  # serves delivery reports, errors and librdkafka's logs
        return more

    def _send(self, topic: str, key: str, value: bytes) -> bool:
        try:
            self._producer.produce(topic, value, key.encode())
        except BufferError:  # librdkafka's queue is full: the broker has been away for a while
            self._warn("full", "the Kafka queue of the request log is full; dropping log messages")
            return False
        except self._kafka_exception as exc:  # e.g. a single row over message.max.bytes
            self._warn("refused", f"the request log could not queue a message for Kafka: {exc}")
            return False
        return True

    async def flush_async(self) -> list[Path]:
        await self.absorb_async()
        return []

    def flush(self, timeout_s: float = 5.0) -> list[Path]:
        """Queue everything and wait up to ``timeout_s`` for the broker to acknowledge it (shutdown)."""
        self.absorb(len(self._entries))
        left = self._producer.flush(timeout_s)
        if left:
            self.lost += left
            logger.error("%d request log message(s) were not delivered to Kafka before shutdown", left)
        return []

    def _delivered(self, error: Any, message: Any) -> None:  # librdkafka's delivery report, in poll()
        if error is not None:
            self.lost += 1
            self._warn("lost", f"a request log message was not delivered to Kafka: {error}")

    def _error(self, error: Any) -> None:  # librdkafka's client-level errors, in poll()
        self._warn("broker", f"Kafka (request log): {error}")

    def _warn(self, kind: str, text: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(kind, -math.inf) >= _QUIET_S:
            self._warned[kind] = now
            logger.warning("%s (lost so far: %d messages; dropped: %d rows)", text, self.lost, self.dropped)
