"""A small trained and promoted model for the stream tests, and helpers around a real broker."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from prodml.data.examples import write_example
from tests.serve.conftest import train_and_promote

# Tansu's group join waits about half the session timeout: keep it short in tests
FAST_GROUP = ["--kafka-config", "session.timeout.ms=2000", "--kafka-config", "heartbeat.interval.ms=300"]
FAST_CONFIG = {"session.timeout.ms": "2000", "heartbeat.interval.ms": "300"}


@dataclass
class Trained:
    root: Path
    tracking: str
    rows: list[dict[str, Any]]

    @property
    def env(self) -> dict[str, str]:
        return {"PRODML_TRACKING_URI": self.tracking}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("stream")
    write_example(root, "churn", customers=300, days=150, seed=5)
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    train_and_promote(root, tracking, max_iter=20)
    frame = pq.read_table(root / ".prodml/features/training.parquet")
    keep = [c for c in frame.column_names if c not in ("customer_id", "prediction_ts", "churned")]
    return Trained(root, tracking, frame.select(keep).slice(0, 300).to_pylist())


def create_topics(brokers: str, partitions: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics([NewTopic(t, n, 1) for t, n in partitions.items()])
    for future in futures.values():
        future.result(15)


def produce(
    brokers: str, topic: str, messages: list[tuple[bytes | None, bytes]], partition: int | None = None
) -> None:
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    for key, value in messages:
        if partition is None:
            producer.produce(topic, value, key)
        else:
            producer.produce(topic, value, key, partition=partition)
        producer.poll(0)
    assert producer.flush(15) == 0


class Reader:
    """Reads every partition of a topic from the start (no group), collecting messages."""

    def __init__(self, brokers: str, topic: str, partitions: int) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": brokers, "group.id": "reader", "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.messages: list[Any] = []

    def until(self, done: Any, timeout: float = 60.0) -> list[Any]:
        """Read until ``done(messages)`` is true; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.messages)} messages after {timeout} s")
            self.messages += [m for m in self.consumer.consume(1000, 0.2) if m.error() is None]
        return self.messages

    def settle(self, seconds: float = 1.5) -> list[Any]:
        """Read what else arrives within ``seconds`` (duplicates, stragglers)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.messages += [m for m in self.consumer.consume(1000, 0.2) if m.error() is None]
        return self.messages

    def close(self) -> None:
        self.consumer.close()


def ids_of(messages: list[Any]) -> list[str]:
    return [orjson.loads(m.value())["request_id"] for m in messages]


class WorkerProcess:
    """A real ``prodml stream run`` process; its output goes to a file."""

    def __init__(
        self, trained: Trained, brokers: str, *args: str, group: str = "g", topics: str = "in out dlq"
    ) -> None:
        inp, out, dlq = topics.split()
        self.log = Path(tempfile.mkstemp(prefix="prodml-stream-", suffix=".log")[1])
        exe = Path(sys.executable).with_name("prodml")
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [
                    str(exe),
                    "--project",
                    str(trained.root),
                    "stream",
                    "run",
                    "--brokers",
                    brokers,
                    "--input-topic",
                    inp,
                    "--output-topic",
                    out,
                    "--dlq-topic",
                    dlq,
                    "--group",
                    group,
                    "--no-log-requests",
                    *FAST_GROUP,
                    *args,
                ],
                env={**os.environ, **trained.env},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self.log.unlink()


@pytest.fixture
def reader_factory() -> Iterator[Any]:
    readers: list[Reader] = []

    def make(brokers: str, topic: str, partitions: int) -> Reader:
        reader = Reader(brokers, topic, partitions)
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()
