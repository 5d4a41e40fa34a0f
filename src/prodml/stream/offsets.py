"""At-least-once bookkeeping: which input offsets may be committed, given which outputs are acknowledged.

The worker produces each batch's results and dead letters and registers the batch here with the next
offset to read per partition. librdkafka acknowledges messages asynchronously; a batch is done when every
message it produced is acknowledged, and the done batches at the head of the queue give the offsets to
commit. A batch after an unfinished one waits for it, so a commit never passes an output that the broker
has not taken. A failed delivery marks the queue ``failed``: the worker rewinds to the last commit.

Example:
    >>> pending = Pending()
    >>> ack = pending.add({("in", 0): 11}, produced=1)
    >>> ack(None, None)
    >>> pending.ready()
    {('in', 0): 11}
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from prodml.stream.kafka import Offsets

__all__ = ["Pending", "offsets_of"]


def offsets_of(messages: list[Any]) -> Offsets:
    """The next offset to read per (topic, partition) after ``messages``."""
    out: Offsets = {}
    for m in messages:
        key = (m.topic(), m.partition())
        offset = m.offset() + 1
        if out.get(key, -1) < offset:
            out[key] = offset
    return out


class _Batch:
    __slots__ = ("left", "offsets")

    def __init__(self, offsets: Offsets, left: int) -> None:
        self.offsets = offsets
        self.left = left


class Pending:
    """Batches whose outputs are not all acknowledged yet, oldest first."""

    def __init__(self) -> None:
        self._batches: deque[_Batch] = deque()
        self.failed: str | None = None  # the first delivery error

    def __len__(self) -> int:
        return len(self._batches)

    def add(self, offsets: Offsets, produced: int) -> Callable[[Any, Any], None]:
        """Register a batch that produced ``produced`` messages; return their delivery callback."""
        batch = _Batch(offsets, produced)
        self._batches.append(batch)

        def ack(error: Any, message: Any) -> None:
            if error is not None:
                if self.failed is None:
                    self.failed = str(error)
                return
            batch.left -= 1

        return ack

    def ready(self) -> Offsets:
        """Take the done batches at the head of the queue; return their offsets merged (what to commit)."""
        out: Offsets = {}
        while self._batches and self._batches[0].left <= 0 and self.failed is None:
            for key, offset in self._batches.popleft().offsets.items():
                if out.get(key, -1) < offset:
                    out[key] = offset
        return out

    def drop(self, partitions: list[tuple[str, int]]) -> None:
        """Forget ``partitions`` (revoked or lost): their uncommitted work is read again by their owner."""
        gone = set(partitions)
        for batch in self._batches:
            for key in gone & batch.offsets.keys():
                del batch.offsets[key]
