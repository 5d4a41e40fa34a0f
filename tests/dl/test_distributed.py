"""DDP: two gloo processes under torchrun follow one process's trajectory with the same global batch."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prodml.core.errors import ConfigError
from prodml.dl.distributed import init_from_env, torchrun_command
from tests.dl import ddp_worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_two_processes_reach_the_weights_of_one(tmp_path: Path) -> None:
    command = torchrun_command(2, "tests.dl.ddp_worker", [str(tmp_path)])
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["world"] == 2
    distributed = load_file(str(tmp_path / "weights.safetensors"))

    single, epochs = ddp_worker.train()  # this process: world size 1, the same global batch of 64
    assert len(epochs) == len(run["epochs"]) == 2
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(distributed[name], tensor, atol=1e-5, rtol=0)
    for one, two in zip(epochs, run["epochs"], strict=True):
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)
    assert not torch.equal(distributed["head.weight"], ddp_worker_initial_head())


def ddp_worker_initial_head() -> torch.Tensor:
    from prodml.dl.modules import build_module
    from prodml.dl.params import parse_params

    params = parse_params("torch_mlp", ddp_worker.SETTINGS)
    torch.manual_seed(params.seed)
    return build_module("torch_mlp", params, inputs=64, outputs=10).state_dict()["head.weight"]


def test_one_process_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env() == (1, 0)


def test_torchrun_command() -> None:
    command = torchrun_command(2, "prodml.pipeline.dl", ["--project", "p"])
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert command[-4:] == ["-m", "prodml.pipeline.dl", "--project", "p"]
    with pytest.raises(ConfigError, match="--nproc 0"):
        torchrun_command(0, "m", [])
