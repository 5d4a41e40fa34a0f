"""Checkpoints: weights as safetensors, the loop's state as a tensors-and-numbers dict.

Nothing here unpickles a module: weights load with ``safetensors``, and the optimizer / scheduler / RNG
state with ``torch.load(..., weights_only=True)``, which refuses anything but tensors and plain
containers. A checkpoint is ``<dir>/model.safetensors`` + ``<dir>/state.pt``, each written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from prodml.core.errors import ConfigError
from prodml.core.files import atomic_path

__all__ = ["STATE", "WEIGHTS", "load_checkpoint", "load_weights", "save_checkpoint"]

WEIGHTS = "model.safetensors"
STATE = "state.pt"


def save_checkpoint(directory: Path, module: nn.Module, state: dict[str, Any]) -> Path:
    """Write ``module``'s weights and the loop ``state`` into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(weights, str(tmp))
    with atomic_path(directory / STATE) as tmp:
        torch.save(state, tmp)
    return directory


def load_weights(path: Path, module: nn.Module, *, strict: bool = True) -> list[str]:
    """Load safetensors weights into ``module``; return the names loaded.

    With ``strict=False`` (transfer learning) only tensors whose name and shape match are taken; the
    rest of ``module`` (a new head) keeps its initialisation.

    Raises:
        ConfigError: the file is missing or (strict) does not fit the module.
    """
    file = path / WEIGHTS if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"checkpoint {file} does not exist", hint="train the model first, or fix the path")
    saved = load_file(str(file))
    own = module.state_dict()
    taken = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    if strict and (set(taken) != set(own) or len(taken) != len(saved)):
        missing = sorted(set(own) - set(taken))[:5]
        raise ConfigError(
            f"checkpoint {file} does not fit the model (unmatched: {', '.join(missing) or 'extra tensors'})",
            hint="resume with the same estimator and architecture parameters it was trained with",
        )
    module.load_state_dict(taken, strict=False)
    return sorted(taken)


def load_checkpoint(directory: Path, module: nn.Module) -> dict[str, Any]:
    """Load the weights into ``module`` and return the loop state (``weights_only=True``)."""
    load_weights(directory, module)
    path = directory / STATE
    if not path.is_file():
        raise ConfigError(
            f"checkpoint state {path} does not exist", hint="resume from a full checkpoint directory"
        )
    state: dict[str, Any] = torch.load(path, weights_only=True)
    return state
