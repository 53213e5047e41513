"""Schemas of the ``augment`` group (training pictures only; :mod:`mlcli.data.augment`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlcli.config.schemas.base import bound


@dataclass
class NoAugmentSchema:
    """No augmentation (the default): nothing is built."""

    _target_: str = "mlcli.data.augment.none"


@dataclass
class FlipCropSchema:
    """Horizontal flip, then a random crop of the padded picture."""

    _target_: str = "mlcli.data.augment.flip_crop"
    flip: float = bound(0.5, ge=0.0, le=1.0)
    padding: int = bound(4, ge=0)


@dataclass
class StandardAugmentSchema:
    """Random resized crop, flip, small rotation, colour jitter."""

    _target_: str = "mlcli.data.augment.standard"
    scale: list[float] = field(default_factory=lambda: [0.6, 1.0])
    flip: float = bound(0.5, ge=0.0, le=1.0)
    degrees: float = bound(15.0, ge=0.0, le=180.0)
    jitter: float = bound(0.2, ge=0.0, le=1.0)
    hue: float = bound(0.05, ge=0.0, le=0.5)


@dataclass
class RandAugmentSchema:
    """RandAugment, then a flip."""

    _target_: str = "mlcli.data.augment.randaugment"
    num_ops: int = bound(2, ge=1, le=14)
    magnitude: int = bound(9, ge=0, le=30)
    flip: float = bound(0.5, ge=0.0, le=1.0)


SCHEMAS: dict[str, type] = {
    "none": NoAugmentSchema,
    "flip_crop": FlipCropSchema,
    "standard": StandardAugmentSchema,
    "randaugment": RandAugmentSchema,
}
