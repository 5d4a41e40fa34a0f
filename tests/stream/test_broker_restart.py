"""A broker that goes away and comes back (memory storage: its topics are recreated) mid-run."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest

from tests.servers import free_port, kafka_broker
from tests.stream.conftest import Trained, WorkerProcess, create_topics, ids_of, produce
from tests.stream.test_worker import records

pytestmark = pytest.mark.integration


def test_the_worker_waits_for_a_restarted_broker_and_resumes_without_a_crash_loop(
    trained: Trained, reader_factory: Any
) -> None:
    port = free_port()
    partitions = {"in": 2, "out": 2, "dlq": 1}
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(kafka_broker(port))
        brokers = first[0]
        create_topics(brokers, partitions)
        produce(brokers, "in", records(trained, range(100)))
        worker = stack.enter_context(WorkerProcess(trained, brokers))
        reader_factory(brokers, "out", 2).until(lambda m: len(set(ids_of(m))) >= 100, timeout=90)
        first[1].kill()  # the broker goes away, with everything it held
        first[1].wait(10)
        time.sleep(3)  # the worker notices and backs off
        assert worker.proc.poll() is None, worker.output()
        with kafka_broker(port) as (again, _):
            create_topics(again, partitions)
            produce(again, "in", records(trained, range(100, 200)))
            after = reader_factory(again, "out", 2).until(lambda m: len(set(ids_of(m))) >= 100, timeout=90)
            assert set(ids_of(after)) == {f"r{i}" for i in range(100, 200)}
            assert worker.proc.poll() is None, "the same worker process resumed"
            assert worker.stop() == 0, worker.output()
        log = worker.output(tail=1_000_000)
        assert "went away" in log and "answers again" in log
        assert "Traceback" not in log
