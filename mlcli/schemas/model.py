"""Schemas of the ``model`` group."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlcli.schemas.base import bound


@dataclass
class LinearSchema:
    """``y = b + w·x``."""

    _target_: str = "mlcli.models.linear"


@dataclass
class MLPSchema:
    """A multi-layer perceptron."""

    _target_: str = "mlcli.models.mlp"
    hidden: list[int] = field(default_factory=lambda: [128])
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = bound(0.0, ge=0.0, lt=1.0)


SCHEMAS: dict[str, type] = {"linear": LinearSchema, "mlp": MLPSchema}
