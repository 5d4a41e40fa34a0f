"""The training loop on real data: accuracy, resume, early stopping, schedulers, freezing, checkpoints."""

from pathlib import Path

import numpy as np
import pytest
import torch

from prodml.core.errors import ConfigError
from prodml.dl.checkpoint import STATE, WEIGHTS, load_weights
from prodml.dl.modules import build_module
from prodml.dl.params import parse_params
from prodml.dl.trainer import Trainer
from tests.dl.conftest import tensors

Digits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def test_cnn_reaches_97_percent_on_held_out_digits(digits: Digits) -> None:
    Xtr, Xte, ytr, yte = digits
    params = parse_params("torch_cnn", {"epochs": 10, "lr": 3e-3, "batch_size": 32, "scheduler": "cosine"})
    torch.manual_seed(params.seed)
    module = build_module("torch_cnn", params, inputs=64, outputs=10)
    seen: list[dict[str, float]] = []
    history = Trainer(module, params, on_epoch=seen.append).fit(tensors(Xtr, ytr), tensors(Xte, yte))
    assert len(history.epochs) == 10
    assert seen == history.epochs
    with torch.no_grad():
        accuracy = float((module(torch.from_numpy(Xte)).argmax(1).numpy() == yte).mean())
    assert accuracy >= 0.97
    assert history.epochs[-1]["val_accuracy"] == pytest.approx(accuracy)
    assert history.curve("train_loss")[-1] < history.curve("train_loss")[0] / 5
    assert history.epochs[-1]["lr"] < params.lr  # the cosine schedule decayed it


def _mlp(params_: dict[str, object]):  # type: ignore[no-untyped-def]
    params = parse_params("torch_mlp", params_)
    torch.manual_seed(params.seed)
    return build_module("torch_mlp", params, inputs=64, outputs=10), params


def test_resume_continues_the_same_loss_curve(digits: Digits, tmp_path: Path) -> None:
    Xtr, Xte, ytr, yte = digits
    settings = {"epochs": 4, "dropout": 0.2, "scheduler": "step", "step_size": 1, "gamma": 0.5}
    straight, params = _mlp(settings)
    full = Trainer(straight, params).fit(tensors(Xtr, ytr), tensors(Xte, yte))

    first, params2 = _mlp(settings | {"epochs": 2})
    Trainer(first, params2, checkpoint_dir=tmp_path / "ckpt").fit(tensors(Xtr, ytr), tensors(Xte, yte))
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {WEIGHTS, STATE}
    resumed, params = _mlp(settings)  # a fresh process: new module, weights from the checkpoint
    history = Trainer(resumed, params).fit(tensors(Xtr, ytr), tensors(Xte, yte), resume=tmp_path / "ckpt")
    assert len(history.epochs) == 4
    np.testing.assert_allclose(history.curve("train_loss"), full.curve("train_loss"), rtol=1e-6)
    np.testing.assert_allclose(history.curve("lr"), full.curve("lr"))
    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_early_stopping_restores_the_best_epoch(digits: Digits) -> None:
    Xtr, Xte, ytr, yte = digits
    module, params = _mlp({"epochs": 60, "lr": 0.05, "patience": 2, "monitor": "val_accuracy"})
    history = Trainer(module, params).fit(tensors(Xtr, ytr), tensors(Xte, yte))
    assert history.stopped_early
    assert len(history.epochs) == history.best_epoch + 2
    best = max(history.curve("val_accuracy"))
    assert Trainer(module, params).evaluate(tensors(Xte, yte))["val_accuracy"] == pytest.approx(best)


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "sgd", "lr": 0.2, "scheduler": "onecycle"},
        {"optimizer": "adam", "lr": 5e-3, "scheduler": "plateau", "clip_grad_norm": 0.5},
        {"optimizer": "adamw", "lr": 5e-3, "weight_decay": 0.01, "amp": True},  # amp: float32 on a CPU
    ],
)
def test_optimizers_and_schedulers_learn(digits: Digits, settings: dict[str, object]) -> None:
    Xtr, Xte, ytr, yte = digits
    module, params = _mlp({"epochs": 4} | settings)
    history = Trainer(module, params).fit(tensors(Xtr, ytr), tensors(Xte, yte))
    assert history.epochs[-1]["val_accuracy"] > 0.85


def test_frozen_backbone_stays_put(digits: Digits) -> None:
    Xtr, _, ytr, _ = digits
    module, params = _mlp({"epochs": 1, "freeze": ["features"]})
    before = {k: v.clone() for k, v in module.state_dict().items()}
    Trainer(module, params).fit(tensors(Xtr, ytr))
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("features"))
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_checkpoint_of_another_architecture_is_refused(digits: Digits, tmp_path: Path) -> None:
    Xtr, _, ytr, _ = digits
    module, params = _mlp({"epochs": 1})
    Trainer(module, params, checkpoint_dir=tmp_path).fit(tensors(Xtr, ytr))
    other, _ = _mlp({"hidden": [16]})
    with pytest.raises(ConfigError, match="does not fit the model"):
        load_weights(tmp_path, other)
    assert load_weights(tmp_path, other, strict=False) == ["head.bias"]  # the one tensor of equal shape
    with pytest.raises(ConfigError, match="does not exist"):
        load_weights(tmp_path / "nowhere", other)


def test_resume_restores_the_best_epoch_from_before_the_checkpoint(digits: Digits, tmp_path: Path) -> None:
    Xtr, Xte, ytr, yte = digits
    settings = {"epochs": 3, "lr": 0.5, "optimizer": "sgd", "momentum": 0.0, "patience": 50}
    first, params = _mlp(settings)
    history = Trainer(first, params, checkpoint_dir=tmp_path).fit(tensors(Xtr, ytr), tensors(Xte, yte))
    best_epoch = history.best_epoch
    resumed, params = _mlp(settings | {"epochs": 5})
    more = Trainer(resumed, params).fit(tensors(Xtr, ytr), tensors(Xte, yte), resume=tmp_path)
    losses = more.curve("val_loss")
    assert more.best_epoch == int(np.argmin(losses)) + 1
    assert more.best_epoch >= best_epoch
    final = Trainer(resumed, params).evaluate(tensors(Xte, yte))["val_loss"]
    assert final == pytest.approx(min(losses), rel=1e-5)  # the best weights, wherever they came from


def test_fit_leaves_the_determinism_setting_as_it_found_it(digits: Digits) -> None:
    Xtr, _, ytr, _ = digits
    module, params = _mlp({"epochs": 1})
    assert not torch.are_deterministic_algorithms_enabled()
    Trainer(module, params).fit(tensors(Xtr[:64], ytr[:64]))
    assert not torch.are_deterministic_algorithms_enabled()
