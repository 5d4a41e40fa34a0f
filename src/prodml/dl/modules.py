"""The architectures behind the ``torch_*`` estimators, each a ``features`` backbone and a ``head``.

Every module maps its inputs to logits ``[N, outputs]``. The split into ``features`` and ``head`` is what
transfer learning works on: load a pretrained backbone, freeze it, train a new head.

- :class:`MLP`: ``x [N, F]`` (preprocessed tabular features).
- :class:`CNN`: ``x [N, C, H, W]``, or ``[N, C*H*W]`` flat pixel rows (reshaped inside, so a package
  with one input per pixel column and one with an image tensor share the same module).
- :class:`SequenceRNN` (GRU or LSTM) and :class:`SequenceTransformer`: a padded sequence
  ``x [N, T, F]`` with its ``lengths [N]`` (int64, ≥ 1); positions past a row's length are ignored.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from prodml.dl.params import TorchParams

__all__ = ["CNN", "MLP", "SequenceRNN", "SequenceTransformer", "build_module"]


def _dense(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """A feed-forward network over ``[N, inputs]``."""

    def __init__(self, inputs: int, outputs: int, hidden: tuple[int, ...] = (64, 32), dropout: float = 0.0):
        super().__init__()
        self.features = _dense([inputs, *hidden], dropout)
        self.head = nn.Linear(hidden[-1] if hidden else inputs, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


class CNN(nn.Module):
    """A 3×3 convolution per ``channels`` entry and a 2×2 max-pool (the backbone); dense layers (the head)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        outputs: int,
        channels: tuple[int, ...] = (16, 32),
        hidden: tuple[int, ...] = (64,),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.image_shape = image_shape
        c, h, w = image_shape
        convs: list[nn.Module] = []
        for a, b in zip((c, *channels), channels, strict=False):
            convs += [nn.Conv2d(a, b, kernel_size=3, padding=1), nn.ReLU()]
        convs += [nn.MaxPool2d(2), nn.Flatten()]
        flat = channels[-1] * (h // 2) * (w // 2)
        self.features = nn.Sequential(*convs)
        self.head = nn.Sequential(
            _dense([flat, *hidden], dropout), nn.Linear(hidden[-1] if hidden else flat, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.image_shape
        out: torch.Tensor = self.head(self.features(x.reshape(x.shape[0], c, h, w)))
        return out


def _last_valid(out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``out[i, lengths[i] - 1]`` for each row: the state after each sequence's last real step."""
    index = (lengths.clamp(min=1) - 1).reshape(-1, 1, 1).expand(-1, 1, out.shape[2])
    return out.gather(1, index).squeeze(1)


class SequenceRNN(nn.Module):
    """A GRU or LSTM over a padded sequence; the state after the last real step feeds the head."""

    def __init__(
        self,
        inputs: int,
        outputs: int,
        cell: str = "gru",
        d_model: int = 32,
        layers: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.features = rnn(
            inputs, d_model, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0
        )
        self.head = nn.Linear(d_model, outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        states, _ = self.features(x)
        out: torch.Tensor = self.head(_last_valid(states, lengths))
        return out


class _EncoderLayer(nn.Module):
    """Pre-norm self-attention and feed-forward, written out so the ONNX graph is plain matmuls."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + bias  # bias: [N, 1, 1, T]
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d)
        x = x + self.drop(self.out(attended))
        out: torch.Tensor = x + self.drop(self.ff(self.norm2(x)))
        return out


class _Encoder(nn.Module):
    def __init__(self, inputs: int, d_model: int, heads: int, layers: int, max_len: int, dropout: float):
        super().__init__()
        self.embed = nn.Linear(inputs, d_model)
        self.position = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(_EncoderLayer(d_model, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        valid = torch.arange(t, device=x.device).reshape(1, t) < lengths.clamp(min=1).reshape(-1, 1)  # [N, T]
        bias = torch.where(valid, 0.0, -1e9).to(x.dtype).reshape(x.shape[0], 1, 1, t)
        h = self.embed(x) + self.position[:, :t]
        for block in self.blocks:
            h = block(h, bias)
        weights = valid.to(h.dtype).unsqueeze(-1)
        out: torch.Tensor = (self.norm(h) * weights).sum(1) / weights.sum(1)  # mean over real steps
        return out


class SequenceTransformer(nn.Module):
    """A small Transformer encoder over a padded sequence, mean-pooled over the real steps."""

    def __init__(
        self,
        inputs: int,
        outputs: int,
        d_model: int = 32,
        heads: int = 4,
        layers: int = 1,
        max_len: int = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.features = _Encoder(inputs, d_model, heads, layers, max_len, dropout)
        self.head = nn.Linear(d_model, outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x, lengths))
        return out


def build_module(kind: str, params: TorchParams, *, inputs: int, outputs: int) -> nn.Module:
    """The module for estimator ``kind`` (``inputs``: features per row, or per step of a sequence)."""
    if kind == "torch_mlp":
        return MLP(inputs, outputs, params.hidden, params.dropout)
    if kind == "torch_cnn":
        shape = params.image_shape or _square(inputs)
        return CNN(shape, outputs, params.channels, params.hidden, params.dropout)
    if kind in ("torch_gru", "torch_lstm"):
        return SequenceRNN(
            inputs, outputs, kind.removeprefix("torch_"), params.d_model, params.layers, params.dropout
        )
    return SequenceTransformer(
        inputs, outputs, params.d_model, params.heads, params.layers, params.max_len, params.dropout
    )


def _square(inputs: int) -> tuple[int, int, int]:
    from prodml.core.errors import ConfigError

    side = math.isqrt(inputs)
    if side * side != inputs:
        raise ConfigError(
            f"model.params.image_shape: {inputs} input columns are not a square image",
            hint="set image_shape: [channels, height, width] with channels*height*width equal to the columns",
        )
    return (1, side, side)
