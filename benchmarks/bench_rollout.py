"""What routing and shadowing cost one server: a single model vs a 50/50 A/B spec vs a 100% shadow.

    python benchmarks/bench_rollout.py [--duration 4] [--rounds 3]

Two versions of the churn model (the demo world, a 100-tree HistGradientBoosting pipeline, trained twice
the same way: equal cost per request, so only routing differs) are registered in a SQLite MLflow store;
one ``prodml serve`` follows the model's deployment spec (cache off, request log on, as served). Each
round sets the spec through the admin port
(``POST /admin/deployment``, applied before it answers) to each case in turn, checks that the server
really routes by it (the ``x-prodml-variant`` of probe requests; the shadow's requests on ``/metrics``),
and runs wrk with MLflow's ``dataframe_split`` JSON of one row at 1 and 8 connections. Medians over the
rounds; the cases alternate within each round, so the machine's drift hits them alike.

- **single**: version 1 takes every request (the implicit spec: no routing choice);
- **A/B 50/50**: versions 1 and 2 as arms, each request hashed to one (random key: no stickiness field);
- **shadow 100%**: version 1 answers; every request is mirrored to version 2 after the response, off
  the response path, through a bounded queue (drops counted). On these 2 cores the shadow competes with
  the primary for CPU: its cost is the second model's work, not the routing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_serve import BIN, LUA, free_port, server, wrk

TOKEN = "bench-rollout-token-0123456789"  # noqa: S105 (a throwaway server on 127.0.0.1)
CONNS = (1, 8)
SINGLE, AB, SHADOW = "single", "A/B 50/50", "shadow 100%"
SPECS: dict[str, list[dict[str, Any]]] = {
    SINGLE: [{"name": "primary", "version": "1", "weight": 100, "role": "primary"}],
    AB: [
        {"name": "primary", "version": "1", "weight": 50, "role": "primary"},
        {"name": "b", "version": "2", "weight": 50, "role": "arm"},
    ],
    SHADOW: [
        {"name": "primary", "version": "1", "weight": 100, "role": "primary"},
        {"name": "mirror", "version": "2", "weight": 0, "role": "shadow", "sample": 100},
    ],
}


def build(work: Path) -> tuple[Path, str, bytes]:
    """The project, its tracking URI (version 1 champion, version 2 registered) and a 1-row body."""
    import json

    import pyarrow.parquet as pq
    import yaml

    from prodml.core.project import load_project
    from prodml.data.examples import write_example
    from prodml.pipeline.train import run_training
    from prodml.registry.mlflow import Registry
    from prodml.registry.promotion import promote

    root = work / "project"
    write_example(root, "churn", customers=3_000, days=365, seed=0)
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    path = root / "prodml.yaml"
    for first in (True, False):
        data = yaml.safe_load(path.read_text())
        data.setdefault("model", {})["params"] = {"max_iter": 100}
        data.setdefault("validation", {})["folds"] = 2
        data.setdefault("promotion", {})["min"] = None
        path.write_text(yaml.safe_dump(data))
        project = load_project(root)
        outcome = run_training(project, tracking_uri=tracking)
        if first:
            promote(Registry(tracking), project.promotion, outcome.version.name, outcome.version.version)
    frame = pq.read_table(root / ".prodml/features/training.parquet")
    columns = [c for c in frame.column_names if c not in ("customer_id", "prediction_ts", "churned")]
    row = frame.select(columns).slice(0, 1).to_pylist()[0]
    body = json.dumps({"dataframe_split": {"columns": columns, "data": [[row[c] for c in columns]]}})
    return root, tracking, body.encode()


def set_spec(admin: str, tracking: str, name: str, case: str) -> None:
    from prodml.registry.deployment import DeploymentStore
    from prodml.registry.mlflow import Registry

    stored = DeploymentStore(Registry(tracking), name).read()
    body = {"variants": SPECS[case], "why": f"bench: {case}", "revision": stored.revision if stored else None}
    answer = httpx.post(
        f"{admin}/admin/deployment", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    if answer.status_code != 200:
        raise RuntimeError(f"{case}: the admin port said {answer.status_code}: {answer.text}")


def shadow_requests(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(r'prodml_variant_requests_total\{[^}]*variant="mirror"[^}]*\} ([\d.e+]+)', text)
    return sum(float(v) for v in found)


def check(url: str, body: bytes, case: str) -> None:
    """Fail unless the server routes by ``case``'s spec."""
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=10) as client:
        before = shadow_requests(url)
        seen = {client.post(f"{url}/invocations", content=body, headers=headers).headers["x-prodml-variant"]
                for _ in range(40)}  # fmt: skip
        time.sleep(0.5)
        mirrored = shadow_requests(url) - before
    expected = {"primary", "b"} if case == AB else {"primary"}
    if seen != expected or (case == SHADOW) != (mirrored > 0):
        raise RuntimeError(f"{case}: answered by {seen}, {mirrored:g} requests mirrored")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk pass")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prodml-bench-rollout-"))
    print("training two versions ...", flush=True)
    root, tracking, body = build(work)
    (work / "body.json").write_bytes(body)
    script = work / "body.lua"
    script.write_text(LUA.replace("{body}", str(work / "body.json")))
    port, admin_port = free_port(), free_port()
    cmd = [str(BIN / "prodml"), "--project", str(root), "serve", "--port", str(port), "--grpc-port", "0"]
    cmd += ["--admin-port", str(admin_port), "--poll", "30"]
    env = {
        "PRODML_TRACKING_URI": tracking,
        "PRODML_ADMIN_TOKEN": TOKEN,
        "PRODML_SERVE__CACHE__ENABLED": "false",
    }
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    runs: dict[tuple[str, int], list[dict[str, float]]] = {(c, n): [] for c in SPECS for n in CONNS}
    with ExitStack() as stack:
        stack.enter_context(server(cmd, port, body, env))
        for r in range(args.rounds):
            for case in SPECS:
                set_spec(admin, tracking, "churn", case)
                check(url, body, case)
                for conns in CONNS:
                    runs[(case, conns)].append(wrk(port, script, conns, args.duration))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    median = {k: {m: statistics.median(x[m] for x in v) for m in ("rps", "p50_ms")} for k, v in runs.items()}
    errors = {k: sum(x["errors"] for x in v) for k, v in runs.items()}
    print(
        f"\none prodml serve, 1-row /invocations, wrk, "
        f"medians of {args.rounds} rounds × {args.duration:g} s\n"
    )
    print("| case | conns | req/s | p50 ms | req/s vs single | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for (case, conns), m in median.items():
        ratio = m["rps"] / median[(SINGLE, conns)]["rps"]
        print(
            f"| {case} | {conns} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {ratio:.2f} "
            f"| {errors[(case, conns)]} |"
        )
    print(f"\n(cpus: {os.cpu_count()}; the shadow's requests and drops are on /metrics)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
