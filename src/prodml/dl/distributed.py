"""Distributed data parallel: the process group under ``torchrun``, and launching ``torchrun`` itself.

``prodml train --nproc N`` re-runs the training entry under ``torchrun --standalone --nproc_per_node N``.
Each process calls :func:`init_from_env` (gloo on CPU, NCCL when every rank has a GPU), the
:class:`~prodml.dl.trainer.Trainer` wraps the module in DDP and splits each global batch across the
ranks, and only rank 0 logs, exports and registers. Without torchrun's environment everything runs as
one process, unchanged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence

import torch

from prodml.core.errors import ConfigError

__all__ = ["init_from_env", "launch", "shutdown", "torchrun_command"]

logger = logging.getLogger(__name__)


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; return ``(world_size, rank)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world else "gloo"
        torch.distributed.init_process_group(backend)
        logger.info("rank %d of %d joined (%s)", torch.distributed.get_rank(), world, backend)
    return torch.distributed.get_world_size(), torch.distributed.get_rank()


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def torchrun_command(nproc: int, module: str, args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m module args…``."""
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} is not a process count", hint="use 1 or more")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *args,
    ]


def launch(nproc: int, module: str, args: Sequence[str], *, env: dict[str, str] | None = None) -> int:
    """Run ``module`` under torchrun with ``nproc`` processes; return torchrun's exit code."""
    command = torchrun_command(nproc, module, args)
    environ = os.environ | (env or {})
    environ.setdefault("OMP_NUM_THREADS", "1")  # N processes share the cores
    return subprocess.run(command, env=environ, check=False).returncode
