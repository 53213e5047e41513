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

    Needed with the pins of ``constraints.txt``: torch 2.13.0 is the CPU build (``+cpu``, the
    wheel on the machine's disk) and torchvision 0.28.0's only wheel on the package index is
    the CUDA build, whose ``_C.so`` links ``libtorch_cuda.so`` and ``libc10_cuda.so``. It
    cannot load next to a CPU torch, and ``import torchvision`` then fails with ``RuntimeError:
    operator torchvision::nms does not exist`` (it registers a fake kernel for an operator that
    was never defined). mlcli uses none of those operators (detection only): their schemas are
    declared, so the transforms and models import. Nothing else changes; an intact torchvision
    (a CUDA torch with the CUDA wheel, or a CPU torch with a CPU torchvision) imports as it is,
    and any other import error is raised as it was.
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
    """A transform of a training batch: per picture (``transform`` called on each ``(C, H, W)``
    picture), or ``batched`` (called once on the whole ``(B, C, H, W)`` batch, drawing each
    picture's own parameters in tensor operations: no Python loop over the pictures)."""

    def __init__(
        self, name: str, transform: Callable[[torch.Tensor], torch.Tensor], batched: bool = False
    ) -> None:
        self.name = name
        self.transform = transform
        self.batched = batched

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Each picture of ``batch`` ``(B, C, H, W)`` transformed on its own."""
        if batch.ndim != 4:
            raise ValueError(
                f"augment={self.name} transforms pictures (B, C, H, W), got a batch of shape "
                f"{tuple(batch.shape)}; use augment=none for this dataset"
            )
        if self.batched:
            return self.transform(batch)
        return torch.stack([self.transform(picture) for picture in batch])

    def __repr__(self) -> str:
        return f"Augment({self.name})"


def _pair(values: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    return (low, high)


def flip_crop(flip: float = 0.5, padding: int = 4) -> Augment:
    """Horizontal flip (probability ``flip``), then a random crop of the picture padded by
    ``padding`` pixels on each side (reflected borders), as torchvision's ``RandomHorizontalFlip``
    and ``RandomCrop(padding_mode="reflect")`` do, on the whole batch at once: each picture's
    flip and offsets are drawn together (on the CPU, so a GPU run draws the same ones)."""

    def transform(batch: torch.Tensor) -> torch.Tensor:
        n, _, height, width = batch.shape
        flipped = torch.rand(n) < flip
        out = torch.where(flipped.to(batch.device)[:, None, None, None], batch.flip(-1), batch)
        if padding <= 0:
            return out
        pad = min(padding, height - 1, width - 1)  # reflection needs a border inside the picture
        padded = torch.nn.functional.pad(out, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,)).to(batch.device)
        dx = torch.randint(0, 2 * pad + 1, (n,)).to(batch.device)
        rows = dy[:, None] + torch.arange(height, device=batch.device)  # (B, H)
        cols = dx[:, None] + torch.arange(width, device=batch.device)  # (B, W)
        # Each picture's window: rows first (B, C, H, W + 2 pad), then columns.
        index = rows[:, None, :, None].expand(-1, padded.shape[1], -1, padded.shape[3])
        out = padded.gather(2, index)
        return out.gather(3, cols[:, None, None, :].expand(-1, out.shape[1], height, -1))

    return Augment("flip_crop", transform, batched=True)


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
