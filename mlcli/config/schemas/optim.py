"""Schemas of the ``optim`` group."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlcli.config.schemas.base import bound


@dataclass
class SGDSchema:
    """Stochastic gradient descent with optional (Nesterov) momentum."""

    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = bound(0.05, gt=0.0)
    momentum: float = bound(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = bound(0.0, ge=0.0)


@dataclass
class AdamSchema:
    """Adam: momentum plus a per-parameter RMS-scaled step."""

    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = bound(1e-2, gt=0.0)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = bound(1e-8, gt=0.0)
    weight_decay: float = bound(0.0, ge=0.0)


@dataclass
class AdamWSchema(AdamSchema):
    """AdamW: Adam with weight decay applied to the weights directly (decoupled)."""

    _target_: str = "torch.optim.AdamW"
    lr: float = bound(1e-3, gt=0.0)
    weight_decay: float = bound(0.01, ge=0.0)


@dataclass
class AdagradSchema:
    """Adagrad: per-parameter steps scaled by the root of the sum of all past squared gradients."""

    _target_: str = "torch.optim.Adagrad"
    _partial_: bool = True
    lr: float = bound(0.05, gt=0.0)
    lr_decay: float = bound(0.0, ge=0.0)
    eps: float = bound(1e-10, gt=0.0)
    weight_decay: float = bound(0.0, ge=0.0)
    initial_accumulator_value: float = bound(0.0, ge=0.0)


@dataclass
class RMSpropSchema:
    """RMSProp: per-parameter steps scaled by a running RMS of recent gradients."""

    _target_: str = "torch.optim.RMSprop"
    _partial_: bool = True
    lr: float = bound(1e-3, gt=0.0)
    alpha: float = bound(0.99, gt=0.0, lt=1.0)
    eps: float = bound(1e-8, gt=0.0)
    momentum: float = bound(0.0, ge=0.0, lt=1.0)
    centered: bool = False
    weight_decay: float = bound(0.0, ge=0.0)


SCHEMAS: dict[str, type] = {
    "sgd": SGDSchema,
    "adam": AdamSchema,
    "adamw": AdamWSchema,
    "adagrad": AdagradSchema,
    "rmsprop": RMSpropSchema,
}
