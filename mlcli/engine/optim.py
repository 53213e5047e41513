"""Optimizer construction with the fast paths that do not change the numbers.

``torch.optim`` picks its multi-tensor (``foreach``) implementation by default only for CUDA
tensors; on the CPU it loops over parameters in Python, one small kernel per operation per
tensor. The ``foreach`` implementation performs the same elementwise arithmetic with the same
scalars, so mlcli asks for it whenever a model has enough parameter tensors for it to pay
(unless the config sets ``foreach`` or ``fused``).
``fused=True`` is never chosen for the user: on the CPU it rounds differently, and in torch 2.13
it silently applies wrong updates to gradients whose strides differ from the parameter's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from omegaconf import DictConfig

from mlcli.config.targets import factory as instantiate_factory

FOREACH_MIN_TENSORS = 6
"""``foreach`` pays from this many parameter tensors on (measured on one CPU core with Adam: 4
tensors 118 µs a step per tensor loop vs 124 µs foreach; 6 tensors 180 vs 166 µs; 10 tensors
of width 512 3.7 vs 2.2 ms)."""


def _composed(node: DictConfig, allow: list[str]) -> tuple[Any, set[str], dict[str, Any]]:
    """The optimizer's factory, the keyword arguments its class accepts, and those the config
    sets."""
    factory: Any = instantiate_factory(node, "optim", allow)
    keywords = getattr(factory, "keywords", {}) or {}
    try:
        accepted = set(inspect.signature(getattr(factory, "func", factory)).parameters)
    except (TypeError, ValueError):
        accepted = set()
    return factory, accepted, keywords


def optimizer_factory(
    node: DictConfig, allow: list[str]
) -> Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]:
    """``params -> optimizer`` for ``cfg.optim``, with ``foreach=True`` where the optimizer takes
    it and the parameters are many enough for it to pay (composed once: a run builds one
    optimizer per fold)."""
    factory, accepted, keywords = _composed(node, allow)
    extra: dict[str, Any] = {}
    if "foreach" in accepted and keywords.get("foreach") is None and not keywords.get("fused"):
        extra["foreach"] = True

    def build(params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        params = list(params)
        many = sum(1 for p in params if not isinstance(p, dict)) >= FOREACH_MIN_TENSORS
        optimizer: torch.optim.Optimizer = factory(params, **(extra if many else {}))
        return optimizer

    return build


def build_optimizer(
    node: DictConfig, params: Iterable[torch.Tensor], allow: list[str]
) -> torch.optim.Optimizer:
    """``instantiate(cfg.optim)(params)``, with ``foreach=True`` where the optimizer takes it."""
    return optimizer_factory(node, allow)(params)


def fused_optimizer_factory(
    node: DictConfig, allow: list[str]
) -> Callable[[torch.Tensor], torch.optim.Optimizer]:
    """``flat -> optimizer`` for ``cfg.optim`` over one contiguous tensor (stacked folds),
    composed once, with ``fused=True`` where the optimizer has a fused kernel and the config
    chooses no implementation: one kernel a step instead of one per arithmetic operation.

    Fused kernels round differently from the per-tensor loop (the same update up to float
    rounding, which stacked folds already differ by); the stride trap does not arise: ``flat``
    and its gradient are contiguous.
    """
    factory, accepted, keywords = _composed(node, allow)
    chosen = any(keywords.get(k) is not None for k in ("foreach", "fused", "differentiable"))

    def build(flat: torch.Tensor) -> torch.optim.Optimizer:
        fused = (
            "fused" in accepted and not chosen and flat.is_contiguous() and flat.is_floating_point()
        )
        optimizer: torch.optim.Optimizer = factory([flat], **({"fused": True} if fused else {}))
        return optimizer

    return build


def build_fused_optimizer(
    node: DictConfig, flat: torch.Tensor, allow: list[str]
) -> torch.optim.Optimizer:
    """:func:`fused_optimizer_factory`'s optimizer over ``flat``."""
    return fused_optimizer_factory(node, allow)(flat)


class FusedAdamStep:
    """``optimizer.step()`` of a fused Adam or AdamW over one tensor, as one direct call of the
    kernel ``torch.optim`` calls (``torch._fused_adam_`` / ``torch._fused_adamw_``), with the
    same state tensors and arguments: the same numbers, bit for bit, without the ~50 µs of
    Python that ``Optimizer.step`` wraps around the kernel (profiler record, grad-mode and
    dynamo guards, per-device grouping), which is a twentieth of a stacked digits step.

    The optimizer keeps its state and ``param_groups`` (the schedule sets the lr there; it is
    read at every step). Anything the direct call does not cover (not fused, amsgrad, a tensor
    lr, capturable or differentiable, more than one tensor, a first step that creates the
    state) goes through ``optimizer.step()``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        kind = type(optimizer)
        self.kernel = None
        if kind in (torch.optim.Adam, torch.optim.AdamW) and len(optimizer.param_groups) == 1:
            group = optimizer.param_groups[0]
            plain = not any(group.get(k) for k in ("amsgrad", "capturable", "differentiable"))
            if group.get("fused") and plain and len(group["params"]) == 1:
                decoupled = bool(group.get("decoupled_weight_decay", kind is torch.optim.AdamW))
                self.kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_

    def step(self) -> None:
        """One optimizer step."""
        if self.kernel is None or not self._direct():
            self.optimizer.step()

    def _direct(self) -> bool:
        """The step as one kernel call, where it is ``torch.optim``'s own (False: not done)."""
        assert self.kernel is not None
        group = self.optimizer.param_groups[0]
        param: torch.Tensor = group["params"][0]
        state = self.optimizer.state.get(param)
        lr, (beta1, beta2) = group["lr"], group["betas"]
        optimizer = self.optimizer
        if not state or param.grad is None:
            return False
        if (
            getattr(optimizer, "grad_scale", None) is not None
            or getattr(optimizer, "found_inf", None) is not None
        ):  # (a grad scaler's)
            return False
        if type(lr) is not float or type(beta1) is not float or type(beta2) is not float:
            return False  # (a tensor lr or betas)
        steps = [state["step"]]
        with torch.no_grad():
            torch._foreach_add_(steps, 1)
            try:
                self._call(param, state, steps, lr, beta1, beta2, group)
            except (TypeError, RuntimeError):  # another torch's private kernel: its own step
                torch._foreach_sub_(steps, 1)
                self.kernel = None
                return False
        return True

    def _call(
        self,
        param: torch.Tensor,
        state: dict[str, Any],
        steps: list[torch.Tensor],
        lr: float,
        beta1: float,
        beta2: float,
        group: dict[str, Any],
    ) -> None:
        """The kernel on one tensor, with torch.optim's arguments (torch 2.13's signature; a
        torch whose kernel takes others raises before it changes anything)."""
        assert self.kernel is not None and param.grad is not None
        self.kernel(
            [param],
            [param.grad],
            [state["exp_avg"]],
            [state["exp_avg_sq"]],
            [],
            steps,
            amsgrad=False,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            grad_scale=None,
            found_inf=None,
        )
