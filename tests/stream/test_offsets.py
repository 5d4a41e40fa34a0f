"""At-least-once bookkeeping: offsets are committable only behind acknowledged outputs."""

from __future__ import annotations

from prodml.stream.offsets import Pending, offsets_of
from tests.stream.test_messages import FakeMessage


def test_offsets_of_a_batch_are_the_next_to_read_per_partition() -> None:
    messages = [FakeMessage(b"", _offset=o) for o in (3, 9, 5)]
    assert offsets_of(messages) == {("requests", 2): 10}


def test_a_batch_is_committable_only_when_all_its_outputs_are_acknowledged() -> None:
    pending = Pending()
    ack = pending.add({("in", 0): 10}, produced=2)
    ack(None, None)
    assert pending.ready() == {}
    ack(None, None)
    assert pending.ready() == {("in", 0): 10}
    assert len(pending) == 0


def test_a_later_batch_waits_for_an_earlier_unfinished_one() -> None:
    pending = Pending()
    first = pending.add({("in", 0): 10}, produced=1)
    second = pending.add({("in", 0): 20, ("in", 1): 5}, produced=1)
    second(None, None)
    assert pending.ready() == {}
    first(None, None)
    assert pending.ready() == {("in", 0): 20, ("in", 1): 5}


def test_a_batch_without_outputs_is_done_at_once() -> None:
    pending = Pending()
    pending.add({("in", 0): 4}, produced=0)
    assert pending.ready() == {("in", 0): 4}


def test_a_failed_delivery_stops_all_commits() -> None:
    pending = Pending()
    ack = pending.add({("in", 0): 10}, produced=2)
    ack("timed out", None)
    ack(None, None)
    assert pending.failed == "timed out"
    assert pending.ready() == {}


def test_dropped_partitions_are_not_committed() -> None:
    pending = Pending()
    ack = pending.add({("in", 0): 10, ("in", 1): 3}, produced=1)
    pending.drop([("in", 1)])
    ack(None, None)
    assert pending.ready() == {("in", 0): 10}
