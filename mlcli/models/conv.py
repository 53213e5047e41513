"""Convolutional networks: ``cnn`` for C×H×W images, ``cnn1d`` for sequences."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mlcli.models.basic import activation_layer, choice
from mlcli.models.sequence import PAD, MaskedBatchNorm1d, input_mask, masked_mean

POOLING = ("max", "avg", "none")
SWITCH = ("auto", "on", "off")
GLOBAL_ABOVE = 4
"""``global_pool=auto`` averages the final maps when they are wider than this many pixels."""


def cnn(
    in_shape: Sequence[int],
    out_features: int,
    channels: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    pooling: str = "max",
    batch_norm: bool = True,
    hidden: Sequence[int] = (128,),
    dropout: float = 0.0,
    max_map_px: int = 8,
    global_pool: str = "auto",
) -> nn.Module:
    """Convolution blocks, then a classifier head.

    Each block is Conv2d (``kernel_size``, "same" padding) → (BatchNorm) → ReLU → 2×2 pooling
    (``max``/``avg``; skipped once the map is 1 pixel wide, so 8×8 and 28×28 images both work).
    With pooling, blocks (each twice as wide as the last) are added after ``channels`` until the
    maps are at most ``max_map_px`` pixels wide (0: exactly the blocks of ``channels``): a 64×64
    picture gets ``[32, 64, 128]`` from the default ``[32, 64]``, an 8×8 one stays at two.
    ``global_pool`` averages each final map to one number (``on``; ``auto``: when the maps are
    still wider than 4 pixels), so the head reads what was found, not where, and stays small;
    ``off`` flattens the maps. The head applies [Dropout → Linear → ReLU] per ``hidden`` size,
    then a final Linear. ``in_shape`` is ``(C, H, W)`` or ``(H, W)`` (one channel).
    """
    pooling, global_pool = choice(pooling), choice(global_pool)
    if len(in_shape) == 2:
        in_shape = (1, *in_shape)
    if len(in_shape) != 3:
        raise ValueError(f"cnn needs image inputs (C, H, W), got shape {tuple(in_shape)}")
    if pooling not in POOLING:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLING)}")
    if global_pool not in SWITCH:
        raise ValueError(f"unknown global_pool {global_pool!r}; choose one of {', '.join(SWITCH)}")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (same-size padding), got {kernel_size}")
    in_channels, height_px, width_px = in_shape
    widths = list(channels)
    if pooling != "none" and max_map_px > 0 and widths:
        side = min(height_px, width_px) // 2 ** len(widths)
        while side > max_map_px:
            widths.append(2 * widths[-1])
            side //= 2
    layers: list[nn.Module] = []
    for size in widths:
        layers.append(nn.Conv2d(in_channels, size, kernel_size, padding=kernel_size // 2))
        if batch_norm:
            layers.append(nn.BatchNorm2d(size))
        layers.append(nn.ReLU())
        if pooling != "none" and min(height_px, width_px) >= 2:
            layers.append(nn.MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2))
            height_px, width_px = height_px // 2, width_px // 2
        in_channels = size
    if global_pool == "on" or (global_pool == "auto" and min(height_px, width_px) > GLOBAL_ABOVE):
        layers.append(nn.AdaptiveAvgPool2d(1))
        height_px = width_px = 1
    layers.append(nn.Flatten())
    flat = in_channels * height_px * width_px
    for size in hidden:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(flat, size), nn.ReLU()]
        flat = size
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(flat, out_features))
    return ImageCNN(in_shape, layers)


class ImageCNN(nn.Sequential):
    """The ``cnn`` layers as an ``nn.Sequential`` that first gives ``(N, H, W)`` inputs their
    channel axis."""

    def __init__(self, in_shape: Sequence[int], layers: list[nn.Module]) -> None:
        super().__init__(*layers)
        self.in_shape = tuple(in_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(len(x), *self.in_shape))


class ConvSequenceNet(nn.Module):
    """A small fully convolutional network over sequences (see :func:`cnn1d`)."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        vocab_size: int | None,
        variable_length: bool,
        channels: Sequence[int],
        kernel_size: int,
        dilation_growth: int,
        batch_norm: bool,
        dropout: float,
        head: str,
        pooling: str,
        activation: str,
        embed_dim: int,
    ) -> None:
        super().__init__()
        head, pooling = choice(head), choice(pooling)
        if head not in ("sequence", "token"):
            raise ValueError(f"unknown head {head!r}; choose sequence or token")
        if pooling not in ("mean", "max"):
            raise ValueError(f"unknown pooling {pooling!r}; choose mean or max")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length padding), got {kernel_size}")
        self.tokens = vocab_size is not None
        # Time-first (N, T, F) for variable-length sequences and tokens; (N, C, L) otherwise.
        self.time_first = variable_length or self.tokens
        self.head, self.pooling = head, pooling
        if vocab_size is not None:
            self.embed: nn.Module | None = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
            width = embed_dim
        else:
            self.embed = None
            if len(in_shape) == 1:
                width = 1
            elif len(in_shape) == 2:
                width = in_shape[1] if self.time_first else in_shape[0]
            else:
                raise ValueError(
                    f"cnn1d needs inputs of shape (C, L), (L,) or (T, F), got {tuple(in_shape)}"
                )
        self.scalar = vocab_size is None and len(in_shape) == 1
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, size in enumerate(channels):
            dilation = dilation_growth**i
            padding = dilation * (kernel_size // 2)
            self.convs.append(
                nn.Conv1d(width, size, kernel_size, padding=padding, dilation=dilation)
            )
            self.norms.append(MaskedBatchNorm1d(size) if batch_norm else nn.Identity())
            width = size
        self.activation = activation_layer(activation)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = input_mask(x, lengths, self.tokens)
        if self.embed is not None:
            x = self.embed(x)
        elif self.scalar:
            x = x.unsqueeze(-1 if self.time_first else 1)
        h = x.transpose(1, 2) if self.time_first else x  # (N, C, L)
        keep = mask.unsqueeze(1).to(h.dtype) if mask is not None else None
        for conv, norm in zip(self.convs, self.norms, strict=True):
            if keep is not None:
                h = h * keep  # padded positions are zero before every convolution
            h = conv(h)
            h = norm(h, mask) if isinstance(norm, MaskedBatchNorm1d) else norm(h)
            h = self.dropout(self.activation(h))
        if self.head == "token":
            return self.out(h.transpose(1, 2))  # (N, L, out)
        if self.pooling == "mean":
            pooled = masked_mean(h, mask, dim=2)
        else:
            if mask is not None:
                h = h.masked_fill(~mask.unsqueeze(1), -math.inf)
            pooled = h.amax(dim=2)
        return self.out(pooled)


def cnn1d(
    in_shape: Sequence[int],
    out_features: int,
    vocab_size: int | None = None,
    variable_length: bool = False,
    channels: Sequence[int] = (64, 64, 64),
    kernel_size: int = 5,
    dilation_growth: int = 2,
    batch_norm: bool = True,
    dropout: float = 0.0,
    head: str = "sequence",
    pooling: str = "mean",
    activation: str = "relu",
    embed_dim: int = 32,
) -> ConvSequenceNet:
    """A fully convolutional network for sequences: the baseline to hold attention against.

    Conv1d blocks ("same" length; block ``i`` dilated by ``dilation_growth**i`` to widen the
    receptive field) → (BatchNorm over valid positions) → activation → Dropout, then
    ``head=sequence``: global ``pooling`` (mean|max) over valid positions and a Linear layer, or
    ``head=token``: a Linear layer at every position (sequence labelling).

    Inputs: fixed-length ``(C, L)`` as ``nn.Conv1d`` reads them (e.g. MNIST-1D's ``(1, 40)``) or
    ``(L,)``; variable-length sequences (``variable_length``) as ``(T, F)`` with their lengths;
    token ids ``(T,)`` (``vocab_size``) through an ``embed_dim``-wide embedding.
    """
    return ConvSequenceNet(
        in_shape,
        out_features,
        vocab_size,
        variable_length,
        channels,
        kernel_size,
        dilation_growth,
        batch_norm,
        dropout,
        head,
        pooling,
        activation,
        embed_dim,
    )
