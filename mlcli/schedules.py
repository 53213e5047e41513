"""Learning-rate schedules, stepped once per optimizer step, each with an optional warmup.

Every schedule is a multiplicative factor on each parameter group's base lr (``LambdaLR``):

* warmup ``linear``: factor ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps
  (gradual warmup, rising from ~0 to the base lr, which it reaches without a jump);
* warmup ``constant``: the lr is held at ``warmup_lr`` for ``warmup_steps`` steps, then jumps to
  the base lr (the ResNet paper's 110-layer CIFAR-10 run);
* after warmup the decay runs over the remaining ``total_steps - warmup_steps`` steps, starting
  from the base lr. With ``t`` the steps since warmup ended and ``p = t / (total_steps -
  warmup_steps)`` its progress, the decays are

  - ``constant``: 1
  - ``step``: ``gamma ** (t // step_size)``
  - ``exponential``: ``gamma ** t``
  - ``cosine``: ``m + (1 - m) · (1 + cos(π p)) / 2`` with ``m = min_lr_ratio``
  - ``linear``: ``m + (1 - m) · (1 - p)`` (down to 0 at the end when ``m = 0``)
  - ``inverse_sqrt``: ``sqrt(τ / (τ + t))`` with ``τ = timescale`` (default: ``warmup_steps``,
    or 1 without warmup)

  ``inverse_sqrt`` with ``warmup=linear`` and ``timescale = warmup_steps = W`` is the Transformer
  paper's schedule normalized to peak at the base lr: ``(s + 1) / W`` for steps ``s < W``, then
  ``sqrt(W / s)`` (the paper's ``sqrt(W / (s + 1))`` shifted by one step, so the decay starts
  exactly at the base lr like every other decay here).
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup_name(warmup: Any) -> str:
    return str(getattr(warmup, "value", warmup))


class ScheduleFactor:
    """Picklable ``step -> lr factor`` for one parameter group."""

    def __init__(
        self,
        decay: str,
        base_lr: float,
        total_steps: int,
        warmup: str,
        warmup_steps: int,
        warmup_lr: float,
        min_lr_ratio: float,
        step_size: int = 1,
        gamma: float = 1.0,
        timescale: int | None = None,
    ) -> None:
        self.decay = decay
        self.base_lr = base_lr
        self.total_steps = max(1, total_steps)
        self.warmup = warmup if warmup_steps > 0 else "none"
        self.warmup_steps = warmup_steps if self.warmup != "none" else 0
        self.warmup_lr = warmup_lr
        self.min_lr_ratio = min_lr_ratio
        self.step_size = step_size
        self.gamma = gamma
        self.timescale = timescale if timescale is not None else max(1, self.warmup_steps)

    @property
    def is_constant(self) -> bool:
        """The factor is 1.0 at every step (the training loop may then skip stepping it)."""
        return self.decay == "constant" and self.warmup_steps == 0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            if self.warmup == "linear":
                return (step + 1) / self.warmup_steps
            return self.warmup_lr / self.base_lr
        t = step - self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, t / span)
        if self.decay == "constant":
            return 1.0
        if self.decay == "cosine":
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine
        if self.decay == "linear":
            return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * (1.0 - progress)
        if self.decay == "step":
            return self.gamma ** (t // self.step_size)
        if self.decay == "exponential":
            return self.gamma**t
        if self.decay == "inverse_sqrt":
            return math.sqrt(self.timescale / (self.timescale + t))
        raise ValueError(f"unknown decay {self.decay!r}")


def _build(
    decay: str,
    optimizer: Optimizer,
    total_steps: int,
    warmup: Any = "none",
    warmup_steps: int = 0,
    warmup_lr: float = 1e-4,
    min_lr_ratio: float = 0.0,
    step_size: int = 1,
    gamma: float = 1.0,
    timescale: int | None = None,
) -> LambdaLR:
    factors = [
        ScheduleFactor(
            decay,
            float(group["lr"]),
            total_steps,
            _warmup_name(warmup),
            warmup_steps,
            warmup_lr,
            min_lr_ratio,
            step_size,
            gamma,
            timescale,
        )
        for group in optimizer.param_groups
    ]
    return LambdaLR(optimizer, lr_lambda=factors)  # type: ignore[arg-type]


def constant(optimizer: Optimizer, total_steps: int, **options: Any) -> LambdaLR:
    """The base lr throughout (after the optional warmup)."""
    return _build("constant", optimizer, total_steps, **options)


def cosine(optimizer: Optimizer, total_steps: int, **options: Any) -> LambdaLR:
    """Cosine decay from the base lr to ``min_lr_ratio × base lr`` at ``total_steps``."""
    return _build("cosine", optimizer, total_steps, **options)


def linear(optimizer: Optimizer, total_steps: int, **options: Any) -> LambdaLR:
    """Linear decay from the base lr to ``min_lr_ratio × base lr`` (0 by default)."""
    return _build("linear", optimizer, total_steps, **options)


def step(optimizer: Optimizer, total_steps: int, **options: Any) -> LambdaLR:
    """Step decay: the lr is multiplied by ``gamma`` every ``step_size`` optimizer steps."""
    return _build("step", optimizer, total_steps, **options)


def exponential(optimizer: Optimizer, total_steps: int, **options: Any) -> LambdaLR:
    """Exponential decay: the lr is multiplied by ``gamma`` after every optimizer step."""
    return _build("exponential", optimizer, total_steps, **options)


def inverse_sqrt(optimizer: Optimizer, total_steps: int, **options: Any) -> LambdaLR:
    """Inverse square-root decay ``sqrt(τ / (τ + t))``: the Transformer schedule with warmup."""
    return _build("inverse_sqrt", optimizer, total_steps, **options)
