"""torchvision's ResNet-18/34, trained from scratch: never with pretrained weights.

The course forbids pretrained weights and mlcli downloads nothing at run time, so the builder
calls torchvision's constructors with ``weights=None`` and offers no way to ask for weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mlcli.config import enum_name
from mlcli.data.augment import torchvision

DEPTHS = (18, 34)
STEMS = ("auto", "imagenet", "small")
SMALL_BELOW = 96
"""``stem=auto``: pictures smaller than this (in their shorter side) get the small stem."""


def resnet(
    in_shape: Sequence[int],
    out_features: int,
    depth: int = 18,
    stem: str = "auto",
    batch_norm: bool = True,
    dropout: float = 0.0,
) -> nn.Module:
    """ResNet-``depth`` (18 or 34) for ``(C, H, W)`` pictures and ``out_features`` classes.

    ``stem=imagenet`` keeps torchvision's 7×7 stride-2 convolution and max pooling; ``small``
    (CIFAR-style) is a 3×3 stride-1 convolution without pooling, which keeps the detail of small
    pictures; ``auto`` picks ``small`` below 96 pixels. ``batch_norm=false`` replaces every batch
    norm by an identity; ``dropout`` is applied before the final linear layer.
    """
    stem = enum_name(stem)
    if len(in_shape) == 2:
        in_shape = (1, *in_shape)
    if len(in_shape) != 3:
        raise ValueError(f"resnet needs pictures (C, H, W), got shape {tuple(in_shape)}")
    if depth not in DEPTHS:
        raise ValueError(f"resnet depth must be one of {DEPTHS}, got {depth}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    channels, height, width = (int(d) for d in in_shape)
    models = torchvision().models
    build = models.resnet18 if depth == 18 else models.resnet34
    norm = nn.BatchNorm2d if batch_norm else (lambda _channels: nn.Identity())
    net = build(weights=None, num_classes=out_features, norm_layer=norm)
    small = stem == "small" or (stem == "auto" and min(height, width) < SMALL_BELOW)
    if small:
        net.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif channels != 3:
        net.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
    if dropout > 0:
        net.fc = nn.Sequential(nn.Dropout(dropout), net.fc)
    return net
