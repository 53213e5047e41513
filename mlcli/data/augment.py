"""Augmentation of training pictures (the ``augment`` config group), on torchvision's transforms v2.

A builder returns an :class:`Augment`: called on a batch of pictures ``(B, C, H, W)`` float in
[0, 1] (before the fold's normalization), it transforms every picture on its own, with its own
random parameters drawn from torch's global generator (seeded per fold, so a run repeats
exactly). Only training batches are augmented (:func:`mlcli.engine.loop.fit`); validation and
test pictures never are. ``augment=none`` builds nothing: the loop's fast path is unchanged.

- ``flip_crop``: horizontal flip, then a random crop of the picture padded by ``padding`` pixels;
- ``standard``: random resized crop (``scale``), flip, a small rotation (``degrees``), colour
  jitter (brightness, contrast, saturation ``jitter``, hue ``hue``);
- ``randaugment``: RandAugment (``num_ops`` operations of ``magnitude`` out of 31), then a flip.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch

_DEFINITIONS: list[Any] = []  # keeps the library defined by _torchvision() alive


def torchvision() -> ModuleType:
    """Import torchvision, also where its compiled operators cannot load.

    A torchvision wheel built for another torch variant (the CUDA wheel next to a CPU torch)
    cannot load its C++ operators; torchvision 0.28 then fails at import, registering a fake
    kernel for its ``nms`` operator that was never defined. mlcli uses none of those operators
    (detection only): their schemas are declared, so the transforms and models import. Nothing
    else changes; an intact torchvision imports as it is.
    """
    try:
        import torchvision as module
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _DEFINITIONS.append(library)
        import torchvision as module
    import torchvision.models
    import torchvision.transforms.v2

    return module


NONE = "mlcli.data.augment.none"
"""The target of ``augment=none``."""


def none() -> None:
    """No augmentation (``augment=none``): the loop's fast path, nothing built."""
    return None


def augments(node: Any) -> bool:
    """Whether an ``augment`` config node augments anything (not absent, not ``none``)."""
    return node is not None and node.get("_target_") not in (None, NONE)


class Augment:
    """A per-picture transform applied to each picture of a training batch."""

    def __init__(self, name: str, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.name = name
        self.transform = transform

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Each picture of ``batch`` ``(B, C, H, W)`` transformed on its own."""
        if batch.ndim != 4:
            raise ValueError(
                f"augment={self.name} transforms pictures (B, C, H, W), got a batch of shape "
                f"{tuple(batch.shape)}; use augment=none for this dataset"
            )
        return torch.stack([self.transform(picture) for picture in batch])

    def __repr__(self) -> str:
        return f"Augment({self.name})"


def _pair(values: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    return (low, high)


def flip_crop(flip: float = 0.5, padding: int = 4) -> Augment:
    """Horizontal flip (probability ``flip``), then a random crop of the picture padded by
    ``padding`` pixels on each side (reflected borders)."""
    v2 = torchvision().transforms.v2

    def transform(picture: torch.Tensor) -> torch.Tensor:
        size = list(picture.shape[-2:])
        return v2.Compose(
            [
                v2.RandomHorizontalFlip(flip),
                v2.RandomCrop(size, padding=padding, padding_mode="reflect"),
            ]
        )(picture)

    return Augment("flip_crop", transform)


def standard(
    scale: Sequence[float] = (0.6, 1.0),
    flip: float = 0.5,
    degrees: float = 15.0,
    jitter: float = 0.2,
    hue: float = 0.05,
) -> Augment:
    """Random resized crop (area ``scale``), flip, rotation up to ``degrees``, colour jitter
    (brightness, contrast and saturation by ``jitter``, hue by ``hue``)."""
    v2 = torchvision().transforms.v2
    cache: dict[tuple[int, ...], Any] = {}

    def transform(picture: torch.Tensor) -> torch.Tensor:
        size = tuple(picture.shape[-2:])
        if size not in cache:
            colour = (
                [v2.ColorJitter(jitter, jitter, jitter, hue)]
                if picture.shape[0] == 3
                else [v2.ColorJitter(jitter, jitter)]
            )
            cache[size] = v2.Compose(
                [
                    v2.RandomResizedCrop(list(size), scale=_pair(scale), antialias=True),
                    v2.RandomHorizontalFlip(flip),
                    v2.RandomRotation(degrees),
                    *colour,
                ]
            )
        return cache[size](picture)

    return Augment("standard", transform)


def randaugment(num_ops: int = 2, magnitude: int = 9, flip: float = 0.5) -> Augment:
    """RandAugment (``num_ops`` random operations of strength ``magnitude`` of 31), then a flip;
    computed on 8-bit pictures, as RandAugment's operations are defined."""
    v2 = torchvision().transforms.v2
    pipeline = v2.Compose([v2.RandAugment(num_ops, magnitude), v2.RandomHorizontalFlip(flip)])

    def transform(picture: torch.Tensor) -> torch.Tensor:
        eight_bit = (picture.clamp(0, 1) * 255).round().to(torch.uint8)
        return pipeline(eight_bit).to(picture.dtype) / 255.0

    return Augment("randaugment", transform)
