"""Online feature lookup on one Redis: prodml vs Feast's get_online_features vs the redis-py floor.

    python benchmarks/bench_features.py [--entities 100000] [--rounds 5] [--no-feast]

One redis-server on 127.0.0.1 holds the same 100k entities × 20 features (16 floats, 2 counts, 2
categories) three times: as plain hashes (a text field per feature), as prodml's hashes (what
``prodml features materialize`` writes: the numbers packed in one field) and in Feast 0.67's Redis
layout (``feast apply`` + ``write_to_online_store`` from the same table). For 1 and for 100 random
entities per call it times, call by call with every case in turn so that noise hits all alike:

- **floor**: a redis-py pipeline of ``HMGET`` of the 20 fields of the plain hashes, nothing decoded;
  and the same over prodml's hashes (5 fields), nothing decoded;
- **prodml store**: ``RedisStore.read`` — the same pipeline plus decoding to numpy columns;
- **prodml step**: ``OnlineFeatures.join`` — what the server's online step runs (read, policies, merge);
- **Feast**: ``FeatureStore.get_online_features(...).to_dict()``.

It checks first that Feast and prodml return the same values. It then times the in-process core of a
served request (validate + ONNX Runtime on a 20-input logistic regression) fed by the full row vs by the
entity key through the online step: the end-to-end cost of the step on the request path. Prints
p50/p99 in ms and the ratios the issue asks for.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prodml.data.online_store import OnlineFeatures, RedisStore

os.environ.setdefault("FEAST_USAGE", "False")
NUMBERS = [f"f{i}" for i in range(16)] + ["count_7d", "count_30d"]
STRINGS = ["plan", "country"]
ENTITY = "customer_id"


def make_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {ENTITY: np.arange(1, n + 1, dtype=np.int64)}
    for name in NUMBERS[:16]:
        cols[name] = np.round(rng.normal(0, 3, n), 4)
    cols["count_7d"] = rng.poisson(3, n).astype(np.int64)
    cols["count_30d"] = rng.poisson(12, n).astype(np.int64)
    cols["plan"] = np.array(["basic", "pro", "enterprise"])[rng.integers(0, 3, n)]
    cols["country"] = np.array(["US", "DE", "GB", "FR", "IN", "BR"])[rng.integers(0, 6, n)]
    return pa.table(cols)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)


def feast_store(table: pa.Table, url: str, directory: Path) -> tuple[Any, list[str]]:
    """A Feast repository on the same Redis, filled from ``table``; (store, feature refs)."""
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    port = url.rsplit(":", 1)[1].split("/")[0]
    (directory / "data").mkdir(parents=True)
    (directory / "feature_store.yaml").write_text(
        "project: bench\nregistry: data/registry.db\nprovider: local\n"
        f"online_store:\n  type: redis\n  connection_string: '127.0.0.1:{port}'\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    frame = table.to_pandas()
    frame["event_timestamp"] = pd.Timestamp(datetime(2025, 7, 1))
    frame.to_parquet(directory / "data" / "features.parquet")
    entity = Entity(name=ENTITY, join_keys=[ENTITY], value_type=ValueType.INT64)
    types = dict.fromkeys(NUMBERS[:16], Float64) | {
        "count_7d": Int64,
        "count_30d": Int64,
        "plan": String,
        "country": String,
    }
    view = FeatureView(
        name="features",
        entities=[entity],
        ttl=timedelta(0),
        schema=[Field(name=n, dtype=t) for n, t in types.items()],
        source=FileSource(
            path=str(directory / "data" / "features.parquet"), timestamp_field="event_timestamp"
        ),
    )
    store = FeatureStore(repo_path=str(directory))
    store.apply([entity, view])
    start = time.perf_counter()
    for i in range(0, len(frame), 20_000):
        store.write_to_online_store("features", frame.iloc[i : i + 20_000])
    print(f"  Feast wrote {len(frame):,} entities in {time.perf_counter() - start:.1f} s", flush=True)
    return store, [f"features:{n}" for n in types]


def write_plain_hashes(client: Any, table: pa.Table) -> None:
    """The floor's data: a hash per entity with one text field per feature (``plain:<entity>``)."""
    rows = table.to_pylist()
    for i in range(0, len(rows), 5_000):
        pipe = client.pipeline(transaction=False)
        for row in rows[i : i + 5_000]:
            key = row.pop(ENTITY)
            pipe.hset(f"plain:{key}", mapping={k: str(v) for k, v in row.items()})
        pipe.execute()


def percentiles(samples: list[float]) -> tuple[float, float]:
    a = np.array(samples) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def model_core(table: pa.Table) -> tuple[Callable[[dict[str, Any]], Any], Any]:
    """Validate + ONNX Runtime for a logistic regression on the 20 features (the served request's core)."""
    from prodml.core.project import Project
    from prodml.export.onnx import to_onnx
    from prodml.export.package import ModelPackage
    from prodml.export.schema import infer_schema
    from prodml.serve.runtime import Runtime
    from prodml.serve.validation import Validator
    from prodml.train.pipeline import build_pipeline

    frame = table.slice(0, 5_000).to_pandas().drop(columns=[ENTITY])
    for c in NUMBERS:
        frame[c] = frame[c].astype(np.float32)
    y = (frame["f0"] + frame["count_7d"] > 3).astype(np.int64).to_numpy()
    project = Project.model_validate(
        {
            "name": "bench",
            "sources": {"t": {"path": "x"}},
            "target": {"source": "t", "column": "y"},
            "features": {
                "transforms": [{"column": "plan", "op": "onehot"}, {"column": "country", "op": "onehot"}]
            },
            "model": {"estimator": "logistic_regression", "params": {}},
        }
    )
    pipe = build_pipeline(project, list(frame.columns), STRINGS).fit(frame, y)
    schema = infer_schema(frame, STRINGS, task="binary", classes=[0, 1], target="y")
    package = ModelPackage(Path(), to_onnx(pipe, frame.head(50)).SerializeToString(), schema, {}, {}, {}, "")
    runtime, validator = Runtime(package), Validator(schema)

    def core(columns: dict[str, Any]) -> Any:
        return runtime.run(validator.feeds(columns)[0])

    return core, schema


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400, help="calls per case per round")
    parser.add_argument("--no-feast", action="store_true")
    args = parser.parse_args()
    table = make_table(args.entities)
    rng = np.random.default_rng(1)
    with redis_server() as url, tempfile.TemporaryDirectory() as tmp:
        store = RedisStore(url, "prodml:bench", timeout_s=1.0)
        start = time.perf_counter()
        store.write(table, ENTITY, as_of=time.time())
        print(f"  prodml wrote {args.entities:,} entities in {time.perf_counter() - start:.1f} s", flush=True)
        online = OnlineFeatures(store, entity=ENTITY, numbers=NUMBERS, strings=STRINGS)
        client, fields = store.client, [*NUMBERS, *STRINGS]
        write_plain_hashes(client, table)
        packed_fields = [b"__at", b"__layout", b"__numbers", *(f.encode() for f in STRINGS)]

        def floor(keys: list[int]) -> Any:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.hmget(f"plain:{k}", fields)
            return pipe.execute()

        def floor_packed(keys: list[int]) -> Any:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.hmget(f"prodml:bench:{k}", packed_fields)
            return pipe.execute()

        cases: dict[str, Callable[[list[int]], Any]] = {
            "redis-py floor (HMGET pipeline)": floor,
            "same, prodml's packed hashes": floor_packed,
            "prodml store read": lambda keys: store.read(keys, NUMBERS, STRINGS),
            "prodml online step (join)": lambda keys: online.join({ENTITY: keys}),
        }
        if not args.no_feast:
            fs, refs = feast_store(table, url, Path(tmp) / "feast")

            def feast(keys: list[int]) -> Any:
                return fs.get_online_features(
                    features=refs, entity_rows=[{ENTITY: k} for k in keys]
                ).to_dict()

            keys = [int(k) for k in rng.integers(1, args.entities + 1, 100)]
            theirs, ours = feast(keys), store.read(keys, NUMBERS, STRINGS).columns()
            for n in NUMBERS + STRINGS:
                assert list(theirs[n]) == ours[n].tolist(), n  # the same values, or no comparison
            cases["Feast get_online_features"] = feast

        core, _ = model_core(table)
        full_rows = {n: table.column(n).to_pylist() for n in NUMBERS + STRINGS}

        def served_full(keys: list[int]) -> Any:
            return core({n: [full_rows[n][k - 1] for k in keys] for n in NUMBERS + STRINGS})

        def served_by_key(keys: list[int]) -> Any:
            return core(online.join({ENTITY: keys})[0])

        cases["request core, full row sent"] = served_full
        cases["request core, key only (online step)"] = served_by_key

        samples: dict[tuple[str, int], list[float]] = {(c, n): [] for c in cases for n in (1, 100)}
        for r in range(args.rounds):
            for n in (1, 100):
                calls = args.calls if n == 1 else max(args.calls // 4, 50)
                batches = [[int(k) for k in rng.integers(1, args.entities + 1, n)] for _ in range(calls)]
                for fn in cases.values():
                    for _ in range(20):
                        fn(batches[0])  # warm
                # call by call, every case in turn: a burst of load on this shared machine hits all alike
                for i, keys in enumerate(batches):
                    order = list(cases.items())
                    for name, fn in order[i % len(order) :] + order[: i % len(order)]:
                        t0 = time.perf_counter()
                        fn(keys)
                        samples[(name, n)].append(time.perf_counter() - t0)
            print(f"  round {r + 1}/{args.rounds} done", flush=True)
        store.close()

    print(f"\n{args.entities:,} entities × {len(NUMBERS) + len(STRINGS)} features, one local Redis\n")
    print(f"{'case':40s} {'1: p50':>8s} {'p99':>8s} {'100: p50':>9s} {'p99':>8s}  (ms)")
    stats = {k: percentiles(v) for k, v in samples.items()}
    for name in cases:
        (a50, a99), (b50, b99) = stats[(name, 1)], stats[(name, 100)]
        print(f"{name:40s} {a50:8.3f} {a99:8.3f} {b50:9.3f} {b99:8.3f}")
    step, floor_name = "prodml online step (join)", "redis-py floor (HMGET pipeline)"
    for n in (1, 100):
        ratio = stats[(step, n)][0] / stats[(floor_name, n)][0]
        line = f"\n{n:>3} entities: prodml step / floor p50 {ratio:.2f}x"
        if "Feast get_online_features" in cases:
            feast_p50 = stats[("Feast get_online_features", n)][0]
            line += f", Feast / prodml step p50 {feast_p50 / stats[(step, n)][0]:.1f}x"
            line += f", p99 {stats[('Feast get_online_features', n)][1] / stats[(step, n)][1]:.1f}x"
        extra = (
            stats[("request core, key only (online step)", n)][0]
            - stats[("request core, full row sent", n)][0]
        )
        line += f"; the online step adds {extra:.3f} ms to the request core's p50"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
