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

import functools
import inspect
import sys
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
    defer_dynamo_import()
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
    defer_dynamo_import()
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
            self.fallback()

    @functools.cached_property
    def fallback(self) -> Callable[[], None]:
        """The step where the kernel call does not cover it: ``Adam.step``'s body
        (:class:`AdamStep`, which creates the state at the first step) or ``optimizer.step``."""
        return AdamStep(self.optimizer).step

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


DIRECT_ADAMS = (torch.optim.Adam, torch.optim.AdamW)
"""The optimizers :class:`AdamStep` steps itself (not their subclasses)..."""
NOT_DIRECT = ("capturable", "differentiable")
"""...unless one of these options is set."""


class AdamStep:
    """``optimizer.step()`` of a ``torch.optim`` Adam or AdamW (not fused), as the body of
    ``Adam.step`` called directly: each parameter group's state gathered by the optimizer's own
    ``_init_group`` and handed to ``torch.optim.adam.adam`` with the arguments ``Adam.step``
    passes, under ``no_grad``. The same kernels on the same tensors: the same numbers, bit for
    bit, without what ``Optimizer.step`` wraps around them (a profiler record, grad-mode and
    dynamo guards that import ``torch._dynamo``: 1.5 s of a process's start, and ~40 µs a step,
    a twentieth of a digits MLP's step on one CPU thread).

    It covers every Adam/AdamW option but two: a capturable or differentiable optimizer, like
    any other optimizer (a subclass too), step hooks, a grad scaler's attributes and a torch
    whose private ``_init_group`` or functional ``adam`` takes other arguments go through
    ``optimizer.step()``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.direct = type(optimizer) in DIRECT_ADAMS and not any(
            group.get(k) for group in optimizer.param_groups for k in NOT_DIRECT
        )
        if self.direct:
            from torch.optim.adam import adam

            self._adam = adam

    def step(self) -> None:
        """One optimizer step."""
        optimizer = self.optimizer
        if not self.direct or self._hooked() or not self._direct():
            optimizer.step()
        else:
            optimizer._opt_called = True  # type: ignore[attr-defined]  # (the schedule's check)

    def _hooked(self) -> bool:
        """Whether step hooks (this optimizer's or global ones) or a grad scaler are set."""
        from torch.optim import optimizer as module

        optimizer = self.optimizer
        return bool(
            optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks
            or module._global_optimizer_pre_hooks
            or module._global_optimizer_post_hooks
            or getattr(optimizer, "grad_scale", None) is not None
            or getattr(optimizer, "found_inf", None) is not None
        )

    def _direct(self) -> bool:
        """``Adam.step``'s body (torch 2.13); False (nothing changed): not done."""
        optimizer: Any = self.optimizer
        with torch.no_grad():
            for group in optimizer.param_groups:
                params: list[torch.Tensor] = []
                grads: list[torch.Tensor] = []
                exp_avgs: list[torch.Tensor] = []
                exp_avg_sqs: list[torch.Tensor] = []
                max_exp_avg_sqs: list[torch.Tensor] = []
                steps: list[torch.Tensor] = []
                beta1, beta2 = group["betas"]
                try:
                    has_complex = optimizer._init_group(
                        group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps
                    )
                    arguments = dict(
                        amsgrad=group["amsgrad"], has_complex=has_complex, beta1=beta1,
                        beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                        eps=group["eps"], maximize=group["maximize"], foreach=group["foreach"],
                        capturable=False, differentiable=False, fused=group["fused"],
                        grad_scale=None, found_inf=None,
                        decoupled_weight_decay=group["decoupled_weight_decay"],
                    )  # fmt: skip
                    if params and params[0].is_cuda:
                        optimizer._accelerator_graph_capture_health_check()
                    states = (exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps)
                    self._adam(params, grads, *states, **arguments)
                except (TypeError, AttributeError, KeyError):
                    # Another torch's optimizer (its arguments are refused before any tensor
                    # changes): its own step, from now on.
                    self.direct = False
                    return False
        return True


def step_function(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """The fastest exact ``optimizer.step`` for ``optimizer``: a fused Adam/AdamW over one tensor
    as its kernel (:class:`FusedAdamStep`), any other Adam/AdamW as ``Adam.step``'s body
    (:class:`AdamStep`), everything else ``optimizer.step``."""
    stepper = FusedAdamStep(optimizer)
    if stepper.kernel is not None:
        return stepper.step
    return stepper.fallback


def imports_dynamo(node: DictConfig) -> bool:
    """Whether stepping ``cfg.optim`` imports ``torch._dynamo``: every ``torch.optim`` optimizer
    but those :class:`AdamStep` steps itself (:func:`defer_dynamo_import`)."""
    target = str(node.get("_target_", ""))
    direct = {f"torch.optim.{kind.__name__}" for kind in DIRECT_ADAMS}
    return target not in direct or any(node.get(k) for k in NOT_DIRECT)


def defer_dynamo_import() -> None:
    """Let ``torch.optim`` build and save optimizers without importing ``torch._dynamo``.

    ``Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` are
    marked not to be compiled (``torch._disable_dynamo``), which imports ``torch._dynamo`` at
    their first call: 1.5 s of a process's start on a 2-core machine, more than ``import
    torch``. Nothing can be compiled before ``torch._dynamo`` is imported, so until then each of
    them runs as it is; from the moment it is imported, each call goes through
    ``torch._dynamo.disable`` exactly as ``torch.optim`` would have it. A no-op where
    ``torch._dynamo`` is imported already or a torch marks these methods otherwise.
    """
    if "torch._dynamo" in sys.modules:
        return
    from torch.optim.optimizer import Optimizer

    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        original = getattr(getattr(Optimizer, name), "__wrapped__", None)
        if original is None or hasattr(original, "__dynamo_disable"):
            continue
        original.__dynamo_disable = _until_dynamo(original)


def _until_dynamo(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` itself while ``torch._dynamo`` is not imported, then
    ``torch._dynamo.disable(function)``."""
    disabled: list[Callable[..., Any]] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return function(*args, **kwargs)
        if not disabled:
            import torch._dynamo

            disabled.append(torch._dynamo.disable(function, recursive=True, wrapping=False))
        return disabled[0](*args, **kwargs)

    return call
