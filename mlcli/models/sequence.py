"""Pieces shared by the sequence models: padding masks, positions, the input layer.

Variable-length sequences arrive zero-padded to the longest one, with their valid ``lengths``.
Every sequence model keeps padded positions out of what real positions see: attention masks
padded keys, convolutions zero padded positions after every layer and batch norm takes its
statistics over valid positions only. So padding never changes the outputs at real positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mlcli.data.base import PAD


def valid_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(N, T)`` bool mask, True at the first ``lengths[i]`` positions of row ``i``."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def input_mask(x: torch.Tensor, lengths: torch.Tensor | None, tokens: bool) -> torch.Tensor | None:
    """Valid positions of a batch: from ``lengths`` if given, else non-PAD tokens, else None."""
    if lengths is not None:
        return valid_mask(lengths, x.shape[1])
    if tokens:
        return x != PAD
    return None


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """The Transformer paper's sine/cosine position encodings, ``(length, dim)``."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    encoding = torch.zeros(length, dim, device=device)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return encoding


class SequenceInput(nn.Module):
    """Turn a batch into ``(N, T, dim)`` vectors: token embedding or a linear map of features.

    ``in_shape`` is ``(T,)`` for token ids (``vocab_size`` given) or scalar sequences, and
    ``(T, F)`` for sequences of F-dimensional vectors.
    """

    def __init__(self, in_shape: Sequence[int], dim: int, vocab_size: int | None) -> None:
        super().__init__()
        self.tokens = vocab_size is not None
        if vocab_size is not None:
            if len(in_shape) != 1:
                raise ValueError(f"token inputs must have shape (T,), got {tuple(in_shape)}")
            self.embed: nn.Module = nn.Embedding(vocab_size, dim, padding_idx=PAD)
            self.scalar = False
        else:
            if len(in_shape) not in (1, 2):
                raise ValueError(
                    f"a sequence model needs inputs of shape (T,) or (T, F), got {tuple(in_shape)}"
                    "; for images use model=cnn"
                )
            self.scalar = len(in_shape) == 1
            self.embed = nn.Linear(1 if self.scalar else in_shape[1], dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scalar:
            x = x.unsqueeze(-1)
        return self.embed(x)


def masked_mean(h: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Mean of ``h`` over ``dim`` counting only positions where ``mask`` is True."""
    if mask is None:
        return h.mean(dim=dim)
    weights = mask.to(h.dtype).unsqueeze(-1) if dim == 1 else mask.to(h.dtype).unsqueeze(1)
    return (h * weights).sum(dim=dim) / weights.sum(dim=dim).clamp_min(1.0)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` over ``(N, C, L)`` whose statistics use valid positions only."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return super().forward(x)
        channels_last = x.transpose(1, 2)  # (N, L, C)
        out = torch.zeros_like(channels_last)
        out[mask] = super().forward(channels_last[mask])  # (M, C): torch's own batch norm
        return out.transpose(1, 2)
