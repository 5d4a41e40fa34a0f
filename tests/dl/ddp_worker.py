"""Run under torchrun by test_distributed.py: train an MLP on digits, rank 0 writes the weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from prodml.dl.distributed import init_from_env, shutdown
from prodml.dl.modules import build_module
from prodml.dl.params import parse_params
from prodml.dl.trainer import Trainer

SETTINGS = {"epochs": 2, "batch_size": 64, "lr": 3e-3, "scheduler": "cosine", "clip_grad_norm": 1.0}
ROWS = 1024


def data() -> TensorDataset:
    X, y = load_digits(return_X_y=True)
    return TensorDataset(torch.tensor(X[:ROWS] / 16.0, dtype=torch.float32), torch.tensor(y[:ROWS]))


def train() -> tuple[torch.nn.Module, list[dict[str, float]]]:
    params = parse_params("torch_mlp", SETTINGS)
    torch.manual_seed(params.seed)
    module = build_module("torch_mlp", params, inputs=64, outputs=10)
    history = Trainer(module, params).fit(data())
    return module, history.epochs


def main(out: Path) -> None:
    torch.set_num_threads(1)
    world, rank = init_from_env()
    module, epochs = train()
    if rank == 0:
        save_file(
            {k: v.contiguous() for k, v in module.state_dict().items()}, str(out / "weights.safetensors")
        )
        (out / "run.json").write_text(json.dumps({"world": world, "epochs": epochs}))
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
