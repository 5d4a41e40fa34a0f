"""prodml's torch trainer against a plain PyTorch loop, DDP with 2 processes against 1, ONNX Runtime
against torch eager.

    python benchmarks/bench_dl.py [--epochs 4] [--rounds 3]

1. Trainer overhead: the digits CNN, the same data, batch, optimizer and epochs, one thread: prodml's
   ``Trainer.fit`` (sampler, callbacks, per-epoch bookkeeping; no validation set, no checkpoint) against
   a hand-written loop (DataLoader with shuffle, zero_grad / forward / backward / step). Rounds
   alternate which goes first; each side's best round counts (steal only slows a round down).
2. DDP: the same CNN under ``torchrun --nproc_per_node 2`` (gloo, one thread per process) against one
   process with one thread, at the same global batch; samples/s from the trainer's epoch records.
3. Inference: the CNN exported with an image input ``[N, 1, 8, 8]`` in ONNX Runtime (one thread)
   against torch eager in process (one thread, ``no_grad``), median latency at 1 and 64 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from prodml.dl.modules import build_module
from prodml.dl.params import TorchParams, parse_params
from prodml.dl.trainer import Trainer

SETTINGS = {"lr": 3e-3, "batch_size": 64, "optimizer": "adam", "val_fraction": 0.0}


def digits() -> TensorDataset:
    X, y = load_digits(return_X_y=True)
    return TensorDataset(torch.tensor(X[:1792] / 16.0, dtype=torch.float32), torch.tensor(y[:1792]))


def cnn(params: TorchParams) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_module("torch_cnn", params, inputs=64, outputs=10)


def plain_loop(params: TorchParams, data: TensorDataset) -> float:
    """The loop a user would write by hand; returns samples/s over all epochs."""
    model = cnn(params)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    loader = DataLoader(
        data, batch_size=params.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    start, seen = time.perf_counter(), 0
    for _ in range(params.epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            seen += len(y)
    return seen / (time.perf_counter() - start)


def prodml_trainer(params: TorchParams, data: TensorDataset) -> float:
    model = cnn(params)
    start = time.perf_counter()
    history = Trainer(model, params).fit(data)
    return sum(len(data) for _ in history.epochs) / (time.perf_counter() - start)


def overhead(params: TorchParams, rounds: int) -> dict[str, Any]:
    data = digits()
    runs: dict[str, list[float]] = {"plain": [], "prodml": []}
    sides: list[tuple[str, Callable[[TorchParams, TensorDataset], float]]] = [
        ("plain", plain_loop),
        ("prodml", prodml_trainer),
    ]
    for r in range(rounds):
        for name, fn in sides if r % 2 == 0 else sides[::-1]:
            runs[name].append(fn(params, data))
    best = {k: max(v) for k, v in runs.items()}
    return {"runs": runs, "best": best, "overhead": best["plain"] / best["prodml"] - 1}


def ddp_worker(out: Path, epochs: int) -> None:
    from prodml.dl.distributed import init_from_env, shutdown

    torch.set_num_threads(1)
    _, rank = init_from_env()
    params = parse_params("torch_cnn", SETTINGS | {"epochs": epochs})
    history = Trainer(cnn(params), params).fit(digits())
    if rank == 0:
        out.write_text(json.dumps(history.epochs))
    shutdown()


def ddp(epochs: int) -> dict[str, Any]:
    from prodml.dl.distributed import torchrun_command

    result: dict[str, Any] = {}
    for nproc in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "epochs.json"
            command = torchrun_command(
                nproc, "benchmarks.bench_dl", ["--ddp-worker", str(out), "--epochs", str(epochs)]
            )
            env = os.environ | {
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            }
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=900)
            epochs_done = json.loads(out.read_text())
        rates = [e["samples_per_s"] for e in epochs_done[1:]] or [
            epochs_done[0]["samples_per_s"]
        ]  # skip warm-up
        result[f"{nproc}p"] = statistics.median(rates)
    result["speedup"] = result["2p"] / result["1p"]
    return result


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def inference(repeats: int) -> dict[int, Any]:
    import onnxruntime as ort

    from prodml.export.torch import export_module

    params = parse_params("torch_cnn", SETTINGS)
    model = cnn(params).eval()
    graph = export_module(model, {"image": torch.rand(2, 1, 8, 8)}, task="multiclass")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out: dict[int, Any] = {}
    for rows in (1, 64):
        x = np.random.default_rng(0).random((rows, 1, 8, 8), dtype=np.float32)
        xt = torch.from_numpy(x)

        def eager(xt: torch.Tensor = xt) -> Any:
            with torch.no_grad():
                return model(xt).softmax(-1)

        def onnx(x: np.ndarray = x) -> Any:
            return session.run(None, {"image": x})

        e, o = median_ms(eager, repeats), median_ms(onnx, repeats)
        out[rows] = {"torch_ms": e, "onnx_ms": o, "speedup": e / o}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--ddp-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker is not None:
        ddp_worker(args.ddp_worker, args.epochs)
        return 0
    torch.set_num_threads(1)
    params = parse_params("torch_cnn", SETTINGS | {"epochs": args.epochs})
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, one thread per process")
    o = overhead(params, args.rounds)
    print(
        f"trainer: prodml {o['best']['prodml']:,.0f} samples/s, plain loop "
        f"{o['best']['plain']:,.0f} samples/s (best of {args.rounds}); overhead {o['overhead'] * 100:+.1f}%"
    )
    print("  rounds:", {k: [round(x) for x in v] for k, v in o["runs"].items()})
    d = ddp(args.epochs)
    print(
        f"DDP: 1 process {d['1p']:,.0f} samples/s, 2 processes {d['2p']:,.0f} samples/s: {d['speedup']:.2f}x"
    )
    for rows, r in inference(args.repeats).items():
        print(
            f"inference, {rows:>2} rows: torch eager {r['torch_ms']:.3f} ms, "
            f"ONNX Runtime {r['onnx_ms']:.3f} ms ({r['speedup']:.1f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
