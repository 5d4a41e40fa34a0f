"""Transfer learning: a pretrained backbone, frozen, with a new head for another task.

Every architecture is ``features`` (the backbone) + ``head``; :func:`new_head` keeps the first and
replaces the second, and :func:`transfer_gain` measures what that buys against training from scratch on
the same (few) rows. In ``prodml.yaml`` the same is ``model.params.init_from`` (a safetensors
checkpoint; tensors whose name and shape match are loaded) with ``freeze: [features]``.

Example:
    >>> result = transfer_gain("torch_cnn", params, source, target_train, target_test)  # doctest: +SKIP
    >>> result.transfer, result.scratch  # doctest: +SKIP
    (0.93, 0.78)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from prodml.dl.modules import build_module
from prodml.dl.params import TorchParams
from prodml.dl.trainer import Trainer

__all__ = ["TransferResult", "new_head", "transfer_gain"]

Split = tuple[np.ndarray, np.ndarray]


def new_head(pretrained: nn.Module, outputs: int, *, freeze: bool = False) -> nn.Module:
    """A copy of ``pretrained`` with a freshly initialised ``head`` ending in ``outputs``.

    ``freeze`` fixes the whole backbone (the trainer also freezes what ``params.freeze`` names).
    """
    module = copy.deepcopy(pretrained)
    head, features = module.get_submodule("head"), module.get_submodule("features")
    if isinstance(head, nn.Linear):
        module.head = nn.Linear(head.in_features, outputs)
    elif isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
        head[-1] = nn.Linear(head[-1].in_features, outputs)
        for sub in head.modules():
            if isinstance(sub, nn.Linear):
                sub.reset_parameters()
    else:  # pragma: no cover - every prodml architecture ends in Linear
        raise TypeError(f"expected a head ending in Linear, found {type(head).__name__}")
    for p in features.parameters():
        p.requires_grad_(not freeze)
    return module


@dataclass(frozen=True)
class TransferResult:
    """Held-out accuracy on the target task: fine-tuned from the source task vs trained from scratch."""

    transfer: float
    scratch: float
    source_accuracy: float
    target_rows: int

    @property
    def gain(self) -> float:
        return self.transfer - self.scratch


def _classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes = np.unique(y)
    return classes, np.searchsorted(classes, y)


def _accuracy(module: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    module.eval()
    with torch.no_grad():
        return float((module(torch.from_numpy(X)).argmax(1).numpy() == y).mean())


def transfer_gain(
    kind: str,
    params: TorchParams,
    source: Split,
    target_train: Split,
    target_test: Split,
    *,
    source_epochs: int | None = None,
) -> TransferResult:
    """Pretrain on ``source``, fine-tune a new head on ``target_train``; the same from scratch.

    Both target models get the same rows, epochs and seed; labels are re-indexed per task.
    """
    Xs, ys = source
    _, ys_i = _classes(ys)
    classes, yt_i = _classes(target_train[1])
    yv_i = np.searchsorted(classes, target_test[1])
    inputs = Xs.shape[1]
    torch.manual_seed(params.seed)
    backbone = build_module(kind, params, inputs=inputs, outputs=int(ys_i.max()) + 1)
    pretrain = params.model_copy(update={"epochs": source_epochs or params.epochs, "freeze": ()})
    Trainer(backbone, pretrain).fit(TensorDataset(torch.from_numpy(Xs), torch.from_numpy(ys_i)))
    source_accuracy = _accuracy(backbone, Xs, ys_i)

    target = TensorDataset(torch.from_numpy(target_train[0]), torch.from_numpy(yt_i))
    torch.manual_seed(params.seed)
    tuned = new_head(backbone, len(classes))
    Trainer(tuned, params).fit(target)
    torch.manual_seed(params.seed)
    scratch = build_module(kind, params, inputs=inputs, outputs=len(classes))
    Trainer(scratch, params.model_copy(update={"freeze": ()})).fit(target)
    return TransferResult(
        transfer=_accuracy(tuned, target_test[0], yv_i),
        scratch=_accuracy(scratch, target_test[0], yv_i),
        source_accuracy=source_accuracy,
        target_rows=len(yt_i),
    )
