"""Schemas of the ``scheduler`` group."""

from __future__ import annotations

from dataclasses import dataclass

from mlcli.schemas.base import Warmup, bound


@dataclass
class SchedulerSchema:
    """A learning-rate schedule stepped once per optimizer step, with optional warmup."""

    _target_: str = "???"
    _partial_: bool = True
    warmup: Warmup = Warmup.none
    warmup_steps: int = bound(0, ge=0)
    warmup_lr: float = bound(1e-4, gt=0.0)
    min_lr_ratio: float = bound(0.0, ge=0.0, le=1.0)


SCHEMAS: dict[str, type] = {"base": SchedulerSchema}
