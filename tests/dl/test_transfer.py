"""Transfer: a CNN pretrained on digits 0–4, fine-tuned on 5–9 with 2 labels a class, beats scratch."""

import numpy as np
import torch

from prodml.dl.modules import build_module
from prodml.dl.params import parse_params
from prodml.dl.transfer import new_head, transfer_gain

Digits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def few_per_class(X: np.ndarray, y: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
    return X[rows], y[rows]


def test_transfer_beats_scratch_at_equal_data(digits: Digits) -> None:
    Xtr, Xte, ytr, yte = digits
    low, high = ytr < 5, yte >= 5
    target_train = few_per_class(Xtr[~low], ytr[~low], 2)
    params = parse_params("torch_cnn", {"epochs": 20, "lr": 3e-3, "batch_size": 8, "freeze": ["features"]})
    result = transfer_gain(
        "torch_cnn", params, (Xtr[low], ytr[low]), target_train, (Xte[high], yte[high]), source_epochs=6
    )
    assert result.target_rows == 10
    assert result.source_accuracy > 0.97
    assert result.gain > 0.05, result  # seen here: 0.848 vs 0.719 from scratch
    assert result.transfer > 0.8


def test_new_head_freezes_the_backbone_only() -> None:
    params = parse_params("torch_mlp", {})
    module = build_module("torch_mlp", params, inputs=8, outputs=5)
    tuned = new_head(module, 3, freeze=True)
    assert tuned.head.out_features == 3
    assert not any(p.requires_grad for p in tuned.features.parameters())
    assert all(p.requires_grad for p in tuned.head.parameters())
    x = torch.rand(2, 8)
    torch.testing.assert_close(tuned.features(x), module.features(x))  # the backbone was copied


def test_new_head_of_a_cnn_reinitialises_the_dense_layers() -> None:
    params = parse_params("torch_cnn", {})
    module = build_module("torch_cnn", params, inputs=64, outputs=5)
    tuned = new_head(module, 7)
    assert tuned.head[-1].out_features == 7
    assert not torch.equal(tuned.head[0][0].weight, module.head[0][0].weight)
    assert all(p.requires_grad for p in tuned.parameters())
    assert tuned(torch.rand(3, 64)).shape == (3, 7)
