"""``model.params`` of a torch estimator: one pydantic model, checked before torch is imported.

``prodml.yaml`` keeps ``model.params`` a free dict (each estimator family owns its keys); a torch
estimator's keys are validated here, and an error names the key path (``model.params.lr``) and the fix.

Example:
    >>> params = parse_params("torch_cnn", {"epochs": 5, "lr": 3e-3})
    >>> params.optimizer, params.epochs
    ('adamw', 5)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prodml.core.errors import ConfigError

__all__ = ["KINDS", "TorchParams", "is_torch", "parse_params"]

KINDS = ("torch_mlp", "torch_cnn", "torch_gru", "torch_lstm", "torch_transformer")


def is_torch(estimator: str) -> bool:
    """Whether ``model.estimator`` names a torch architecture (no torch import)."""
    return estimator in KINDS


class TorchParams(BaseModel):
    """Hyperparameters of the trainer and the architecture; every field has a working default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # the loop
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "step", "cosine", "onecycle", "plateau"] = "none"
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)
    patience: int | None = Field(None, ge=1)  # early stopping on ``monitor`` (None: run every epoch)
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    clip_grad_norm: float | None = Field(None, gt=0)
    amp: bool = False  # mixed precision, used only where the device supports it (CUDA)
    seed: int = 0
    val_fraction: float = Field(0.1, ge=0, lt=1)
    # the architecture
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = Field(0.0, ge=0, lt=1)
    channels: tuple[int, ...] = (16, 32)
    image_shape: tuple[int, int, int] | None = None  # (channels, height, width) of a flat pixel row
    d_model: int = Field(32, ge=4)
    heads: int = Field(4, ge=1)
    layers: int = Field(1, ge=1, le=12)
    max_len: int = Field(64, ge=1)
    # transfer learning
    init_from: str | None = None  # a safetensors checkpoint whose matching weights are loaded first
    freeze: tuple[str, ...] = ()  # parameter-name prefixes left untrained (e.g. "features")


def parse_params(estimator: str, params: dict[str, Any]) -> TorchParams:
    """Validate ``model.params`` for ``estimator``.

    Raises:
        ConfigError: an unknown key or a bad value; the message names ``model.params.<key>``.
    """
    if not is_torch(estimator):
        raise ConfigError(
            f"model.estimator: '{estimator}' is not a torch architecture",
            hint=f"use one of: {', '.join(KINDS)}",
        )
    try:
        parsed = TorchParams(**params)
    except ValidationError as exc:
        problems = [
            ("model.params." + ".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()
        ]
        key, msg = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(
            f"{key}: {msg}{more}",
            hint=f"{estimator} takes: {', '.join(TorchParams.model_fields)}",
            problems=problems,
        ) from exc
    if estimator == "torch_transformer" and parsed.d_model % parsed.heads:
        raise ConfigError(
            f"model.params.d_model: {parsed.d_model} is not divisible by heads={parsed.heads}",
            hint="choose d_model as a multiple of heads",
        )
    return parsed
