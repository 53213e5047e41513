"""The top-level run settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlcli.config.schemas.analysis import AnalysisSchema
from mlcli.config.schemas.base import Device, OnFailure, StackFolds, bound


@dataclass
class RunSchema:
    """Top-level run settings; the groups are typed by their own schemas."""

    dataset: Any = "???"
    model: Any = "???"
    optim: Any = "???"
    scheduler: Any = "???"
    cv: Any = "???"
    # Typed here (not in each option file) so that options combine: analysis=[hessian,landscape].
    analysis: AnalysisSchema = field(default_factory=AnalysisSchema)
    seed: int = 0
    epochs: int = bound(20, ge=1)
    batch_size: int = bound(64, ge=1)
    device: Device = Device.auto
    threads: int = bound(1, ge=1)
    metric: str = "auto"
    clip_grad_norm: float | None = bound(None, gt=0.0)
    # DIVERGED when an epoch's mean training loss exceeds this × the loss at initialization.
    diverge_factor: float | None = bound(1e4, ge=1.0)
    outputs_root: str = "outputs"
    progress: bool = True
    stack_folds: StackFolds = StackFolds.auto
    parallel_folds: int = bound(1, ge=1)
    on_failure: OnFailure = OnFailure["continue"]
    checkpoint_every: int = bound(0, ge=0)
    allow_targets: list[str] = field(default_factory=list)  # modules admitted: command line only


SCHEMAS: dict[str, type] = {"run": RunSchema}
