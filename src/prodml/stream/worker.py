"""The stream worker: consume a micro-batch → score it through the data plane → produce → commit.

At-least-once (the default): each batch's results and dead letters are queued for the broker and the
batch is registered in :class:`~prodml.stream.offsets.Pending`; its input offsets are committed once every
message it produced is acknowledged, never before, and before the next batch's results are produced
(the acknowledgements arrive while the next batch is scored). So a crash (even SIGKILL) loses nothing:
the group reads again from the last commit, and what is read twice is at most the one batch in flight,
whose results carry the same key (the request id) both times. On a rebalance the worker waits for the
acknowledgements of what it produced and commits before its partitions go. SIGTERM stops consuming,
waits for the acknowledgements, commits and leaves the group.

Exactly-once (``exactly_once``): each batch is one Kafka transaction holding its results, its dead letters
and its input offsets; a failed transaction is aborted and the batch is read again.

A broker that goes away (librdkafka's ``_ALL_BROKERS_DOWN``) makes the worker stop consuming and ask
for the broker with a capped backoff; when it answers again the worker rewinds: it reopens its consumer,
which resumes from the group's committed offsets (or the earliest, on a broker that lost its state). A
failed delivery or lost partitions rewind too. The worker never exits on a broker error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prodml.core.errors import Unavailable
from prodml.serve import DataPlane
from prodml.stream.kafka import KafkaClient
from prodml.stream.messages import dead_letter
from prodml.stream.metrics import StreamMetrics
from prodml.stream.offsets import Pending, offsets_of
from prodml.stream.scoring import score_batch

__all__ = ["StreamOptions", "Worker"]

logger = logging.getLogger(__name__)
MAX_BACKOFF_S = 10.0


@dataclass
class StreamOptions:
    """What a worker reads, writes and how (``prodml stream run``'s options)."""

    brokers: str
    input_topic: str
    output_topic: str
    dlq_topic: str
    group: str
    max_batch: int = 1000
    poll_s: float = 0.05  # how long an idle consume waits for the first message
    id_field: str = "request_id"
    exactly_once: bool = False
    transactional_id: str | None = None  # exactly-once: unique per worker (default: group-topic-index)
    kafka_config: dict[str, Any] = field(default_factory=dict)
    drain_timeout_s: float = 30.0


class Worker:
    """One consumer in the group, scoring with ``plane``.

    Example:
        >>> worker = Worker(plane, StreamOptions("127.0.0.1:9092", "in", "out", "dlq", "g"))  # doctest: +SKIP
        >>> await worker.run(stop_event)  # doctest: +SKIP
    """

    def __init__(self, plane: DataPlane, options: StreamOptions, *, index: int = 0) -> None:
        self.plane = plane
        self.options = options
        self.index = index
        self.pending = Pending()
        self.client: KafkaClient | None = None
        self.metrics = StreamMetrics(plane.metrics, lag=lambda: self.client.lag if self.client else {})
        self.batches = 0  # micro-batches scored (tests and logs)
        self._worker_header = [("prodml-worker", f"{socket.gethostname()}-{os.getpid()}".encode())]

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain: wait for acknowledgements, commit, leave the group."""
        await self._model_ready(stop)
        if stop.is_set():
            return
        o = self.options
        client = self._connect()
        logger.info(
            "consuming %s as group %s → %s (dead letters: %s)%s",
            o.input_topic,
            o.group,
            o.output_topic,
            o.dlq_topic,
            ", exactly-once" if o.exactly_once else "",
        )
        try:
            while not stop.is_set():
                if client.events and await self._handle_events(client, stop):
                    client = self.client or client  # a fatal error replaces the clients
                    continue
                messages = client.consume(o.max_batch, o.poll_s)
                if messages:
                    await self._batch(client, messages, stop)
                else:
                    self._settle(client)
                await asyncio.sleep(0)  # the model poller and the metrics get their turn
        finally:
            self._drain(client)

    def _connect(self) -> KafkaClient:
        o = self.options
        self.client = KafkaClient(
            o.brokers,
            o.group,
            o.input_topic,
            config=o.kafka_config,
            transactional_id=(o.transactional_id or f"prodml-{o.group}-{o.input_topic}-{self.index}")
            if o.exactly_once
            else None,
            on_revoke=self._revoked,
            on_assign=self._assigned,
        )
        return self.client

    async def _batch(self, client: KafkaClient, messages: list[Any], stop: asyncio.Event) -> None:
        start = time.perf_counter()
        try:
            outs, dead = await score_batch(self.plane, messages, id_field=self.options.id_field)
        except Unavailable as exc:  # no model: nothing was produced; read the batch again once one is
            logger.warning("cannot score (%s); waiting for the model", exc.message)
            await self._model_ready(stop)
            self._rewind(client, "no model")
            return
        o = self.options
        offsets = offsets_of(messages)
        if o.exactly_once:
            client.begin()
            ack = None
        else:
            # the previous batch's acknowledgements came in while this one was scored: commit it before
            # producing this one, so what a crash can make the group read twice is one batch at most
            self._settle(client)
            ack = self.pending.add(offsets, len(outs) + len(dead))
        header = self._worker_header
        for out in outs:
            client.produce(o.output_topic, out.key, out.value, out.headers + header, ack)
        for d in dead:
            letter = dead_letter(d)
            client.produce(o.dlq_topic, letter.key, letter.value, letter.headers, ack)
            self.metrics.dead.labels(d.reason).inc()
        if o.exactly_once:
            try:
                client.commit_transaction(offsets)
            except Unavailable as exc:
                logger.warning("%s; reading the batch again", exc.message)
                self._rewind(client, "transaction")
                return
        else:
            client.poll(0)
        self.batches += 1
        now = time.time()
        self.metrics.batch.observe_many(np.array([time.perf_counter() - start]))
        stamps = np.fromiter((m.timestamp()[1] for m in messages), dtype=np.float64, count=len(messages))
        self.metrics.latency.observe_many(np.maximum(now - stamps / 1000, 0))
        if outs:
            self.metrics.messages.labels("ok").inc(len(messages) - len(dead))
        if dead:
            self.metrics.messages.labels("dead").inc(len(dead))

    # --- commits ----------------------------------------------------------------------------------

    def _settle(self, client: KafkaClient) -> None:
        """Wait for the acknowledgements of what was produced and commit it (synchronously)."""
        if len(self.pending):
            client.flush(self.options.drain_timeout_s)
            self._commit(client, sync=True)
        else:
            client.poll(0)

    def _commit(self, client: KafkaClient, *, sync: bool) -> None:
        if self.pending.failed is not None:
            error = self.pending.failed
            logger.warning("a result was not delivered (%s); reading from the last commit again", error)
            self._rewind(client, "delivery")
            return
        ready = self.pending.ready()
        if ready:
            client.commit(ready, sync=sync)

    def _revoked(self, partitions: list[tuple[str, int]]) -> None:
        """Before partitions go: wait for what was produced, commit it (rebalance, in consume)."""
        client = self.client
        if client is None or self.options.exactly_once:
            return
        left = client.flush(self.options.drain_timeout_s)
        if left:
            logger.warning("%d results were not acknowledged before the rebalance; they are read again", left)
        if self.pending.failed is None:
            ready = self.pending.ready()
            if ready:
                client.commit(ready, sync=True)
            self.pending.drop(partitions)
        else:  # no rewind inside librdkafka's callback: the new owners read from the last commit
            self.pending = Pending()
        logger.info("partitions revoked: %s", sorted(p for _, p in partitions))

    def _assigned(self, partitions: list[tuple[str, int]]) -> None:
        logger.info("partitions assigned: %s", sorted(p for _, p in partitions))

    def _drain(self, client: KafkaClient) -> None:
        """SIGTERM, or the end of the loop: wait for acknowledgements, commit, leave the group."""
        left = client.flush(self.options.drain_timeout_s)
        if left:
            logger.error("%d results were not acknowledged before shutdown; they are read again", left)
        if not self.options.exactly_once:
            self._commit(client, sync=True)
        client.close_consumer()

    def _rewind(self, client: KafkaClient, reason: str) -> None:
        """Go back to the last commit: reopen the consumer (what was not committed is read again)."""
        self.metrics.rewinds.labels(reason).inc()
        if not self.options.exactly_once:
            client.flush(min(5.0, self.options.drain_timeout_s))
            if self.pending.failed is None:
                ready = self.pending.ready()
                if ready:
                    client.commit(ready, sync=True)
        self.pending = Pending()
        client.close_consumer()
        client.open_consumer()

    # --- waiting ----------------------------------------------------------------------------------

    async def _handle_events(self, client: KafkaClient, stop: asyncio.Event) -> bool:
        """React to what librdkafka reported; True when the loop should look again."""
        events, client.events = client.events, []
        kinds = {kind for kind, _ in events}
        if "down" in kinds:
            logger.warning("the Kafka broker went away (%s); waiting for it", events[0][1])
            backoff = 0.5
            while True:  # wait first: right after the event a metadata request may still get through
                await asyncio.sleep(backoff)
                if stop.is_set():
                    return True
                if await asyncio.to_thread(client.broker_up, 1.0):
                    break
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            logger.info("the Kafka broker answers again; resuming from the last commit")
            client.events.clear()
            self._rewind(client, "broker")
            return True
        if "lost" in kinds:
            self.pending = Pending()  # their new owner reads them from the last commit
            self.metrics.rewinds.labels("lost").inc()
        if "fatal" in kinds:  # e.g. a fenced transactional producer: only new clients can go on
            logger.error("Kafka reported a fatal error (%s); reopening the clients", events[-1][1])
            self.metrics.rewinds.labels("fatal").inc()
            self.pending = Pending()
            client.close(timeout_s=1.0)
            await asyncio.sleep(1.0)
            self._connect()
            return True
        return False

    async def _model_ready(self, stop: asyncio.Event) -> None:
        """Wait (without consuming) until the data plane has a model."""
        said = False
        while not stop.is_set() and self.plane.manager.current is None:
            if not said:
                logger.info("waiting for a model to load before consuming")
                said = True
            await asyncio.sleep(0.2)
