"""The online-feature step on a served request: the full row sent vs the entity key alone, one server.

    python benchmarks/bench_online.py [--duration 4] [--rounds 3]

The demo's churn project (3,000 customers; a 100-tree HistGradientBoosting pipeline over 27 features) is
trained and promoted in a SQLite MLflow store, its features materialised into a local Redis
(``features.online.redis_url``), and one ``prodml serve`` (cache off, request log on) answers MLflow
``dataframe_split`` bodies at ``/invocations``:

- **full row**: every model input in the body, as a client without a feature store sends it;
- **key only**: ``customer_id`` alone; the data plane's online step reads the rest from Redis (one
  pipelined ``HMGET`` per request) and the request goes on as the full row would.

Both bodies describe the same customers with the same values (the full rows are read back from the
store), so the answers are equal (checked first). wrk at 1 and 8 connections, 1 and 100 rows per
request; the two cases alternate within each round and the medians are reported. The difference is the
end-to-end cost of the step on a served request: the Redis round trip, decoding, and merging the columns.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_features import redis_server
from benchmarks.bench_serve import BIN, LUA, free_port, server, wrk

ENTITY = "customer_id"
FULL, KEY = "full row", "key only"


def build(work: Path, redis_url: str) -> tuple[Path, str, dict[tuple[str, int], bytes]]:
    """Train, promote and materialise; the project, its tracking URI and the bodies per (case, rows)."""
    import pyarrow.parquet as pq
    import yaml

    from prodml.core.project import load_project
    from prodml.data.examples import write_example
    from prodml.data.online_store import online_spec, opened
    from prodml.data.sources import Catalog
    from prodml.features.materialize import materialize
    from prodml.pipeline.train import run_training
    from prodml.registry.mlflow import Registry
    from prodml.registry.promotion import promote

    root = work / "project"
    write_example(root, "churn", customers=3_000, days=365, seed=0)
    path = root / "prodml.yaml"
    data = yaml.safe_load(path.read_text())
    data.setdefault("model", {})["params"] = {"max_iter": 100}
    data.setdefault("validation", {})["folds"] = 2
    data.setdefault("promotion", {})["min"] = None
    data.setdefault("features", {})["online"] = {"redis_url": redis_url}
    path.write_text(yaml.safe_dump(data))
    project = load_project(root)
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    outcome = run_training(project, tracking_uri=tracking)
    promote(Registry(tracking), project.promotion, outcome.version.name, outcome.version.version)
    frame = pq.read_table(root / ".prodml/features/training.parquet")
    inputs = [c for c in frame.column_names if c not in (ENTITY, "prediction_ts", "churned")]
    strings = [
        c for c in inputs if not str(frame.schema.field(c).type).startswith(("double", "float", "int"))
    ]
    numbers = [c for c in inputs if c not in strings]
    with opened(online_spec(project.features.online), root=root, name=project.name) as store:
        materialize(Catalog(project), store)
        keys = sorted(store.keys(), key=int)[:100]
        columns = store.read(keys, numbers, strings).columns()

    def plain(value: Any) -> Any:
        if isinstance(value, np.floating):
            return None if np.isnan(value) else float(value)
        return value

    bodies = {}
    for n in (1, 100):
        full = [[plain(columns[c][i]) for c in inputs] for i in range(n)]
        bodies[(FULL, n)] = {"dataframe_split": {"columns": inputs, "data": full}}
        bodies[(KEY, n)] = {"dataframe_split": {"columns": [ENTITY], "data": [[int(k)] for k in keys[:n]]}}
    return root, tracking, {k: json.dumps(v).encode() for k, v in bodies.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk pass")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prodml-bench-online-"))
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        print("training, promoting, materialising ...", flush=True)
        root, tracking, bodies = build(work, redis_url)
        scripts = {}
        for (case, n), body in bodies.items():
            stem = work / f"{case.replace(' ', '-')}-{n}"
            stem.with_suffix(".json").write_bytes(body)
            stem.with_suffix(".lua").write_text(LUA.replace("{body}", str(stem.with_suffix(".json"))))
            scripts[(case, n)] = stem.with_suffix(".lua")
        port = free_port()
        cmd = [str(BIN / "prodml"), "--project", str(root), "serve", "--port", str(port), "--grpc-port", "0"]
        cmd += ["--admin-port", str(free_port())]
        env = {"PRODML_TRACKING_URI": tracking, "PRODML_SERVE__CACHE__ENABLED": "false"}
        stack.enter_context(server(cmd, port, bodies[(FULL, 1)], env))
        url = f"http://127.0.0.1:{port}/invocations"
        for n in (1, 100):  # the same answers either way
            answers = [
                httpx.post(url, content=bodies[(c, n)], headers={"content-type": "application/json"}).json()
                for c in (FULL, KEY)
            ]
            if answers[0]["predictions"] != answers[1]["predictions"]:
                raise RuntimeError(f"{n} rows: the key-only answers differ from the full rows'")
        runs: dict[tuple[str, int, int], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for n in (1, 100):
                for conns in (1, 8):
                    for case in (FULL, KEY) if r % 2 == 0 else (KEY, FULL):
                        got = wrk(port, scripts[(case, n)], conns, args.duration)
                        runs.setdefault((case, n, conns), []).append(got)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("rps", "p50_ms")} for k, v in runs.items()}
    print(
        f"\none prodml serve, Redis online store, wrk, "
        f"medians of {args.rounds} rounds × {args.duration:g} s\n"
    )
    print(
        "| rows | conns | full row: req/s | p50 ms | key only: req/s | p50 ms | req/s key/full | p50 added |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (1, 100):
        for conns in (1, 8):
            f, k = med[(FULL, n, conns)], med[(KEY, n, conns)]
            print(
                f"| {n} | {conns} | {f['rps']:,.0f} | {f['p50_ms']:.2f} "
                f"| {k['rps']:,.0f} | {k['p50_ms']:.2f} "
                f"| {k['rps'] / f['rps']:.2f} | {k['p50_ms'] - f['p50_ms']:+.2f} ms |"
            )
    errors = sum(x["errors"] for v in runs.values() for x in v)
    print(f"\nerrors: {errors}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
