"""Online serving: prodml serve vs the afternoon FastAPI + ONNX Runtime app vs mlflow models serve.

    python benchmarks/bench_serve.py [--duration 2] [--rounds 3] [--skip-mlflow] [--drift-overhead]

One model for all: a 100-tree HistGradientBoosting pipeline trained on the demo world's churn frame (27
features, 2 categorical). prodml serves its ONNX package (validation, metrics and the request log on, cache
off so repeated bodies are really scored); the afternoon app (``benchmarks/apps/afternoon.py``) runs the
same ONNX graph with no validation and no metrics; MLflow serves the scikit-learn pipeline. Every server
gets the same bytes, MLflow's ``dataframe_split`` JSON at ``/invocations`` (1 row or 100 rows), from wrk
(compiled: Python clients saturate these 2 cores first) at 1, 8 and 32 connections. All servers run at
once and each cell is measured round-robin over them, ``--rounds`` passes, reported as medians: the
machine's speed drifts over minutes, and round-robin gives every server of a cell the same drift.
``--drift-overhead`` adds prodml with its live drift sketch off (``--no-drift``) to the round-robin and
prints the sketch's cost per cell: req/s with it on vs off, same run. On a shared VM that difference is
noise (±20% between passes); the sketch's own CPU time per request, measured in process (``observe``
and the amortised ``fold``, as the server calls them), divided by the server's time per request at that
cell's rate, is the figure that resolves a few percent.

Two bounds frame the table: the floor, the package's graph called in this process (no HTTP, no JSON, no
validation: the p50 no server can beat), and the ceiling, the model call alone on every core (the rows/s
no server of this model can pass at the machine's speed of the moment).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONCURRENCY = (1, 8, 32)
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""
PRODML, AFTERNOON, MLFLOW = "prodml serve", "afternoon FastAPI + ONNX Runtime", "mlflow models serve"
NODRIFT = "prodml serve --no-drift"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    total = 0
    for p in [pid, *map(int, children.split())]:
        try:
            total += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text()).group(1))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            continue
    return total / 1024


@contextmanager
def server(cmd: list[str], port: int, body: bytes, env: dict[str, str]) -> Iterator[tuple[Any, float]]:
    """Start ``cmd``; yield (process, seconds until it answered ``body``); stop it."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with httpx.Client(timeout=5) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
                try:
                    headers = {"content-type": "application/json"}
                    if client.post(
                        f"http://127.0.0.1:{port}/invocations", content=body, headers=headers
                    ).is_success:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - start > 180:
                    raise TimeoutError(f"{cmd} did not answer")
                time.sleep(0.02)
        yield proc, time.perf_counter() - start
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wrk(port: int, script: Path, connections: int, duration: float) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/invocations",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    requests, duration_us, p50, p99, status_errors, socket_errors = map(int, line.split()[1:])
    return {
        "rps": requests / (duration_us / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "errors": status_errors + socket_errors,
    }


def build_model(work: Path) -> tuple[Path, Path, Path, dict[str, bytes], Any, Any]:
    """Train the benchmark model; write its ONNX package, an MLflow model and the request bodies."""
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
    model = to_onnx(pipe, X.head(100))
    package = work / "package"
    write_package(
        package,
        model=model,
        metrics={},
        lineage={},
        card="# bench\n",
        schema=infer_schema(X, frame.categorical, task="binary", classes=[0, 1], target="churned"),
        profile=reference_profile(X, frame.categorical, None),
    )
    import mlflow.sklearn

    mlflow_model = work / "mlflow-model"
    mlflow.sklearn.save_model(
        pipe, mlflow_model, serialization_format="cloudpickle", pip_requirements=["scikit-learn", "pandas"]
    )

    def body(n: int) -> bytes:
        rows = X.head(n).astype(object).where(X.head(n).notna(), None).to_numpy().tolist()
        return json.dumps({"dataframe_split": {"columns": list(X.columns), "data": rows}}).encode()

    return project_dir, package, mlflow_model, {"1 row": body(1), "100 rows": body(100)}, model, X


def floor_ms(model: Any, X: Any, rows: int) -> float:
    """Median time of the package's graph called in this process (one tensor per column, one thread)."""
    import onnxruntime as ort

    from prodml.export.onnx import onnx_inputs

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = onnx_inputs(X.head(rows))
    times = []
    for _ in range(2000 if rows == 1 else 300):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def ceiling_rows_s(package: Path, body: bytes, seconds: float = 2.0) -> float:
    """Rows/s of the model call alone (prodml's graph, already validated rows), one thread per core."""
    from prodml.export.package import load_package
    from prodml.serve.protocols import columns_from_mlflow
    from prodml.serve.runtime import Runtime
    from prodml.serve.validation import Validator

    pkg = load_package(package, None)
    runtime = Runtime(pkg)
    feeds, rows = Validator(pkg.schema).feeds(columns_from_mlflow(json.loads(body))[0])
    rates = [0.0] * (os.cpu_count() or 1)

    def spin(i: int) -> None:
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            runtime.run(feeds)
            calls += 1
        rates[i] = calls * rows / elapsed

    threads = [threading.Thread(target=spin, args=(i,)) for i in range(len(rates))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(rates)


def sketch_us(package: Path, body: bytes, requests: int = 20_000) -> float:
    """Median µs per request of the live drift sketch (``observe`` each request, ``fold`` every 50, as
    the server's 0.1 s tick would at a few hundred requests/s), over the request's validated feeds."""
    from prodml.export.drift import LiveSketch
    from prodml.export.package import load_package
    from prodml.serve.protocols import columns_from_mlflow
    from prodml.serve.runtime import Runtime
    from prodml.serve.sketch import ROWS_PER_REQUEST
    from prodml.serve.validation import NUMBERS, STRINGS, Validator

    pkg = load_package(package, None)
    validator = Validator(pkg.schema)
    feeds, _ = validator.feeds(columns_from_mlflow(json.loads(body))[0])
    output = Runtime(pkg).run(feeds)[-1]
    times = []
    for _ in range(5):
        sketch = LiveSketch(
            pkg.profile, validator.layout, window_rows=10_000, rows_per_request=ROWS_PER_REQUEST
        )
        start = time.perf_counter()
        for i in range(requests):
            sketch.observe(feeds.get(NUMBERS), feeds.get(STRINGS), output)
            if i % 50 == 0:
                sketch.fold()
        sketch.fold(force=True)
        times.append((time.perf_counter() - start) / requests * 1e6)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per wrk pass")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin passes per cell")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--drift-overhead", action="store_true", help="also prodml without the drift sketch")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prodml-bench-serve-"))
    print("training the benchmark model ...", flush=True)
    project_dir, package, mlflow_model, bodies, model, X = build_model(work)
    scripts = {}
    for label, body in bodies.items():
        stem = work / label.replace(" ", "-")
        stem.with_suffix(".json").write_bytes(body)
        stem.with_suffix(".lua").write_text(LUA.replace("{body}", str(stem.with_suffix(".json"))))
        scripts[label] = stem.with_suffix(".lua")
    ports = {PRODML: free_port(), AFTERNOON: free_port(), MLFLOW: free_port(), NODRIFT: free_port()}
    commands = {
        PRODML: (
            [
                str(BIN / "prodml"),
                "--project",
                str(project_dir),
                "serve",
                "--package",
                str(package),
                "--port",
                str(ports[PRODML]),
                "--grpc-port",
                "0",
                "--admin-port",
                str(free_port()),
            ],
            {"PRODML_SERVE__CACHE__ENABLED": "false", "PRODML_SERVE__BUSY_POLL_US": "0"},
        ),
        AFTERNOON: (
            [
                str(BIN / "uvicorn"),
                "benchmarks.apps.afternoon:app",
                "--port",
                str(ports[AFTERNOON]),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            {"MODEL": str(package / "model.onnx")},
        ),
        MLFLOW: (
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                str(mlflow_model),
                "-p",
                str(ports[MLFLOW]),
                "--env-manager",
                "local",
                "-w",
                "1",
            ],
            {},
        ),
    }
    if args.skip_mlflow:
        del commands[MLFLOW]
    if args.drift_overhead:
        cmd, env = commands[PRODML]
        cmd = [*cmd, "--no-drift"]
        cmd[cmd.index("--port") + 1] = str(ports[NODRIFT])
        cmd[cmd.index("--admin-port") + 1] = str(free_port())
        commands[NODRIFT] = (cmd, env)
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    started: dict[str, tuple[float, float]] = {}
    with ExitStack() as stack:
        for name, (cmd, env) in commands.items():
            proc, seconds = stack.enter_context(server(cmd, ports[name], bodies["1 row"], env))
            started[name] = (seconds, rss_mb(proc.pid))
            print(f"{name}: answering after {seconds:.2f} s", flush=True)
        for label, script in scripts.items():
            for conns in CONCURRENCY:
                passes: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
                for _ in range(args.rounds):
                    for name in commands:
                        passes[name].append(wrk(ports[name], script, conns, args.duration))
                for name, runs in passes.items():
                    results[(name, label, conns)] = {
                        k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")
                    } | {"errors": sum(r["errors"] for r in runs)}
                print(
                    f"{label} at {conns}: "
                    + ", ".join(f"{n} {results[(n, label, conns)]['rps']:,.0f} req/s" for n in commands),
                    flush=True,
                )
    floors = {label: floor_ms(model, X, int(label.split()[0])) for label in bodies}
    ceiling = ceiling_rows_s(package, bodies["100 rows"])
    print(
        "\n| server | body | conns | req/s | rows/s | p50 ms | p99 ms | errors | vs afternoon | vs mlflow |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (name, label, conns), r in results.items():
        rows = int(label.split()[0])
        base = results[(AFTERNOON, label, conns)]["rps"]
        ml = results.get((MLFLOW, label, conns), {}).get("rps")
        print(
            f"| {name} | {label} | {conns} | {r['rps']:,.0f} | {r['rps'] * rows:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']:.0f} | {r['rps'] / base:.2f}x | "
            + (f"{r['rps'] / ml:.1f}x |" if ml else "– |")
        )
    print("\n| server | start to first answer (s) | memory (MiB RSS) |\n|---|---:|---:|")
    for name, (seconds, rss) in started.items():
        print(f"| {name} | {seconds:.2f} | {rss:.0f} |")
    print(
        f"\nfloor (the graph in process): 1 row {floors['1 row'] * 1000:.0f} µs, 100 rows "
        f"{floors['100 rows'] * 1000:.0f} µs; prodml p50 at one connection: "
        f"{results[(PRODML, '1 row', 1)]['p50_ms'] / floors['1 row']:.1f}x / "
        f"{results[(PRODML, '100 rows', 1)]['p50_ms'] / floors['100 rows']:.1f}x the floor"
    )
    print(
        f"ceiling (the model call alone on every core, 100 rows a call): {ceiling:,.0f} rows/s"
        + (
            f" = {ceiling / (100 * results[(MLFLOW, '100 rows', 1)]['rps']):.0f}x MLflow's 100-row rate"
            if MLFLOW in commands
            else ""
        )
    )
    if args.drift_overhead:
        cost = {label: sketch_us(package, body) for label, body in bodies.items()}
        print(
            "\n| body | conns | drift sketch on req/s | off req/s | on vs off | sketch µs/request | "
            "share of the server's time |\n|---|---:|---:|---:|---:|---:|---:|"
        )
        for (name, label, conns), r in results.items():
            if name == PRODML:
                off = results[(NODRIFT, label, conns)]["rps"]
                print(
                    f"| {label} | {conns} | {r['rps']:,.0f} | {off:,.0f} | {r['rps'] / off - 1:+.1%} | "
                    f"{cost[label]:.1f} | {cost[label] * off / 1e6:.1%} |"
                )
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "serve.json").write_text(
        json.dumps(
            {
                "cells": [{"server": n, "body": b, "conns": c, **r} for (n, b, c), r in results.items()],
                "started": started,
                "floor_ms": floors,
                "ceiling_rows_s": ceiling,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
