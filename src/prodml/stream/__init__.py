"""Streaming inference over Kafka: the server's data plane behind a Kafka transport.

The life of one micro-batch, module by module:

1. ``kafka``: ``KafkaClient.consume`` takes up to ``max_batch`` request messages from the input topic as
   a member of the consumer group (the only module here that imports ``confluent_kafka``).
2. ``messages``: each value is decoded (a record, a list of records, or an OIP v2 request body) and given
   its request id (id field, message key, or topic/partition/offset).
3. ``scoring``: the records of the whole batch go through ``DataPlane.infer`` (``prodml.serve``) in one
   call — the server's validation, runtime, metrics and request log; a message that breaks the schema,
   is not JSON or fails scoring becomes a dead letter (``messages.dead_letter``) without stopping the rest.
4. ``worker``: results (keyed by request id, model version in value and headers) and dead letters are
   produced; ``offsets.Pending`` commits the input offsets once the broker acknowledged them
   (at-least-once), or one Kafka transaction holds them all (exactly-once). Rebalances, SIGTERM, a broker
   that goes away: see ``worker``.
5. ``metrics``: lag, throughput, latency and dead letters at ``/metrics``; ``runner``: the process, its
   data plane, and N forked workers in one group.

    from prodml.stream import RunOptions, StreamOptions, run
"""

from __future__ import annotations

from prodml.stream.runner import RunOptions, run
from prodml.stream.worker import StreamOptions, Worker

__all__ = ["RunOptions", "StreamOptions", "Worker", "run"]
