"""Schemas of the ``scheduler`` group."""

from __future__ import annotations

from dataclasses import dataclass

from mlcli.config.schemas.base import Warmup, bound


@dataclass
class SchedulerSchema:
    """A learning-rate schedule stepped once per optimizer step, with optional warmup."""

    _target_: str = "???"
    _partial_: bool = True
    warmup: Warmup = Warmup.none
    warmup_steps: int = bound(0, ge=0)
    warmup_lr: float = bound(1e-4, gt=0.0)
    min_lr_ratio: float = bound(0.0, ge=0.0, le=1.0)


@dataclass
class StepSchema(SchedulerSchema):
    """Step decay: the lr is multiplied by ``gamma`` every ``step_size`` optimizer steps."""

    step_size: int = bound(100, ge=1)
    gamma: float = bound(0.5, gt=0.0, le=1.0)


@dataclass
class ExponentialSchema(SchedulerSchema):
    """Exponential decay: the lr is multiplied by ``gamma`` after every optimizer step."""

    gamma: float = bound(0.995, gt=0.0, le=1.0)


@dataclass
class InverseSqrtSchema(SchedulerSchema):
    """Inverse square-root decay ``sqrt(timescale / (timescale + t))`` (the Transformer's)."""

    timescale: int | None = bound(None, ge=1)


SCHEMAS: dict[str, type] = {
    "base": SchedulerSchema,
    "step": StepSchema,
    "exponential": ExponentialSchema,
    "inverse_sqrt": InverseSqrtSchema,
}
