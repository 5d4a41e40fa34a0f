"""The Kafka transport: the only module of ``prodml.stream`` that imports ``confluent_kafka``.

:class:`KafkaClient` holds one consumer (in the worker's consumer group, manual commits, offsets never
stored automatically) and one producer (outputs and dead letters), and translates librdkafka's errors into
prodml's. The worker sees messages through the small :class:`Message` protocol, which confluent-kafka's
own message objects satisfy (no copy per message).

librdkafka reconnects by itself; what it reports goes to ``events``: a broker that went away
(``_ALL_BROKERS_DOWN``), a delivery that failed, a fatal error. The worker reads them and decides (back
off, rewind to the last commit). Any Kafka-protocol broker works; nothing here knows which one it is.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from prodml.core.errors import ConfigError, MissingDependency, Unavailable

__all__ = ["KafkaClient", "Message", "Offsets"]

logger = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], int]  # (topic, partition) → the next offset to read (what Kafka commits)
Headers = list[tuple[str, bytes]]
_QUIET_S = 30.0  # one warning of each kind per this many seconds


class Message(Protocol):
    """A consumed message (``confluent_kafka.Message`` is one)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> Any: ...
    def error(self) -> Any: ...


def _import() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDependency("confluent-kafka", "kafka") from exc
    return confluent_kafka


class KafkaClient:
    """One consumer and one producer for a worker.

    Args:
        brokers: ``bootstrap.servers``.
        group: the consumer group (workers of one group share the input partitions).
        topic: the input topic.
        config: more librdkafka settings for both clients (``security.protocol``, ``sasl.*``,
            ``session.timeout.ms``…); they override prodml's defaults.
        transactional_id: turns on exactly-once mode (a transactional producer, ``read_committed`` input).
        on_revoke: called with the partitions taken away in a rebalance, before they go (commit there).
        on_assign: called with the partitions given in a rebalance.

    Raises:
        ConfigError: librdkafka refuses a setting.
        MissingDependency: confluent-kafka is not installed.
    """

    def __init__(
        self,
        brokers: str,
        group: str,
        topic: str,
        *,
        config: Mapping[str, Any] | None = None,
        transactional_id: str | None = None,
        on_revoke: Callable[[list[tuple[str, int]]], None] | None = None,
        on_assign: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> None:
        self._ck = _import()
        self.topic = topic
        self.group = group
        self.transactional = transactional_id is not None
        self.events: list[tuple[str, str]] = []  # (kind, text) for the worker: "down", "fatal", "error"
        self.lag: dict[int, int] = {}  # input partition → consumer lag, from librdkafka's statistics
        self._on_revoke = on_revoke or (lambda _: None)
        self._on_assign = on_assign or (lambda _: None)
        self._warned: dict[str, float] = {}
        extra = dict(config or {})
        common = {"bootstrap.servers": brokers, "error_cb": self._error}
        self._consumer_settings: dict[str, Any] = {
            **common,
            "group.id": group,
            "client.id": f"prodml-stream-{os.getpid()}",
            "enable.auto.commit": False,  # offsets are committed once their outputs are acknowledged
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "fetch.wait.max.ms": 20,
            "statistics.interval.ms": 5_000,
            "stats_cb": self._stats,
            **({"isolation.level": "read_committed"} if self.transactional else {}),
            **extra,
        }
        producer_settings: dict[str, Any] = {
            **common,
            "client.id": f"prodml-stream-out-{os.getpid()}",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": 60_000,
            **({"transactional.id": transactional_id} if transactional_id else {}),
        }
        # a consumer-only setting given to the producer makes librdkafka warn; pass each its own kind
        producer_settings.update({k: v for k, v in extra.items() if not _consumer_only(k)})
        try:
            self.producer = self._ck.Producer(producer_settings, logger=logger)
        except (self._ck.KafkaException, ValueError, TypeError) as exc:
            raise ConfigError(f"librdkafka refuses the producer settings: {exc}", hint=_HINT) from None
        self.consumer: Any = None
        self.open_consumer()
        if self.transactional:
            try:
                self.producer.init_transactions(30)
            except self._ck.KafkaException as exc:
                raise Unavailable(
                    f"the broker at {brokers} did not start a transaction for {transactional_id}: {exc}",
                    hint="exactly-once needs a broker with transactions; run without --exactly-once",
                ) from None

    # --- the consumer -----------------------------------------------------------------------------

    def open_consumer(self) -> None:
        """(Re)create the consumer and subscribe: it resumes from the group's committed offsets."""
        try:
            self.consumer = self._ck.Consumer(self._consumer_settings, logger=logger)
        except (self._ck.KafkaException, ValueError, TypeError) as exc:
            raise ConfigError(f"librdkafka refuses the consumer settings: {exc}", hint=_HINT) from None
        self.consumer.subscribe(
            [self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def close_consumer(self) -> None:
        """Leave the group without committing (what is not committed is read again by whoever gets it)."""
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            try:
                consumer.close()
            except self._ck.KafkaException as exc:
                logger.warning("closing the Kafka consumer: %s", exc)

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        """What has arrived, up to ``max_messages``, waiting at most ``timeout_s`` for the first message but
        never for more: a batch is what came in while the last one was scored (large under load, small
        and quick when traffic is light). Rebalance callbacks run in here. Errors librdkafka reports
        in-band are logged and skipped (it recovers on its own)."""
        try:
            messages = self.consumer.consume(max_messages, 0)
            if not messages:
                messages = self.consumer.consume(1, timeout_s)
                if messages and max_messages > 1:
                    messages += self.consumer.consume(max_messages - 1, 0)
        except self._ck.KafkaException as exc:
            self._warn("consume", f"Kafka consume failed: {exc}")
            return []
        if any(m.error() is not None for m in messages):
            for m in messages:
                if m.error() is not None:
                    self._warn(f"in-band {m.error().code()}", f"Kafka: {m.error()}")
            messages = [m for m in messages if m.error() is None]
        return messages  # type: ignore[no-any-return]

    def commit(self, offsets: Offsets, *, sync: bool) -> bool:
        """Commit ``offsets`` (next offset to read per partition); False when the broker refused."""
        if not offsets or self.consumer is None:
            return True
        tps = [self._ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self.consumer.commit(offsets=tps, asynchronous=not sync)
        except self._ck.KafkaException as exc:
            self._warn("commit", f"Kafka commit failed (the work is read again): {exc}")
            return False
        return True

    def assignment(self) -> list[tuple[str, int]]:
        if self.consumer is None:
            return []
        return [(tp.topic, tp.partition) for tp in self.consumer.assignment()]

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        self._on_assign([(tp.topic, tp.partition) for tp in partitions])

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        self._on_revoke([(tp.topic, tp.partition) for tp in partitions])

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        # lost, not revoked: another member may own them already; committing now could move its offsets
        self.events.append(("lost", f"partitions lost: {[tp.partition for tp in partitions]}"))

    # --- the producer -----------------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        on_ack: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """Queue one message; waits (serving delivery reports) while librdkafka's queue is full."""
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=on_ack)
                return
            except BufferError:  # the broker is slow or away: wait for room, so consuming waits too
                self._warn("full", "the Kafka producer queue is full; waiting for the broker")
                self.producer.poll(0.1)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports and client events."""
        self.producer.poll(timeout_s)

    def flush(self, timeout_s: float) -> int:
        """Wait for every queued message to be acknowledged; return how many are still waiting."""
        return int(self.producer.flush(timeout_s))

    def broker_up(self, timeout_s: float = 1.0) -> bool:
        """Whether a broker answers a metadata request within ``timeout_s``."""
        try:
            self.producer.list_topics(timeout=timeout_s)
        except self._ck.KafkaException:
            return False
        return True

    # --- exactly-once -----------------------------------------------------------------------------

    def begin(self) -> None:
        self._transaction(self.producer.begin_transaction)

    def commit_transaction(self, offsets: Offsets, timeout_s: float = 30.0) -> None:
        """Commit the outputs produced since :meth:`begin` together with the input ``offsets``.

        Raises:
            Unavailable: the transaction was aborted (its outputs are invisible to ``read_committed``
                readers; the worker reads the input again from the last commit).
        """
        tps = [self._ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()]

        def commit() -> None:
            if tps:
                meta = self.consumer.consumer_group_metadata()
                self.producer.send_offsets_to_transaction(tps, meta, timeout_s)
            self.producer.commit_transaction(timeout_s)

        try:
            self._transaction(commit)
        except Unavailable:
            self.abort()
            raise

    def abort(self) -> None:
        try:
            self.producer.abort_transaction(30)
        except self._ck.KafkaException as exc:
            self._warn("abort", f"Kafka: aborting the transaction failed: {exc}")

    def _transaction(self, call: Callable[[], Any]) -> None:
        try:
            call()
        except self._ck.KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and getattr(error, "fatal", lambda: False)():
                self.events.append(("fatal", str(error)))
            raise Unavailable(f"Kafka transaction failed: {exc}", hint="the batch is read again") from None

    # --- events -----------------------------------------------------------------------------------

    def _error(self, error: Any) -> None:  # librdkafka's client-level errors, from poll/consume
        code = error.code()
        if code == self._ck.KafkaError._ALL_BROKERS_DOWN:
            self.events.append(("down", str(error)))
        elif getattr(error, "fatal", lambda: False)():
            self.events.append(("fatal", str(error)))
        else:
            self._warn(f"error {code}", f"Kafka: {error}")

    def _stats(self, text: str) -> None:
        try:
            stats = orjson.loads(text)
            partitions = stats.get("topics", {}).get(self.topic, {}).get("partitions", {})
            self.lag = {
                int(p): int(v["consumer_lag"])
                for p, v in partitions.items()
                if int(p) >= 0 and v.get("consumer_lag", -1) >= 0
            }
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            pass

    def _warn(self, kind: str, text: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(kind, -1e9) >= _QUIET_S:
            self._warned[kind] = now
            logger.warning("%s", text)

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush the producer (return what stayed undelivered) and leave the group."""
        left = self.flush(timeout_s)
        self.close_consumer()
        return left


_HINT = "see librdkafka's CONFIGURATION.md; --kafka-config KEY=VALUE passes settings through"
_CONSUMER_ONLY_PREFIXES = (
    "group.",
    "session.timeout",
    "heartbeat.",
    "auto.offset",
    "enable.auto",
    "fetch.",
    "max.poll",
    "isolation.",
    "partition.assignment",
    "queued.",
    "auto.commit",
    "check.crcs",
    "statistics.",
)


def _consumer_only(key: str) -> bool:
    return key.startswith(_CONSUMER_ONLY_PREFIXES)


def parse_config(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (CLI) → settings.

    Raises:
        ConfigError: an entry without ``=``.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--kafka-config {pair!r}: expected KEY=VALUE",
                hint="e.g. --kafka-config session.timeout.ms=6000",
            )
        out[key.strip()] = value.strip()
    return out
