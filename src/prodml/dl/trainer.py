"""The training loop: one :class:`Trainer` for every architecture, on one process or under DDP.

Per epoch: shuffle (a sampler seeded with ``seed + epoch``, so a resumed run and a distributed run see
the same order as an uninterrupted single process), step the optimizer per batch (gradient clipping,
mixed precision on CUDA), evaluate on the validation set, step the scheduler, call ``on_epoch``, save a
checkpoint, stop early when ``monitor`` has not improved for ``patience`` epochs (the best weights are
restored). Under ``torch.distributed`` (torchrun) the module is wrapped in DDP and each rank takes
``batch_size / world_size`` rows of every global batch, so N processes follow one process's trajectory.

Example:
    >>> trainer = Trainer(module, params, task="classification")  # doctest: +SKIP
    >>> history = trainer.fit(train_set, val_set)  # doctest: +SKIP
    >>> history.epochs[-1]["val_accuracy"]  # doctest: +SKIP
    0.98
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from prodml.core.errors import ConfigError
from prodml.dl.checkpoint import load_checkpoint, save_checkpoint
from prodml.dl.params import TorchParams

__all__ = ["History", "Trainer", "seed_everything"]

logger = logging.getLogger(__name__)
Objective = Literal["classification", "regression"]
Batch = tuple[torch.Tensor, ...]


def seed_everything(seed: int) -> None:
    """Seed torch's generators (deterministic kernels are asked for during :meth:`Trainer.fit` only)."""
    torch.manual_seed(seed)


@dataclass
class History:
    """One dict per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``, ``lr``, samples/s.

    ``best_epoch`` is the epoch whose weights early stopping restored.
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int = 0

    def curve(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs if key in e]


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class Trainer:
    """Fits ``module`` on datasets of tensor tuples ``(*inputs, target)``.

    Args:
        module: logits ``[N, classes]`` (classification) or ``[N, 1]`` (regression) from ``*inputs``.
        params: the validated ``model.params``.
        task: ``classification`` (cross-entropy) or ``regression`` (mean squared error).
        device: ``cpu`` by default; ``cuda`` when asked and present.
        checkpoint_dir: where the last epoch's checkpoint is written (rank 0), if anywhere.
        on_epoch: called with each epoch's record (rank 0 only).
        on_batch: called with ``(epoch, batch, batches)`` (rank 0 only), e.g. to drive a progress bar.
    """

    def __init__(
        self,
        module: nn.Module,
        params: TorchParams,
        *,
        task: Objective = "classification",
        device: str | None = None,
        checkpoint_dir: Path | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        on_batch: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.params = params
        self.task = task
        self.device = torch.device(device or "cpu")
        self.module = module.to(self.device)
        self.checkpoint_dir = checkpoint_dir
        self.world, self.rank = _world()
        self.on_epoch = on_epoch if self.rank == 0 else None
        self.on_batch = on_batch if self.rank == 0 else None
        self.amp = params.amp and self.device.type == "cuda"
        if params.amp and not self.amp:
            logger.info(
                "mixed precision asked for but %s does not support it: training in float32", self.device
            )
        if params.batch_size % self.world:
            raise ConfigError(
                f"model.params.batch_size: {params.batch_size} does not split over {self.world} processes",
                hint=f"use a multiple of {self.world} (the batch size is the global batch)",
            )
        for name, p in module.named_parameters():
            if any(name.startswith(prefix) for prefix in params.freeze):
                p.requires_grad_(False)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return nn.functional.cross_entropy(logits, y)
        return nn.functional.mse_loss(logits.reshape(-1), y.reshape(-1).to(logits.dtype))

    def _optimizer(self) -> torch.optim.Optimizer:
        p = self.params
        trainable = [x for x in self.module.parameters() if x.requires_grad]
        if p.optimizer == "sgd":
            return torch.optim.SGD(trainable, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        cls = torch.optim.AdamW if p.optimizer == "adamw" else torch.optim.Adam
        return cls(trainable, lr=p.lr, weight_decay=p.weight_decay)

    def _scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
        p, lr = self.params, torch.optim.lr_scheduler
        if p.scheduler == "step":
            return lr.StepLR(optimizer, step_size=p.step_size, gamma=p.gamma)
        if p.scheduler == "cosine":
            return lr.CosineAnnealingLR(optimizer, T_max=p.epochs)
        if p.scheduler == "onecycle":
            return lr.OneCycleLR(optimizer, max_lr=p.lr, total_steps=p.epochs * steps_per_epoch)
        if p.scheduler == "plateau":
            return lr.ReduceLROnPlateau(optimizer, factor=p.gamma, patience=max(1, (p.patience or 4) // 2))
        return None

    def evaluate(self, data: Dataset[Batch]) -> dict[str, float]:
        """Mean loss (and accuracy for classification) over ``data``, in eval mode."""
        self.module.eval()
        total, correct, count = 0.0, 0, 0
        loader = DataLoader(data, batch_size=max(self.params.batch_size, 256), shuffle=False)
        with torch.no_grad():
            for batch in loader:
                *x, y = (t.to(self.device) for t in batch)
                logits = self.module(*x)
                total += float(self._loss(logits, y)) * len(y)
                if self.task == "classification":
                    correct += int((logits.argmax(1) == y).sum())
                count += len(y)
        out = {"val_loss": total / max(count, 1)}
        if self.task == "classification":
            out["val_accuracy"] = correct / max(count, 1)
        return out

    def fit(
        self, train: Dataset[Batch], val: Dataset[Batch] | None = None, *, resume: Path | None = None
    ) -> History:
        """Train for ``params.epochs`` (fewer when stopping early); ``resume`` continues a checkpoint."""
        deterministic = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            return self._fit(train, val, resume)
        finally:  # the process's setting is the caller's
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)

    def _fit(self, train: Dataset[Batch], val: Dataset[Batch] | None, resume: Path | None) -> History:
        p = self.params
        seed_everything(p.seed)
        sampler: DistributedSampler[Batch] = DistributedSampler(
            train,
            num_replicas=self.world,
            rank=self.rank,
            shuffle=True,
            seed=p.seed,
            drop_last=self.world > 1,
        )
        loader = DataLoader(train, batch_size=p.batch_size // self.world, sampler=sampler)
        model: nn.Module = self.module
        if self.world > 1:
            model = nn.parallel.DistributedDataParallel(self.module)
        optimizer = self._optimizer()
        scheduler = self._scheduler(optimizer, len(loader))
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        history, start = History(), 0
        best, best_state, stale = math.inf, copy.deepcopy(self.module.state_dict()), 0
        if resume is not None:
            state = load_checkpoint(resume, self.module)
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            history.epochs = [
                dict(zip(state["history_keys"], row.tolist(), strict=True)) for row in state["history"]
            ]
            start, best, stale = int(state["epoch"]), float(state["best"]), int(state["stale"])
            history.best_epoch = int(state["best_epoch"])
            best_state = state["best_weights"]
        sign = -1.0 if p.monitor == "val_accuracy" else 1.0
        for epoch in range(start, p.epochs):
            sampler.set_epoch(epoch)
            model.train()
            t0, seen, total = time.perf_counter(), 0, 0.0
            for i, batch in enumerate(loader):
                *x, y = (t.to(self.device) for t in batch)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(self.device.type, enabled=self.amp):
                    loss = self._loss(model(*x), y)
                scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
                if p.clip_grad_norm is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(self.module.parameters(), p.clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                if p.scheduler == "onecycle":
                    scheduler.step()
                total += float(loss.detach()) * len(y)
                seen += len(y)
                if self.on_batch is not None:
                    self.on_batch(epoch, i + 1, len(loader))
            if self.world > 1:  # the epoch's loss over every rank's rows, as one process would see it
                sums = torch.tensor([total, float(seen)], dtype=torch.float64)
                torch.distributed.all_reduce(sums)
                total, seen = float(sums[0]), int(sums[1])
            record = {
                "epoch": float(epoch + 1),
                "train_loss": total / max(seen, 1),
                "lr": float(optimizer.param_groups[0]["lr"]),
                "samples_per_s": seen / max(time.perf_counter() - t0, 1e-9),
            }
            if val is not None and len(val):  # type: ignore[arg-type]
                record |= self.evaluate(val)
            history.epochs.append(record)
            score = sign * record.get(p.monitor, record["train_loss"])
            if scheduler is not None and p.scheduler == "plateau":
                scheduler.step(record.get("val_loss", record["train_loss"]))
            elif scheduler is not None and p.scheduler != "onecycle":
                scheduler.step()
            if score < best - 1e-6:
                best, stale, history.best_epoch = score, 0, epoch + 1
                best_state = copy.deepcopy(self.module.state_dict())
            else:
                stale += 1
            if self.on_epoch is not None:
                self.on_epoch(record)
            if self.checkpoint_dir is not None and self.rank == 0:
                self._save(epoch + 1, optimizer, scheduler, history, (best, best_state), stale)
            if p.patience is not None and stale >= p.patience:
                history.stopped_early = True
                break
        if p.patience is not None:
            self.module.load_state_dict(best_state)
        self.module.eval()
        return history

    def _save(
        self,
        epoch: int,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        history: History,
        best: tuple[float, dict[str, torch.Tensor]],
        stale: int,
    ) -> None:
        assert self.checkpoint_dir is not None
        keys = list(history.epochs[0])
        state = {
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "rng": torch.get_rng_state(),
            "history_keys": keys,
            "history": torch.tensor(
                [[e.get(k, math.nan) for k in keys] for e in history.epochs], dtype=torch.float64
            ),
            "best": best[0],
            "best_weights": best[1],
            "stale": stale,
            "best_epoch": history.best_epoch,
        }
        save_checkpoint(self.checkpoint_dir, self.module, state)
