"""The stream worker against a real broker (Tansu, in memory): results, crashes, groups, dead letters."""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from prodml.core.project import load_project
from prodml.serve import DataPlane, ModelManager
from prodml.serve.metrics import Metrics
from prodml.stream.worker import StreamOptions, Worker
from tests.servers import ServeProcess, free_port, kafka_broker
from tests.stream.conftest import FAST_CONFIG, Trained, WorkerProcess, create_topics, ids_of, produce

pytestmark = pytest.mark.integration
_names = itertools.count()


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with kafka_broker() as (brokers, _):
        yield brokers


def topics(brokers: str, partitions: int = 4) -> tuple[str, str, str]:
    """Fresh input, output and dead-letter topics for one test."""
    n = next(_names)
    names = (f"in{n}", f"out{n}", f"dlq{n}")
    create_topics(brokers, {names[0]: partitions, names[1]: partitions, names[2]: 1})
    return names


def records(trained: Trained, ids: range) -> list[tuple[bytes | None, bytes]]:
    rows = trained.rows
    return [(f"c{i}".encode(), orjson.dumps({**rows[i % len(rows)], "request_id": f"r{i}"})) for i in ids]


class Steady:
    """Produces request messages at a steady rate in a thread (a stream that keeps flowing)."""

    def __init__(
        self, brokers: str, topic: str, messages: list[tuple[bytes | None, bytes]], per_s: float
    ) -> None:
        self.sent = 0
        self._thread = threading.Thread(target=self._run, args=(brokers, topic, messages, per_s), daemon=True)
        self._thread.start()

    def _run(
        self, brokers: str, topic: str, messages: list[tuple[bytes | None, bytes]], per_s: float
    ) -> None:
        step = 20
        for start in range(0, len(messages), step):
            produce(brokers, topic, messages[start : start + step])
            self.sent = min(len(messages), start + step)
            time.sleep(step / per_s)

    def join(self) -> None:
        self._thread.join(60)


def same(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """The same labels, and probabilities equal up to float32 rounding: ONNX Runtime sums a tree
    ensemble in an order that depends on the batch it runs (and its threads), ~1e-7 apart."""
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert [g["probability"] for g in got] == pytest.approx([e["probability"] for e in expected], abs=1e-6)


def test_every_request_gets_exactly_one_result_equal_to_the_servers_answer(
    trained: Trained, broker: str, reader_factory: Any
) -> None:
    inp, out, dlq = topics(broker)
    rows = trained.rows[:200]
    messages = records(trained, range(200))
    messages.append((b"list-1", orjson.dumps(rows[:3])))  # a list of records: one result of three rows
    oip = {
        "id": "oip-1",
        "inputs": [
            {
                "name": k,
                "shape": [2],
                "datatype": "BYTES" if isinstance(v, str) else "FP64",
                "data": [v, rows[1][k]],
            }
            for k, v in rows[0].items()
        ],
    }
    messages.append((None, orjson.dumps(oip)))
    produce(broker, inp, messages)
    metrics_port = free_port()
    with (
        ServeProcess(trained.root, trained.env) as server,
        WorkerProcess(
            trained, broker, "--metrics-port", str(metrics_port), topics=f"{inp} {out} {dlq}"
        ) as worker,
    ):
        reader = reader_factory(broker, out, 4)
        got = reader.until(lambda m: len(m) >= 202, timeout=90)
        reader.settle(1.0)
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        server.wait_ready()
        online = httpx.post(f"{server.url}/predict", json=rows, timeout=30).json()
        assert worker.stop() == 0, worker.output()  # SIGTERM drains and exits 0
    values = [orjson.loads(m.value()) for m in got]
    by_id = Counter(v.get("request_id") or v.get("id") for v in values)
    assert set(by_id) == {f"r{i}" for i in range(200)} | {"list-1", "oip-1"}
    assert set(by_id.values()) == {1}, "each request has exactly one result"
    for m, v in zip(got, values, strict=True):
        headers = dict(m.headers())
        assert headers["prodml-version"].decode() == online["version"]
        assert m.key().decode() == headers["prodml-request-id"].decode()
        if v.get("request_id", "").startswith("r"):
            assert v["version"] == online["version"]
            same(v["predictions"], [online["predictions"][int(v["request_id"][1:])]])
        elif v.get("request_id") == "list-1":
            same(v["predictions"], online["predictions"][:3])
        else:
            proba = v["outputs"][1]["data"]
            expected = [online["predictions"][i]["probability"] for i in (0, 1)]
            assert proba[1::2] == pytest.approx(expected, abs=1e-6)
    for name in (
        "prodml_stream_messages_total",
        "prodml_stream_latency_seconds",
        "prodml_stream_consumer_lag",
    ):
        assert name in scraped
    assert 'prodml_requests_total{code="200",protocol="kafka"}' in scraped  # the server's own counters
    assert committed_total(broker, "g", inp, 4) == 202, "SIGTERM committed everything it answered"


def committed_total(brokers: str, group: str, topic: str, partitions: int) -> int:
    """The group's committed offsets on ``topic``, summed: the messages it has finished."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in committed)


def test_a_worker_killed_mid_stream_loses_nothing_and_repeats_at_most_one_batch(
    trained: Trained, broker: str, reader_factory: Any
) -> None:
    inp, out, dlq = topics(broker)
    total, batch = 2400, 100
    steady = Steady(broker, inp, records(trained, range(total)), per_s=600)
    reader = reader_factory(broker, out, 4)
    with WorkerProcess(trained, broker, "--max-batch", str(batch), topics=f"{inp} {out} {dlq}") as first:
        reader.until(lambda m: len(m) >= 300, timeout=90)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    assert steady.sent < total, "the kill came after the stream ended"
    with WorkerProcess(trained, broker, "--max-batch", str(batch), topics=f"{inp} {out} {dlq}") as second:
        steady.join()
        reader.until(lambda m: len(set(ids_of(m))) >= total, timeout=120)
        reader.settle(1.5)
        assert second.stop() == 0, second.output()
    counts = Counter(ids_of(reader.messages))
    assert set(counts) == {f"r{i}" for i in range(total)}, "no request is lost"
    repeated = sum(n - 1 for n in counts.values())
    assert repeated <= batch, f"{repeated} results repeated; at most one batch ({batch}) may be"


def test_two_workers_in_one_group_split_the_partitions(
    trained: Trained, broker: str, reader_factory: Any
) -> None:
    inp, out, dlq = topics(broker)
    total = 1600
    messages = records(trained, range(total))
    partition_of = {f"r{i}": i % 4 for i in range(total)}
    reader = reader_factory(broker, out, 4)

    def send() -> None:
        for start in range(0, total, 40):
            for p in range(4):
                produce(
                    broker,
                    inp,
                    [m for j, m in enumerate(messages[start : start + 40]) if j % 4 == p],
                    partition=p,
                )
            time.sleep(0.1)

    with WorkerProcess(trained, broker, "--workers", "2", topics=f"{inp} {out} {dlq}") as workers:
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        sender.join(60)
        got = reader.until(lambda m: len(set(ids_of(m))) >= total, timeout=120)
        assert workers.stop() == 0, workers.output()
    answered_by: dict[str, set[str]] = {}
    for m in got:
        rid = orjson.loads(m.value())["request_id"]
        answered_by.setdefault(rid, set()).add(dict(m.headers())["prodml-worker"].decode())
    assert len(set().union(*answered_by.values())) == 2, "both workers took part"
    late = [rid for rid in answered_by if int(rid[1:]) >= total * 3 // 4]  # after the group settled
    per_partition: dict[int, set[str]] = {}
    for rid in late:
        per_partition.setdefault(partition_of[rid], set()).update(answered_by[rid])
    assert all(len(w) == 1 for w in per_partition.values()), per_partition
    assert len(set().union(*per_partition.values())) == 2, "the partitions are split between the workers"


CRASH = -12345.0


class FailingPlane(DataPlane):
    """The server's data plane, whose model fails on rows holding the value ``CRASH`` (a scoring failure)."""

    async def infer(self, columns: Any, **kwargs: Any) -> Any:
        if any(CRASH in list(values) for values in columns.values()):
            raise RuntimeError("the model crashed")
        return await super().infer(columns, **kwargs)


def test_bad_messages_go_to_the_dead_letters_and_the_partition_keeps_flowing(
    trained: Trained, broker: str, reader_factory: Any
) -> None:
    inp, out, dlq = topics(broker, partitions=1)
    rows = trained.rows
    numeric = next(k for k, v in rows[0].items() if isinstance(v, float))
    crash = orjson.dumps({**rows[0], numeric: CRASH})
    schema = orjson.dumps({**rows[0], numeric: "not a number"})
    bad = {b"nojson": b"{'single': quotes}", b"schema": schema, b"unknown": b'{"what": 1}', b"crash": crash}
    messages: list[tuple[bytes | None, bytes]] = []
    for i in range(60):
        messages.append((f"c{i}".encode(), orjson.dumps({**rows[i], "request_id": f"r{i}"})))
        if i % 15 == 7:
            messages += list(bad.items())  # every bad kind, four times, between good ones
    produce(broker, inp, messages)

    async def main() -> None:
        project = load_project(trained.root)
        metrics = Metrics()
        manager = ModelManager(
            ref=f"{project.name}@champion",
            package_dir=None,
            cache_dir=trained.root / ".prodml" / "models",
            tracking_uri=trained.tracking,
            serve=project.serve,
            metrics=metrics,
        )
        plane = FailingPlane(manager, metrics=metrics)
        options = StreamOptions(
            broker, inp, out, dlq, f"dlq-group-{inp}", max_batch=50, kafka_config=dict(FAST_CONFIG)
        )
        worker = Worker(plane, options)
        stop = asyncio.Event()
        await manager.start()
        task = asyncio.create_task(worker.run(stop))
        dead_reader = reader_factory(broker, dlq, 1)
        out_reader = reader_factory(broker, out, 1)
        deadline = time.monotonic() + 90
        while (
            len(out_reader.messages) < 60 or len(dead_reader.messages) < 16
        ) and time.monotonic() < deadline:
            await asyncio.to_thread(out_reader.settle, 0.3)
            await asyncio.to_thread(dead_reader.settle, 0.3)
        stop.set()
        await task
        await manager.stop()
        assert sorted(ids_of(out_reader.messages), key=lambda r: int(r[1:])) == [f"r{i}" for i in range(60)]
        letters = dead_reader.messages
        assert len(letters) == 16
        for m in letters:
            headers = dict(m.headers())
            assert m.value() == bad[m.key()], "the original payload, byte for byte"
            reason = headers["prodml-error-reason"].decode()
            assert reason == {b"nojson": "not-json", b"crash": "scoring"}.get(m.key(), "schema")
            assert headers["prodml-source-topic"].decode() == inp
            assert headers["prodml-source-partition"] == b"0"
            original = messages.index((m.key(), m.value()))
            assert int(headers["prodml-source-offset"]) >= original
        fields = [
            orjson.loads(dict(m.headers())["prodml-error-fields"]) for m in letters if m.key() == b"schema"
        ]
        assert (
            fields[0] == [{"field": numeric, "error": fields[0][0]["error"]}]
            and "number" in fields[0][0]["error"]
        )
        assert b"the model crashed" in next(
            dict(m.headers())["prodml-error"] for m in letters if m.key() == b"crash"
        )
        scraped = metrics.render().decode()
        assert 'prodml_stream_dead_letters_total{reason="scoring"} 4.0' in scraped
        assert 'prodml_stream_dead_letters_total{reason="not-json"} 4.0' in scraped

    asyncio.run(main())


def test_exactly_once_mode_commits_results_and_offsets_in_one_transaction(
    trained: Trained, broker: str, reader_factory: Any
) -> None:
    """Tansu commits transactions (results and the group's offsets together); it does not hide aborted
    ones from read_committed readers, so what an abort guarantees is not tested here."""
    inp, out, dlq = topics(broker, partitions=2)
    produce(broker, inp, [*records(trained, range(150)), (b"bad", b"not json")])
    group = f"eos-{inp}"
    with WorkerProcess(
        trained, broker, "--exactly-once", "--max-batch", "40", group=group, topics=f"{inp} {out} {dlq}"
    ) as worker:
        got = reader_factory(broker, out, 2).until(lambda m: len(m) >= 150, timeout=90)
        dead = reader_factory(broker, dlq, 1).until(lambda m: len(m) >= 1, timeout=30)
        assert worker.stop() == 0, worker.output()
    assert sorted(ids_of(got), key=lambda r: int(r[1:])) == [f"r{i}" for i in range(150)]
    assert dead[0].key() == b"bad"
    # the next offset to read, per partition: together every one of the 151 input messages
    assert committed_total(broker, group, inp, 2) == 151, "the transactions committed the input offsets"
