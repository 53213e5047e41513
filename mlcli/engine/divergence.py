"""When a fold has diverged, in one encoding: :class:`DivergedError`, raised where sequential
training stops, and passed as the exception itself (it pickles) from worker processes and stacked
grids.

A fold diverges at a step whose loss is not finite, or at the end of an epoch whose val/test
metrics are not finite or whose mean training loss exceeds ``diverge_factor`` × the loss at
initialization (:class:`LossBound`, :func:`epoch_divergence`). The plain and the stacked loop
share these rules; on an accelerator both check once an epoch (:class:`DivergenceWatch`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


class DivergedError(RuntimeError):
    """Training diverged: a step's loss became NaN or infinite (``step``: that step, whose update
    was not applied), or, judged at the end of an epoch (``step``: the epoch's last step), a val or
    test metric is not finite or the epoch's mean training loss exceeded its bound
    (:class:`LossBound`). ``what`` says which; ``loss`` is the offending value."""

    def __init__(self, epoch: int, step: int, loss: float, what: str | None = None) -> None:
        self.what = what or f"training loss became {loss}"
        super().__init__(f"{self.what} at epoch {epoch}, optimizer step {step}")
        self.epoch = epoch
        self.step = step
        self.loss = loss

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable: parallel folds and stacked grids send it from a child process.
        return (type(self), (self.epoch, self.step, self.loss, self.what))


LOSS_FLOOR = 1.0
"""The loss at initialization a bound is taken from is at least this (see :class:`LossBound`)."""


@dataclass
class LossBound:
    """A fold's divergence bound: its epoch-mean training loss may not exceed ``factor`` × its
    loss at initialization (``initial``: the first optimizer step's loss, taken before any update;
    at least :data:`LOSS_FLOOR`, so that a model that starts near a perfect fit is not flagged
    for noise). ``factor`` None: no bound.

    Checked once an epoch, on the epoch's mean training loss that the loop reads anyway: no host
    sync per step. ``initial`` is set by the loop in the fold's first epoch (a checkpoint restores
    it on resume)."""

    factor: float | None = None
    initial: float | None = None

    @property
    def limit(self) -> float | None:
        """The largest epoch-mean training loss allowed (None: unbounded so far)."""
        if self.factor is None or self.initial is None:
            return None
        return self.factor * max(self.initial, LOSS_FLOOR)


def epoch_divergence(
    epoch: int, step: int, metrics: dict[str, float], limit: float | None
) -> DivergedError | None:
    """The end-of-epoch divergence rule, shared by the plain and the stacked loop: a val or test
    metric that is not finite, or a mean training loss above ``limit`` (``metrics``: the epoch's
    ``split/metric`` values; ``step``: the epoch's last optimizer step)."""
    for name, value in metrics.items():
        if not name.startswith("train/") and not math.isfinite(value):
            return DivergedError(epoch, step, value, f"{name} became {value}")
    loss = metrics.get("train/loss")
    if limit is not None and loss is not None and not loss <= limit:
        return DivergedError(
            epoch,
            step,
            loss,
            f"the epoch's mean training loss became {loss:.4g}, above {limit:.4g} "
            "(diverge_factor × the loss at initialization)",
        )
    return None


def defers_divergence_check(device: torch.device) -> bool:
    """Whether the loop checks for divergence once per epoch rather than at every step.

    On the CPU a check costs nothing but the check itself, so the loop stops at the diverging
    step. On an accelerator reading the loss would stall the queue of kernels at every step:
    :class:`DivergenceWatch` records the first non-finite step on the device instead.
    """
    return device.type != "cpu"


class DivergenceWatch:
    """The first optimizer step whose loss is not finite, per model of a stack (``k`` losses a
    step), recorded on the device without a host sync; :meth:`flush` reads it once an epoch."""

    def __init__(self, k: int, device: torch.device) -> None:
        self.first_step = torch.full((k,), -1, dtype=torch.long, device=device)
        self.first_loss = torch.zeros(k, device=device)

    def see(self, losses: torch.Tensor, step: int) -> None:
        """Note this step's losses (``k`` values, or one)."""
        losses = losses.detach().reshape(-1).to(self.first_loss.dtype)
        new = ~torch.isfinite(losses) & (self.first_step < 0)
        self.first_step = torch.where(new, step, self.first_step)
        self.first_loss = torch.where(new, losses, self.first_loss)

    def flush(self, epoch: int) -> dict[int, DivergedError]:
        """The models that diverged so far (one host sync), as the per-step check reports them."""
        steps = self.first_step.tolist()
        if all(s < 0 for s in steps):
            return {}
        losses = self.first_loss.tolist()
        return {i: DivergedError(epoch, s, losses[i]) for i, s in enumerate(steps) if s >= 0}
