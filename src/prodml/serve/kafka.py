"""The request/response log on Kafka: one JSON message per request, keyed by its request id.

The only module of the server that imports ``confluent_kafka`` (librdkafka). A request costs what the
Parquet log costs it — ``record`` keeps a tuple — and every 0.1 s the server hands what was recorded to
librdkafka's in-memory queue (``produce`` never waits for the broker); librdkafka's own threads batch,
compress and deliver, retrying while the broker is away. Nothing here ever fails a request:

- a queue that is full (a broker away for long) drops the request's log message, counted in ``dropped``
  (rows), as the Parquet log does beyond ``max_rows``;
- a message the broker never acknowledged (``message.timeout.ms``) is counted in ``lost``;
- both are exposed at ``/metrics`` and logged.

Message value (JSON)::

    {"request_id": "...", "model": "churn", "version": "3", "ts": 1795000000.1, "rows": 2,
     "inputs": {"<column>": [value per row], ...}, "prediction": [[...] per row]}

Labels sent to ``POST /v2/models/{name}/feedback`` go to ``feedback_topic`` as
``{"request_id": ..., "label": ..., "ts": ...}``, keyed by request id, so a consumer joins them by key.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from prodml.core.errors import ConfigError, MissingDependency, Unavailable
from prodml.core.project import KafkaLog
from prodml.serve.reqlog import Entry, Recorder

__all__ = ["KafkaRequestLog", "message_of"]

logger = logging.getLogger(__name__)

_QUIET_S = 30.0  # at most one warning per this many seconds for broker errors and lost messages


def message_of(entry: Entry) -> bytes:
    """One recorded request as the JSON message value: inputs by column, one value per row."""
    request_id, model, version, ts, (numbers, strings), numeric, text, prediction = entry
    inputs: dict[str, Any] = {}
    if numeric is not None:
        inputs.update(zip(numbers, np.ascontiguousarray(numeric.T), strict=True))  # float32, NaN → null
    if text is not None:
        inputs.update(zip(strings, text.T.tolist(), strict=True))
    predicted = prediction.tolist() if prediction.dtype == object else np.ascontiguousarray(prediction)
    return orjson.dumps(
        {
            "request_id": request_id,
            "model": model,
            "version": version,
            "ts": ts,
            "rows": len(prediction),
            "inputs": inputs,
            "prediction": predicted,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


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
        self._warned = 0.0
        settings: dict[str, Any] = {
            "bootstrap.servers": spec.bootstrap_servers,
            "client.id": f"prodml-serve-{os.getpid()}",
            "linger.ms": 20,  # batch 20 ms of requests per partition
            "compression.type": "lz4",
            # acks=all (librdkafka's default) and retries until message.timeout.ms; not idempotent: a
            # broker that comes back without its state (a new cluster) would stall an idempotent
            # producer for good. A retry may write a message twice: consumers key by request id.
            "queue.buffering.max.messages": 100_000,
            **spec.config,
            "error_cb": self._error,
            "on_delivery": self._delivered,
        }
        try:
            self._producer = Producer(settings, logger=logger)
        except (KafkaException, ValueError, TypeError) as exc:
            raise ConfigError(
                f"serve.request_log.kafka: librdkafka refuses the settings: {exc}",
                hint="see librdkafka's CONFIGURATION.md for the producer properties",
            ) from None

    def absorb(self, limit: int = 64) -> bool:
        """Queue up to ``limit`` recorded requests for delivery; True while more wait."""
        taken, more = self._take(limit)
        for entry in taken:
            self._send(self.topic, entry[0], message_of(entry), len(entry[-1]))
        self._producer.poll(0)  # serves delivery reports, errors and librdkafka's logs
        return more

    def _send(self, topic: str, key: str, value: bytes, rows: int) -> bool:
        try:
            self._producer.produce(topic, value, key.encode())
        except BufferError:  # librdkafka's queue is full: the broker has been away for a while
            self.dropped += rows
            self._warn("the Kafka queue of the request log is full; dropping log messages")
            return False
        except self._kafka_exception as exc:  # e.g. a message over message.max.bytes
            self.dropped += rows
            self._warn(f"the request log could not queue a message for Kafka: {exc}")
            return False
        return True

    def feedback(self, request_id: str, label: Any, ts: float | None = None) -> None:
        """Send a label to ``feedback_topic`` at once, keyed by request id.

        Raises:
            Unavailable: librdkafka's queue is full, so the label cannot be taken now (503; retry).
        """
        value = orjson.dumps({"request_id": request_id, "label": float(label), "ts": ts or time.time()})
        if not self._send(self.feedback_topic, request_id, value, 0):
            raise Unavailable("the request log cannot reach Kafka now; the label was not taken")

    async def flush_async(self) -> list[Path]:
        await self.absorb_async()
        self._producer.poll(0)
        return []

    def flush(self, timeout_s: float = 5.0) -> list[Path]:
        """Queue everything and wait up to ``timeout_s`` for the broker to acknowledge it (shutdown)."""
        while self.absorb(1 << 30):
            pass
        left = self._producer.flush(timeout_s)
        if left:
            self.lost += left
            logger.error("%d request log message(s) were not delivered to Kafka before shutdown", left)
        return []

    def _delivered(self, error: Any, message: Any) -> None:  # librdkafka's delivery report, in poll()
        if error is not None:
            self.lost += 1
            self._warn(f"a request log message was not delivered to Kafka: {error}")

    def _error(self, error: Any) -> None:  # librdkafka's client-level errors, in poll()
        self._warn(f"Kafka (request log): {error}")

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._warned >= _QUIET_S:
            self._warned = now
            logger.warning("%s (lost so far: %d messages; dropped: %d rows)", text, self.lost, self.dropped)
