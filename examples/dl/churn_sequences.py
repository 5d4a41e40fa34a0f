"""A GRU / LSTM / Transformer over each customer's event history (the demo world) → churn, exported as a
model package with tensor inputs (``events [N, T, 8]`` float, ``lengths [N]`` int64) and registered.

    python examples/dl/churn_sequences.py --kind torch_gru --out seq-package [--tracking-uri sqlite:///mlflow.db]

Sequences are point-in-time correct (only events strictly before each label time); the holdout is the
latest 20% of label times. The graph is checked against torch eager on the holdout before it is written.
Serving tensor inputs needs the server's tensor validation (see docs/dl.md, "Tensor inputs").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import TensorDataset

from prodml.data.simulate import simulate
from prodml.dl.modules import build_module
from prodml.dl.params import parse_params
from prodml.dl.sequences import STEP_FEATURES, event_sequences
from prodml.dl.trainer import Trainer
from prodml.export.package import write_package
from prodml.export.profile import reference_profile
from prodml.export.torch import check_torch_parity, export_module, tensor_input, tensor_schema


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kind", default="torch_gru", choices=["torch_gru", "torch_lstm", "torch_transformer"]
    )
    parser.add_argument("--customers", type=int, default=800)
    parser.add_argument("--days", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--max-len", type=int, default=48)
    parser.add_argument("--out", type=Path, default=Path("seq-package"))
    parser.add_argument("--tracking-uri", default=None, help="register the package in this MLflow store")
    args = parser.parse_args(argv)

    data = event_sequences(simulate(customers=args.customers, days=args.days, seed=5), max_len=args.max_len)
    cut = np.quantile(data.times, 0.8)
    train, test = data.times < cut, data.times >= cut
    params = parse_params(
        args.kind,
        {"epochs": args.epochs, "lr": 3e-3, "batch_size": 128, "d_model": 32, "max_len": args.max_len},
    )
    torch.manual_seed(params.seed)
    module = build_module(args.kind, params, inputs=len(STEP_FEATURES), outputs=2)
    dataset = TensorDataset(*(torch.from_numpy(a[train]) for a in (data.events, data.lengths, data.y)))
    history = Trainer(module, params).fit(dataset)

    holdout = {"events": data.events[test], "lengths": data.lengths[test]}
    with torch.no_grad():
        scores = module(*(torch.from_numpy(v) for v in holdout.values())).softmax(-1)[:, 1].numpy()
    roc_auc = float(roc_auc_score(data.y[test], scores))
    example = {"events": torch.from_numpy(data.events[:2]), "lengths": torch.from_numpy(data.lengths[:2])}
    graph = export_module(module, example, task="binary", dynamic={"events": {1: "steps"}})
    parity = check_torch_parity(module, graph, holdout, task="binary")
    schema = tensor_schema(
        [
            tensor_input("events", "float32", list(data.events.shape), dynamic=(1,)),
            tensor_input(
                "lengths",
                "int64",
                [len(data.lengths)],
                minimum=1,
                maximum=args.max_len,
                max_size_of=("events", 1),
            ),
        ],
        task="binary",
        classes=[0, 1],
        target="churned",
    )
    schema["steps"] = {"max": args.max_len, "features": list(STEP_FEATURES)}
    profile = reference_profile(pd.DataFrame({"lengths": data.lengths[train]}), [], scores)
    metrics = {"holdout": {"roc_auc": roc_auc}, "parity": parity, "history": history.epochs}
    lineage = {"model": {"estimator": args.kind, "params": params.model_dump(mode="json")}}
    card = f"# churn_sequences\n\n{args.kind} over event sequences; holdout ROC-AUC {roc_auc:.4f}.\n"
    digests = write_package(
        args.out, model=graph, schema=schema, profile=profile, metrics=metrics, lineage=lineage, card=card
    )
    if args.tracking_uri:
        from prodml.registry.mlflow import Registry

        registry = Registry(args.tracking_uri)
        with registry.start_run("churn_sequences", run_name=args.kind) as run:
            for record in history.epochs:
                run.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))
            mv = registry.register("churn_sequences", run, args.out, digests, {"prodml.estimator": args.kind})
        print(f"registered churn_sequences version {mv.version}")
    diff = parity["max_abs_diff"]
    print(f"{args.kind}: holdout ROC-AUC {roc_auc:.4f}, parity max |diff| {diff:.1e}, package in {args.out}")
    return {"roc_auc": roc_auc, **parity}


if __name__ == "__main__":
    main()
