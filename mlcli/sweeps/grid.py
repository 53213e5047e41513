"""Stacked grids: the jobs of a sweep that differ only in values that keep the model's shape,
trained together as one stacked model (the ``hydra/launcher=stacked`` launcher).

Jobs whose configs agree on everything but the seed, the optimizer's numbers (``lr``,
``momentum``, ``weight_decay``, ``betas``, ``eps``, ``alpha``, ``lr_decay``,
``initial_accumulator_value``) and the schedule (``scheduler.*``) build models of the same shape
on data of the same shape: their folds stack like the folds of one run
(:mod:`mlcli.engine.stacked`), with every member keeping its own seed, initial weights, batch order
and data. What differs is the optimizer: :class:`MemberOptimizer` applies each member's own
hyperparameters as tensors broadcast over the member dimension, with the arithmetic of
``torch.optim``'s ``foreach`` implementations (SGD with (Nesterov) momentum, Adam, AdamW,
RMSprop (centered, momentum), Adagrad), and each run's schedule is stepped as its own
``LambdaLR``. The results equal those of each job trained alone up to float rounding.

The launcher (``hydra_plugins/mlcli_plugins/stacked_launcher.py``) calls
:func:`train_group` for each group before its jobs run; each job then runs through the usual
job function (:func:`mlcli.sweeps.job.task`: run dir, status, results, ledger), which takes its
folds' rows from :data:`mlcli.engine.stacked.PRECOMPUTED` instead of training them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mlcli.config import NON_RESULT_KEYS
from mlcli.data.base import Task

STACKED_OPTIMIZERS = {
    "torch.optim.SGD": "sgd",
    "torch.optim.Adam": "adam",
    "torch.optim.AdamW": "adamw",
    "torch.optim.RMSprop": "rmsprop",
    "torch.optim.Adagrad": "adagrad",
}
PER_MEMBER_OPTIM_KEYS = (
    "lr",
    "momentum",
    "weight_decay",
    "betas",
    "eps",
    "alpha",
    "lr_decay",
    "initial_accumulator_value",
)
"""Optimizer settings that may differ between the members of one stacked model."""
PER_MEMBER_KEYS = ("seed", "scheduler")
"""Run settings that may differ between the members of one stacked model."""


def signature(cfg: DictConfig) -> str | None:
    """What jobs must share to be stacked together (None: this job is never stacked).

    Everything in the job's config except the per-member values and what does not change
    results; momentum only as "on or off" (SGD and RMSprop keep no momentum buffer without it).
    """
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    if str(container.get("stack_folds", "auto")) == "off":
        return None
    optim = container.get("optim")
    if not isinstance(optim, dict) or optim.get("_target_") not in STACKED_OPTIMIZERS:
        return None
    for key in (*NON_RESULT_KEYS, *PER_MEMBER_KEYS):
        container.pop(key, None)
    momentum = optim.get("momentum")
    for key in PER_MEMBER_OPTIM_KEYS:
        optim.pop(key, None)
    if momentum is not None:
        optim["momentum"] = "on" if float(momentum) > 0 else "off"
    return json.dumps(container, sort_keys=True, default=str)


def groups(signatures: Sequence[str | None], max_jobs: int) -> list[list[int]]:
    """Indices of the jobs that train together (groups of at least two, in job order), from
    each job's :func:`signature`."""
    by_signature: dict[str, list[int]] = {}
    for i, sig in enumerate(signatures):
        if sig is not None:
            by_signature.setdefault(sig, []).append(i)
    out = []
    for members in by_signature.values():
        for start in range(0, len(members), max(1, max_jobs)):
            chunk = members[start : start + max(1, max_jobs)]
            if len(chunk) >= 2:
                out.append(chunk)
    return sorted(out)


# --------------------------------------------------------------------------------------------------
# One optimizer step for M members with their own hyperparameters.


@dataclass
class _Hyper:
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


def _hyper(cfg: DictConfig, total_steps: int, allow: list[str]) -> _Hyper:
    from mlcli.config.targets import instantiate

    optim = cfg.optim
    betas = list(optim.get("betas") or [0.9, 0.999])
    hyper = _Hyper(
        kind=STACKED_OPTIMIZERS[str(optim._target_)],
        lr=float(optim.lr),
        momentum=float(optim.get("momentum") or 0.0),
        weight_decay=float(optim.get("weight_decay") or 0.0),
        beta1=float(betas[0]),
        beta2=float(betas[1]),
        eps=float(optim.get("eps") if optim.get("eps") is not None else 1e-8),
        alpha=float(optim.get("alpha") if optim.get("alpha") is not None else 0.99),
        lr_decay=float(optim.get("lr_decay") or 0.0),
        initial_accumulator_value=float(optim.get("initial_accumulator_value") or 0.0),
        nesterov=bool(optim.get("nesterov") or False),
        centered=bool(optim.get("centered") or False),
    )
    # The run's own schedule, stepped as it would step the run's optimizer.
    stand_in = LrHolder(hyper.lr)
    hyper.schedule = instantiate(cfg.scheduler, "scheduler", allow)(
        stand_in, total_steps=total_steps
    )
    stand_in.step()  # only marks it stepped (the scheduler checks)
    lambdas = getattr(hyper.schedule, "lr_lambdas", [0])
    hyper.constant = all(getattr(f, "is_constant", False) for f in lambdas)
    return hyper


class MemberOptimizer:
    """``torch.optim``'s elementwise optimizers over stacked tensors ``[M, ...]``, each member
    with its own hyperparameters and schedule (the arithmetic of the ``foreach`` versions).

    ``hypers`` has one entry per member; members of one run share theirs (one schedule).
    """

    def __init__(self, params: list[torch.Tensor], hypers: list[_Hyper]) -> None:
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
        t = self.step_count
        lrs = self.lrs()
        lr = self._per_member(lrs)
        if self.kind in ("adam", "adamw"):
            bias1 = [1 - h.beta1**t for h in self.hypers]
            bias2_sqrt = [(1 - h.beta2**t) ** 0.5 for h in self.hypers]
            step_size = self._per_member([r / b for r, b in zip(lrs, bias1, strict=True)])
            denominator = self._per_member(bias2_sqrt)
            decay = (
                self._per_member(
                    [1 - r * h.weight_decay for r, h in zip(lrs, self.hypers, strict=True)]
                )
                if self.kind == "adamw" and self.decay_any
                else None
            )
        elif self.kind == "adagrad":
            clr = self._per_member(
                [r / (1 + (t - 1) * h.lr_decay) for r, h in zip(lrs, self.hypers, strict=True)]
            )
        for p, state in zip(self.params, self.state, strict=True):
            grad = p.grad
            if grad is None:
                continue
            shape = (-1, *[1] * (p.dim() - 1))

            def b(column: torch.Tensor, shape: tuple[int, ...] = shape) -> torch.Tensor:
                return column.view(shape)

            if self.decay_any and self.kind != "adamw":
                grad = grad.addcmul(p, b(self.weight_decay))
            if self.kind == "sgd":
                if self.momentum_on:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = grad.clone()
                    else:
                        state["momentum_buffer"].mul_(b(self.momentum)).add_(grad)
                    buf = state["momentum_buffer"]
                    grad = grad.addcmul(buf, b(self.momentum)) if self.nesterov else buf
                p.sub_(grad * b(lr))
            elif self.kind in ("adam", "adamw"):
                if decay is not None:
                    p.mul_(b(decay))
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, b(self.one_minus_beta1))
                exp_avg_sq.mul_(b(self.beta2)).addcmul_(grad, grad * b(self.one_minus_beta2))
                denom = exp_avg_sq.sqrt().div_(b(denominator)).add_(b(self.eps))
                p.sub_(exp_avg.div(denom).mul_(b(step_size)))
            elif self.kind == "rmsprop":
                if "square_avg" not in state:
                    state["square_avg"] = torch.zeros_like(p)
                square_avg = state["square_avg"]
                square_avg.mul_(b(self.alpha)).addcmul_(grad, grad * b(self.one_minus_alpha))
                if self.centered:
                    if "grad_avg" not in state:
                        state["grad_avg"] = torch.zeros_like(p)
                    grad_avg = state["grad_avg"]
                    grad_avg.lerp_(grad, b(self.one_minus_alpha))
                    avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
                else:
                    avg = square_avg.sqrt()
                avg.add_(b(self.eps))
                if self.momentum_on:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.mul_(b(self.momentum)).addcdiv_(grad, avg)
                    p.sub_(buf * b(lr))
                else:
                    p.sub_(grad.div(avg).mul_(b(lr)))
            else:  # adagrad
                state["sum"].addcmul_(grad, grad)
                std = state["sum"].sqrt().add_(b(self.eps))
                p.sub_(grad.div(std).mul_(b(clr)))
        for hyper in self.schedules:
            if not hyper.constant:
                hyper.schedule.step()


# --------------------------------------------------------------------------------------------------
# Training a group (in the launcher's child process).


@dataclass
class GroupJob:
    """A job of a group: its config, run key and the folds its run already has."""

    cfg: DictConfig
    key: str
    done_folds: set[int] = field(default_factory=set)


def train_group(jobs: list[GroupJob]) -> dict[str, Any]:
    """Train the pending folds of ``jobs`` as one stacked model.

    Returns ``{"results": {run_key: {fold: rows | DivergedError}}, "info": {...}}`` (picklable),
    or ``{"unstackable": reason}`` when the group cannot be stacked.
    """
    from mlcli import runner
    from mlcli.config import enum_name
    from mlcli.config.targets import instantiate
    from mlcli.cv import plan
    from mlcli.data.loading import build_dataset, split_config
    from mlcli.engine.stacked import (
        AUTO_MAX_MACS_PER_STEP,
        StackedModel,
        UnstackableError,
        build_member,
        common_steps_per_epoch,
        config_reason,
        train_members,
    )
    from mlcli.models import model_factory

    started = time.perf_counter()
    first = jobs[0].cfg
    torch.set_num_threads(int(first.threads))
    device = runner.resolve_device(enum_name(first.device))
    allow = list(first.get("allow_targets") or [])
    members, models, hypers = [], [], []
    task: Task = "classification"
    try:
        for j, job in enumerate(jobs):
            cfg = job.cfg
            runner.seed_everything(int(cfg.seed))
            dataset = build_dataset(cfg)
            split = plan(dataset, instantiate(cfg.cv, "cv", allow), *split_config(cfg))
            reason = config_reason(cfg, dataset)
            if reason is not None:
                return {"unstackable": reason}
            task = dataset.task
            build = model_factory(cfg.model, dataset, allow)
            for fold in range(len(split.folds)):
                if fold in job.done_folds:
                    continue
                member, model = build_member(
                    cfg, job.key, dataset, split.folds, fold, split.test, device, j, build
                )
                members.append(member)
                models.append(model)
        if not members:
            return {"results": {}, "info": {}}
        stacked = StackedModel(models)
        batch_size = int(first.batch_size)
        auto = all(enum_name(job.cfg.get("stack_folds", "auto")) == "auto" for job in jobs)
        if auto and stacked.macs * batch_size > AUTO_MAX_MACS_PER_STEP:
            return {"unstackable": "compute-bound model (stack_folds=auto)"}
        if batch_size == 1 and stacked.batch_norm:  # each job fails with the reason on its own
            return {"unstackable": "batch_size=1 with batch norm"}
        steps_per_epoch = common_steps_per_epoch(members, batch_size, stacked.batch_norm)
        total_steps = int(first.epochs) * steps_per_epoch
    except UnstackableError as error:
        return {"unstackable": str(error)}
    by_job = {j: _hyper(job.cfg, total_steps, allow) for j, job in enumerate(jobs)}
    hypers = [by_job[m.job] for m in members]
    outcome = train_members(
        members,
        stacked,
        MemberOptimizer([stacked.flat], hypers),
        task=task,
        epochs=int(first.epochs),
        batch_size=batch_size,
        clip=first.get("clip_grad_norm"),
        device=device,
        diverge_factor=first.get("diverge_factor"),
    )
    results: dict[str, dict[int, Any]] = {}
    for member, result in zip(members, outcome, strict=True):
        results.setdefault(member.key, {})[member.fold] = result
    info = {
        "runs": len(jobs),
        "models": len(members),
        "train_s": round(time.perf_counter() - started, 3),
    }
    return {"results": results, "info": info}
