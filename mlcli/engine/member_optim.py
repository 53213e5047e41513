"""One optimizer step for the M members of a stacked grid, each with its own hyperparameters.

The members of a stacked grid (:mod:`mlcli.sweeps.grid`) differ in their optimizer's numbers
(``lr``, ``momentum``, ``weight_decay``, ``betas``, ``eps``, ``alpha``, ``lr_decay``,
``initial_accumulator_value``) and their schedule. :class:`MemberOptimizer` applies each member's
own hyperparameters as tensors broadcast over the member dimension, with the arithmetic of
``torch.optim``'s ``foreach`` implementations (SGD with (Nesterov) momentum, Adam, AdamW, RMSprop
(centered, momentum), Adagrad), and steps each run's schedule as its own ``LambdaLR`` on a
stand-in optimizer (:class:`LrHolder`). The results equal those of each job trained alone up to
float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

STACKED_OPTIMIZERS = {
    "torch.optim.SGD": "sgd",
    "torch.optim.Adam": "adam",
    "torch.optim.AdamW": "adamw",
    "torch.optim.RMSprop": "rmsprop",
    "torch.optim.Adagrad": "adagrad",
}


@dataclass
class Hyper:
    """One member's optimizer settings and its schedule (a LambdaLR on a stand-in optimizer)."""

    kind: str
    lr: float
    momentum: float
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    alpha: float
    lr_decay: float
    initial_accumulator_value: float
    nesterov: bool
    centered: bool
    schedule: Any = None
    constant: bool = True


class LrHolder(torch.optim.Optimizer):
    """A stand-in optimizer with one parameter group and no parameters: what a member's
    schedule (a ``torch.optim.lr_scheduler``) steps, to tell the member's learning rate.

    ``torch.optim.Optimizer.__init__`` is not called: it imports ``torch._dynamo`` (about a
    second), and a stacked grid, whose update is :class:`MemberOptimizer`'s, needs nothing of it.
    """

    def __init__(self, lr: float) -> None:
        self.defaults: dict[str, Any] = {"lr": lr}
        self.param_groups: list[dict[str, Any]] = [{"params": [], "lr": lr}]
        self.state: Any = {}

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """Nothing to update."""
        return None


class MemberOptimizer:
    """``torch.optim``'s elementwise optimizers over stacked tensors ``[M, ...]``, each member
    with its own hyperparameters and schedule (the arithmetic of the ``foreach`` versions).

    ``hypers`` has one entry per member; members of one run share theirs (one schedule).
    """

    def __init__(self, params: list[torch.Tensor], hypers: list[Hyper]) -> None:
        kinds = {h.kind for h in hypers}
        if len(kinds) != 1:
            raise ValueError(f"one optimizer per stack, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.params = params
        self.hypers = hypers
        self.schedules = list({id(h): h for h in hypers}.values())
        self.step_count = 0
        device = params[0].device
        first = hypers[0]
        self.nesterov, self.centered = first.nesterov, first.centered
        self.momentum_on = first.momentum > 0

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=params[0].dtype, device=device)

        # Scalars are formed in double precision, as torch.optim does with Python floats.
        self.weight_decay = column([h.weight_decay for h in hypers])
        self.decay_any = any(h.weight_decay != 0 for h in hypers)
        self.momentum = column([h.momentum for h in hypers])
        self.one_minus_beta1 = column([1 - h.beta1 for h in hypers])
        self.beta2 = column([h.beta2 for h in hypers])
        self.one_minus_beta2 = column([1 - h.beta2 for h in hypers])
        self.eps = column([h.eps for h in hypers])
        self.alpha = column([h.alpha for h in hypers])
        self.one_minus_alpha = column([1 - h.alpha for h in hypers])
        self.dtype, self.device = params[0].dtype, device
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]
        if self.kind == "adagrad":
            init = column([h.initial_accumulator_value for h in hypers])
            for p, state in zip(params, self.state, strict=True):
                state["sum"] = init.view(-1, *[1] * (p.dim() - 1)).expand_as(p).clone()

    def lrs(self) -> list[float]:
        """Each member's learning rate for the next step."""
        return [float(h.schedule.optimizer.param_groups[0]["lr"]) for h in self.hypers]

    def _per_member(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=self.dtype, device=self.device)

    @torch.no_grad()
    def step(self) -> None:
        """One optimizer step for every member, then every run's schedule step."""
        self.step_count += 1
        scalars = self._scalars(self.step_count)
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            shape = (-1, *[1] * (p.dim() - 1))  # a per-member column broadcast over p's rest

            def columns(name: str, shape: tuple[int, ...] = shape) -> torch.Tensor:
                return scalars[name].view(shape)

            grad = p.grad
            if self.decay_any and self.kind != "adamw":
                grad = grad.addcmul(p, self.weight_decay.view(shape))
            if self.kind == "sgd":
                self._sgd(p, grad, state, columns)
            elif self.kind in ("adam", "adamw"):
                self._adam(p, grad, state, columns)
            elif self.kind == "rmsprop":
                self._rmsprop(p, grad, state, columns)
            else:
                self._adagrad(p, grad, state, columns)
        for hyper in self.schedules:
            if not hyper.constant:
                hyper.schedule.step()

    def _scalars(self, t: int) -> dict[str, torch.Tensor]:
        """This step's per-member numbers (learning rates, bias corrections, decays) and the
        constant ones, each a ``[M]`` column."""
        lrs = self.lrs()
        scalars = {
            "lr": self._per_member(lrs),
            "momentum": self.momentum,
            "one_minus_beta1": self.one_minus_beta1,
            "beta2": self.beta2,
            "one_minus_beta2": self.one_minus_beta2,
            "eps": self.eps,
            "alpha": self.alpha,
            "one_minus_alpha": self.one_minus_alpha,
        }
        if self.kind in ("adam", "adamw"):
            bias1 = [1 - h.beta1**t for h in self.hypers]
            bias2_sqrt = [(1 - h.beta2**t) ** 0.5 for h in self.hypers]
            scalars["step_size"] = self._per_member(
                [r / b for r, b in zip(lrs, bias1, strict=True)]
            )
            scalars["denominator"] = self._per_member(bias2_sqrt)
            if self.kind == "adamw" and self.decay_any:
                scalars["decay"] = self._per_member(
                    [1 - r * h.weight_decay for r, h in zip(lrs, self.hypers, strict=True)]
                )
        elif self.kind == "adagrad":
            scalars["clr"] = self._per_member(
                [r / (1 + (t - 1) * h.lr_decay) for r, h in zip(lrs, self.hypers, strict=True)]
            )
        return scalars

    def _sgd(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
        c: Callable[[str], torch.Tensor],
    ) -> None:  # fmt: skip
        if self.momentum_on:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.clone()
            else:
                state["momentum_buffer"].mul_(c("momentum")).add_(grad)
            buf = state["momentum_buffer"]
            grad = grad.addcmul(buf, c("momentum")) if self.nesterov else buf
        p.sub_(grad * c("lr"))

    def _adam(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
        c: Callable[[str], torch.Tensor],
    ) -> None:  # fmt: skip
        if self.kind == "adamw" and self.decay_any:
            p.mul_(c("decay"))
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, c("one_minus_beta1"))
        exp_avg_sq.mul_(c("beta2")).addcmul_(grad, grad * c("one_minus_beta2"))
        denom = exp_avg_sq.sqrt().div_(c("denominator")).add_(c("eps"))
        p.sub_(exp_avg.div(denom).mul_(c("step_size")))

    def _rmsprop(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
        c: Callable[[str], torch.Tensor],
    ) -> None:  # fmt: skip
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(p)
        square_avg = state["square_avg"]
        square_avg.mul_(c("alpha")).addcmul_(grad, grad * c("one_minus_alpha"))
        if self.centered:
            if "grad_avg" not in state:
                state["grad_avg"] = torch.zeros_like(p)
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, c("one_minus_alpha"))
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg.add_(c("eps"))
        if self.momentum_on:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.mul_(c("momentum")).addcdiv_(grad, avg)
            p.sub_(buf * c("lr"))
        else:
            p.sub_(grad.div(avg).mul_(c("lr")))

    def _adagrad(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
        c: Callable[[str], torch.Tensor],
    ) -> None:  # fmt: skip
        state["sum"].addcmul_(grad, grad)
        std = state["sum"].sqrt().add_(c("eps"))
        p.sub_(grad.div(std).mul_(c("clr")))
