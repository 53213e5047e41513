"""Stacked folds: the K folds of a run trained as one model with a leading fold dimension.

A small MLP on a small batch is overhead-bound: each step spends far more time in Python and in
launching ~30 tiny kernels than in arithmetic. Training the K folds of a run side by side, with
every weight stacked along a new first dimension (``[K, out, in]``, ``torch.baddbmm`` instead of
``addmm``), pays that overhead once per step instead of K times. Activations are kept
features-first (``[K, features, B]``), so no matrix product has a narrow result (see
:meth:`StackedModel.forward`); all parameters are views of one ``[K, P]`` tensor, which the
optimizer (fused where it has a kernel) and the per-fold clipping update as one.

Each fold keeps what it has when trained alone:

* its initial weights (the model is built under the fold's own seed, then stacked),
* its batch order (its own generator, same permutation per epoch),
* its normalization statistics (its own :class:`~mlcli.train.FoldData`),
* its batch-norm statistics (running mean/var per fold; the batch statistics of a step are
  computed per fold, by treating the K×C stacked features as K·C channels),
* its optimizer state: the optimizers mlcli stacks are elementwise (SGD, Adam, AdamW, RMSprop,
  Adagrad), so one optimizer over stacked tensors makes the same update as K optimizers (a
  fused kernel's up to float rounding),
* its gradient clipping (the norm is taken per fold),
* its divergence: a fold whose loss becomes NaN/inf is recorded at that step, and one whose
  epoch fails :func:`~mlcli.train.epoch_divergence` (non-finite val/test metric, mean training
  loss past its own bound) at that epoch, exactly as the sequential loop would stop there (the
  folds do not mix, so the others are unaffected).

Dropout (its masks come from the global generator, in an order only sequential training has),
analyses, sequence tasks and models other than mlcli's ``linear``/``mlp`` are declared
unstackable: ``stack_folds=auto`` then trains sequentially, ``stack_folds=on`` fails with the
reason. ``auto`` stacks when a step's arithmetic per fold is small (overhead-bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F

from mlcli.build import instantiate
from mlcli.data.base import Dataset, Task
from mlcli.models import build_model, model_factory
from mlcli.optimizers import build_fused_optimizer
from mlcli.preprocess import enum_name, fold_tensors
from mlcli.train import (
    COUNT_CHUNK,
    EVAL_CHUNK,
    DivergedError,
    DivergenceWatch,
    FoldData,
    LossBound,
    _loss,
    _train_metrics,
    batches_per_epoch,
    check_batch_size,
    defers_divergence_check,
    epoch_divergence,
    regression_metrics,
)

FoldRows = list[dict[str, Any]]

PRECOMPUTED: dict[str, dict[str, Any]] = {}
"""Folds already trained by the stacked launcher (:mod:`mlcli.grid`), by run key: ``{"results":
{fold: rows | DivergedError}, "info": {...}}``. :func:`fold_results` takes a run's rows from here
when they cover all its pending folds."""

# Elementwise optimizers: one over stacked tensors updates each fold as its own would.
STACKABLE_OPTIMIZERS = {
    "torch.optim.SGD",
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "torch.optim.RMSprop",
    "torch.optim.Adagrad",
}
STACKABLE_TASKS = ("classification", "regression")
# auto stacks when one fold's step costs less arithmetic than this (multiply-adds): below it a
# step is dominated by per-kernel overhead (the digits MLP is ~0.6 M, at ~5% of a core's peak).
AUTO_MAX_MACS_PER_STEP = 8_000_000
ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Identity)


class UnstackableError(ValueError):
    """The run's folds cannot be trained as one stacked model (the message says why)."""


def config_reason(cfg: DictConfig, dataset: Dataset) -> str | None:
    """Why this run cannot be stacked, judged from its config and data alone (None: it can)."""
    if dataset.task not in STACKABLE_TASKS:
        return f"task {dataset.task!r} (stacking covers {' and '.join(STACKABLE_TASKS)})"
    target = str(cfg.optim.get("_target_"))
    if target not in STACKABLE_OPTIMIZERS:
        return f"optimizer {target} is not one of the elementwise {sorted(STACKABLE_OPTIMIZERS)}"
    if cfg.optim.get("amsgrad") or cfg.optim.get("fused"):
        return "amsgrad/fused optimizer options"
    if cfg.analysis.get("hessian") is not None or cfg.analysis.get("landscape") is not None:
        return "an analysis is configured (it inspects one model at a time)"
    if dataset.categorical or (dataset.X.dtype.kind == "f" and np.isnan(dataset.X).any()):
        return "per-fold one-hot encoding/imputation can give the folds different input widths"
    return None


class StackedModel:
    """K copies of an mlcli ``linear``/``mlp`` model as stacked tensors with a fold dimension."""

    def __init__(self, models: list[nn.Module]) -> None:
        first = models[0]
        if not isinstance(first, nn.Sequential):
            raise UnstackableError(f"model {type(first).__name__} is not an nn.Sequential")
        self.k = len(models)
        self.layers: list[tuple[str, Any]] = []
        self.params: list[torch.Tensor] = []
        self.macs = 0
        self.batch_norm = False  # a batch-norm layer: a batch of one row cannot be trained on

        def stack(tensors: list[torch.Tensor], grad: bool) -> torch.Tensor:
            out = torch.stack([t.detach() for t in tensors]).contiguous()
            if grad:
                out.requires_grad_(True)
                self.params.append(out)
            return out

        for i, layer in enumerate(first):
            same: list[Any] = [m[i] for m in models]  # type: ignore[index]
            if any(type(s) is not type(layer) for s in same):
                raise UnstackableError("the folds' models differ in structure")
            if isinstance(layer, nn.Flatten):
                self.layers.append(("flatten", None))
            elif isinstance(layer, nn.Linear):
                weight = stack([m.weight for m in same], True)  # [K, out, in]
                bias = stack([m.bias for m in same], True) if layer.bias is not None else None
                self.layers.append(("linear", (weight, bias)))
                self.macs += layer.in_features * layer.out_features
            elif isinstance(layer, nn.BatchNorm1d):
                if not (layer.affine and layer.track_running_stats):
                    raise UnstackableError("batch norm without affine/running statistics")
                self.batch_norm = True
                self.layers.append(
                    (
                        "batch_norm",
                        (
                            stack([m.weight for m in same], True),
                            stack([m.bias for m in same], True),
                            stack([m.running_mean for m in same], False),
                            stack([m.running_var for m in same], False),
                            layer.momentum,
                            layer.eps,
                        ),
                    )
                )
            elif isinstance(layer, nn.Dropout) and layer.p == 0:
                continue
            elif isinstance(layer, nn.Dropout):
                raise UnstackableError(
                    "dropout (its masks come from the global generator in sequential order)"
                )
            elif isinstance(layer, ACTIVATIONS):
                self.layers.append(("elementwise", layer))
            else:
                raise UnstackableError(f"layer {type(layer).__name__} is not stackable")
        # One [K, P] tensor holds every fold's parameters (each parameter a view of it, each
        # fold's P values contiguous): the optimizer and the per-fold clipping then work on one
        # tensor, a few kernels a step instead of a few per parameter. Elementwise optimizers
        # make the same update whatever the layout.
        self.flat = torch.cat([p.detach().reshape(self.k, -1) for p in self.params], dim=1)
        self.flat.requires_grad_(True)
        offset = 0
        for p in self.params:
            size = p[0].numel()
            p.data = self.flat.detach()[:, offset : offset + size].view(p.shape)
            offset += size

    def gather_grads(self) -> None:
        """After ``backward``: the parameters' gradients, laid out as ``flat.grad``."""
        grads = [
            torch.zeros_like(p) if p.grad is None else p.grad for p in self.params
        ]  # a parameter the loss does not reach has a zero gradient, as in its own model
        self.flat.grad = torch.cat([g.reshape(self.k, -1) for g in grads], dim=1)

    def zero_grad(self) -> None:
        """Drop every gradient (as ``zero_grad(set_to_none=True)``)."""
        self.flat.grad = None
        for p in self.params:
            p.grad = None

    def forward(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        """All folds at once: ``x`` is ``[K, B, ...]``, the output ``[K, B, out]`` (a view).

        From the first linear layer on, activations are kept features-first, ``[K, features,
        B]``: each layer is ``W @ h`` (``[K, out, in] @ [K, in, B]``), so every product of the
        forward and backward passes is B, ``in`` or ``out`` wide except for the gradient to ``h``
        (``in`` wide). A product whose result is narrow (a 10-class output layer computed as
        ``h @ W``) runs several times slower than its transpose on a CPU.
        """
        k, b = x.shape[0], x.shape[1]
        features_first = False
        for kind, spec in self.layers:
            if kind == "flatten":
                if features_first:
                    raise UnstackableError("a Flatten layer after a linear layer")
                x = x.reshape(k, b, -1)
                continue
            if kind in ("linear", "batch_norm") and not features_first:
                if x.dim() != 3:
                    raise UnstackableError(f"a linear layer on {x.dim() - 1}-d examples")
                x, features_first = x.transpose(1, 2), True
            if kind == "linear":
                weight, bias = spec
                x = (
                    torch.bmm(weight, x)
                    if bias is None
                    else torch.baddbmm(bias[..., None], weight, x)
                )
            elif kind == "batch_norm":
                weight, bias, mean, var, momentum, eps = spec
                c = x.shape[1]
                # K folds x C features = K*C channels of one example of length B: per-fold batch
                # statistics in one call.
                flat = F.batch_norm(
                    x.reshape(1, k * c, b),
                    mean.view(-1),
                    var.view(-1),
                    weight.reshape(-1),
                    bias.reshape(-1),
                    training,
                    momentum if momentum is not None else 0.1,
                    eps,
                )
                x = flat.view(k, c, b)
            else:
                x = spec(x)
        return x.transpose(1, 2) if features_first else x

    def forward_one(self, fold: int, x: torch.Tensor, training: bool) -> torch.Tensor:
        """Fold ``fold`` alone (an index into the stack) on ``x`` of shape ``[B, ...]``."""
        for kind, spec in self.layers:
            if kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            elif kind == "linear":
                weight, bias = spec
                x = F.linear(x, weight[fold], None if bias is None else bias[fold])
            elif kind == "batch_norm":
                weight, bias, mean, var, momentum, eps = spec
                x = F.batch_norm(
                    x,
                    mean[fold],
                    var[fold],
                    weight[fold],
                    bias[fold],
                    training,
                    momentum if momentum is not None else 0.1,
                    eps,
                )
            else:
                x = spec(x)
        return x


def _clip_per_fold(flat: torch.Tensor, max_norm: float) -> None:
    """``clip_grad_norm_`` applied to each fold's gradients (a row of ``flat.grad``) separately."""
    assert flat.grad is not None
    total = flat.grad.norm(dim=1)
    flat.grad.mul_((max_norm / (total + 1e-6)).clamp(max=1.0)[:, None])


@dataclass
class PaddedSplit:
    """One split of every member, zero-padded to the longest (``mask`` marks the real rows)."""

    x: torch.Tensor  # [K, N, ...]
    y: torch.Tensor  # [K, N, ...]
    mask: torch.Tensor  # [K, N], 1.0 for a real row
    counts: torch.Tensor  # [K] real rows

    @classmethod
    def of(cls, datas: list[FoldData], split: str) -> PaddedSplit | None:
        """The members' ``val`` or ``test`` rows (None when a member has none)."""
        xs = [getattr(d, f"x_{split}") for d in datas]
        ys = [getattr(d, f"y_{split}") for d in datas]
        if any(x is None or len(x) == 0 for x in xs) or any(y is None for y in ys):
            return None
        n = max(len(x) for x in xs)

        def pad(t: torch.Tensor) -> torch.Tensor:
            return F.pad(t, (0, 0) * (t.dim() - 1) + (0, n - len(t)))

        first = xs[0]
        mask = torch.stack(
            [(torch.arange(n, device=first.device) < len(x)).to(torch.float32) for x in xs]
        )
        counts = torch.tensor([len(x) for x in xs], dtype=torch.float32, device=first.device)
        return cls(
            torch.stack([pad(x) for x in xs]), torch.stack([pad(y) for y in ys]), mask, counts
        )


@torch.no_grad()
def evaluate_members(
    stacked: StackedModel,
    split: PaddedSplit,
    task: Task,
    means: torch.Tensor,
    stds: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """:func:`mlcli.train.evaluate` for every member at once: each metric as ``[K]`` values
    over that member's real rows (eval mode: padded rows change nothing, batch norm included)."""
    k, n = split.mask.shape
    rows = max(1, EVAL_CHUNK // k)
    outputs = [stacked.forward(split.x[:, i : i + rows], training=False) for i in range(0, n, rows)]
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
    mask, counts = split.mask, split.counts

    def mean(values: torch.Tensor) -> torch.Tensor:  # [K, N] -> [K, 1], over real rows
        return ((values * mask).sum(dim=1) / counts)[:, None]

    if task == "classification":
        per_row = F.cross_entropy(output.transpose(1, 2), split.y, reduction="none")
        correct = (output.argmax(dim=-1) == split.y).to(per_row.dtype)
        metrics = {"loss": mean(per_row), "acc": mean(correct)}
    else:
        y, standardized = split.y.reshape(k, n), output.reshape(k, n)
        metrics = {
            "loss": mean((standardized - y).pow(2)),
            **regression_metrics(standardized, y, means[:, None], stds[:, None], mean),
        }
    return {name: value.squeeze(1) for name, value in metrics.items()}


@dataclass
class Member:
    """One model of a stack: a fold of a run (its data, batch order, and whose rows they are)."""

    key: str
    fold: int
    job: int
    data: FoldData
    generator: torch.Generator


def build_member(
    cfg: DictConfig,
    key: str,
    dataset: Dataset,
    folds: list[tuple[np.ndarray, np.ndarray]],
    fold: int,
    test_idx: np.ndarray,
    device: torch.device,
    job: int = 0,
    build: Callable[[tuple[int, ...] | None], nn.Module] | None = None,
) -> tuple[Member, nn.Module]:
    """Fold ``fold`` of run ``cfg`` set up as :func:`mlcli.runner._run_fold` sets it up (same
    data, seeds and initial weights), with its model (``build``: the run's
    :func:`~mlcli.models.model_factory`, made here if not given)."""
    from mlcli.runner import derived_seed, seed_everything

    train_idx, val_idx = folds[fold]
    data = fold_tensors(dataset, train_idx, val_idx, test_idx, cfg.dataset, device)
    seed_everything(derived_seed(int(cfg.seed), fold))
    if build is None:
        build = model_factory(cfg.model, dataset, list(cfg.get("allow_targets") or []))
    model = build(tuple(data.x_train.shape[1:])).to(device)  # as _run_fold: after preprocessing
    generator = torch.Generator().manual_seed(derived_seed(int(cfg.seed), fold, 1))
    return Member(key, fold, job, data, generator), model


class Stepper(Protocol):
    """Optimizer and schedule of a stack: the lr each member's next step uses, and the step
    (on :attr:`StackedModel.flat`, whose gradient the loop sets)."""

    def lrs(self) -> list[float]: ...

    def step(self) -> None: ...


class _SharedStepper:
    """One torch optimizer and schedule over the stacked tensors (all members alike)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        k: int,
    ) -> None:
        self.optimizer, self.scheduler, self.k = optimizer, scheduler, k

    def lrs(self) -> list[float]:
        return [float(self.optimizer.param_groups[0]["lr"])] * self.k

    def step(self) -> None:
        self.optimizer.step()
        self.scheduler.step()


def train_stacked(
    cfg: DictConfig,
    key: str,
    dataset: Dataset,
    folds: list[tuple[np.ndarray, np.ndarray]],
    fold_ids: list[int],
    test_idx: np.ndarray,
    device: torch.device,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict[int, FoldRows | DivergedError]:
    """Train the folds ``fold_ids`` as one stacked model; each fold's rows (or its divergence).

    Every fold is set up as :func:`mlcli.runner._run_fold` sets it up (same seeds, same data),
    so its rows equal those of sequential training up to float rounding.
    """
    allow = list(cfg.get("allow_targets") or [])
    build = model_factory(cfg.model, dataset, allow)
    built = [
        build_member(cfg, key, dataset, folds, f, test_idx, device, build=build) for f in fold_ids
    ]
    members = [m for m, _ in built]
    stacked = StackedModel([model for _, model in built])
    steps_per_epoch = common_steps_per_epoch(members, int(cfg.batch_size), stacked.batch_norm)
    optimizer = build_fused_optimizer(cfg.optim, stacked.flat, allow)
    scheduler = instantiate(cfg.scheduler, "scheduler", allow)(
        optimizer, total_steps=int(cfg.epochs) * steps_per_epoch
    )
    outcome = train_members(
        members,
        stacked,
        _SharedStepper(optimizer, scheduler, len(members)),
        task=dataset.task,
        epochs=int(cfg.epochs),
        batch_size=int(cfg.batch_size),
        clip=cfg.get("clip_grad_norm"),
        device=device,
        on_epoch=on_epoch,
        diverge_factor=cfg.get("diverge_factor"),
    )
    return {m.fold: result for m, result in zip(members, outcome, strict=True)}


def common_steps_per_epoch(members: list[Member], batch_size: int, batch_norm: bool) -> int:
    """The members' optimizer steps per epoch (they must agree to step together; ``batch_norm``:
    the model has batch norm, so a trailing batch of one row is dropped)."""
    steps = {batches_per_epoch(len(m.data.x_train), batch_size, batch_norm) for m in members}
    if len(steps) != 1:
        raise UnstackableError(f"the folds have different numbers of batches per epoch {steps}")
    return steps.pop()


def train_members(
    members: list[Member],
    stacked: StackedModel,
    stepper: Stepper,
    *,
    task: Task,
    epochs: int,
    batch_size: int,
    clip: float | None,
    device: torch.device,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
    diverge_factor: float | None = None,
) -> list[FoldRows | DivergedError]:
    """Train the stack; each member's rows (long form, with its run key) or its divergence.

    A member's divergence is recorded at the step (or epoch end) where sequential training of the
    fold would raise it, each member with its own :class:`~mlcli.train.LossBound`
    (``diverge_factor`` × its own first loss). Sequential training of a run stops at its first
    diverging fold, so a run's later folds are not needed once an earlier one diverged; training
    stops when no member is still needed.
    """
    datas = [m.data for m in members]
    generators = [m.generator for m in members]
    sizes = [len(d.x_train) for d in datas]
    batch_norm = stacked.batch_norm
    check_batch_size(batch_size, batch_norm)
    steps_per_epoch = common_steps_per_epoch(members, batch_size, batch_norm)

    k = len(members)
    x_all = torch.cat([d.x_train for d in datas])
    y_all = torch.cat([d.y_train for d in datas])
    row_shape = tuple(x_all.shape[1:])
    offsets = torch.tensor(np.cumsum([0, *sizes[:-1]]), device=device)
    means = torch.tensor([d.target_mean for d in datas], device=device)
    stds = torch.tensor([d.target_std for d in datas], device=device)
    val_split = PaddedSplit.of(datas, "val")
    assert val_split is not None
    full = min(n // batch_size for n in sizes)
    diverged: dict[int, DivergedError] = {}
    bounds = [LossBound(diverge_factor) for _ in members]
    first_losses: torch.Tensor | None = None  # each member's first loss, read at the epoch's end
    results: dict[int, list[tuple[int, str, str, float]]] = {i: [] for i in range(k)}
    step = 0

    def needed(i: int) -> bool:
        """Member i still matters: not diverged, and no earlier fold of its run diverged."""
        m = members[i]
        return i not in diverged and not any(
            members[j].job == m.job and members[j].fold < m.fold for j in diverged
        )

    def account(
        loss_sums: torch.Tensor,
        score_sums: torch.Tensor,
        step_losses: list[torch.Tensor],
        outputs: list[torch.Tensor],
        targets: list[torch.Tensor],
    ) -> None:
        """Add the per-fold sums of several full steps in place (each step's ``output``/``y``
        with a leading fold dim): one reduction for many steps, not a few kernels a step."""
        batches = torch.tensor([t.shape[1] for t in targets], dtype=loss_sums.dtype, device=device)
        loss_sums += (torch.stack(step_losses) * batches[:, None]).sum(dim=0)
        output, y = torch.cat(outputs, dim=1), torch.cat(targets, dim=1)
        if task == "classification":
            score_sums[:, 0] += (output.argmax(dim=-1) == y).sum(dim=1)
        else:
            target = y * stds[:, None] + means[:, None]
            error = output.reshape(y.shape) * stds[:, None] + means[:, None] - target
            score_sums += torch.stack(
                [error.pow(2).sum(1), error.abs().sum(1), target.sum(1), target.pow(2).sum(1)],
                dim=1,
            )

    watch = DivergenceWatch(k, device) if defers_divergence_check(device) else None

    def check(losses: torch.Tensor, epoch: int) -> None:
        if watch is not None:  # on an accelerator: recorded on the device, read once an epoch
            watch.see(losses, step)
            return
        # One host sync per step, as in the sequential loop: a diverging fold is caught at once.
        if math.isfinite(losses.sum().item()):  # (a sum of finite losses that overflows: below)
            return
        for i, value in enumerate(losses.tolist()):
            if not math.isfinite(value) and i not in diverged:
                diverged[i] = DivergedError(epoch, step, value)

    for epoch in range(1, epochs + 1):
        loss_sums = torch.zeros(k, device=device)
        score_sums = torch.zeros(k, 4, device=device)
        # Full steps not yet accounted for: their losses, outputs and targets.
        pending: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = ([], [], [])
        seen = [0] * k
        lr_used = stepper.lrs()
        perms = [
            torch.randperm(n, generator=g).to(device)
            for n, g in zip(sizes, generators, strict=True)
        ]
        grid = torch.stack([p[: full * batch_size] for p in perms]) + offsets[:, None]
        grid = grid.view(k, full, batch_size).transpose(0, 1)  # [step, fold, row]
        tails = [p[full * batch_size :] + offsets[i] for i, p in enumerate(perms)]
        for s in range(steps_per_epoch):
            if s < full:
                index = grid[s]
            elif len({len(t) for t in tails}) == 1:  # (a tail of one row only without batch norm)
                index = torch.stack(tails)
            else:
                index = None
            if index is not None:  # every fold has a batch of the same size: one stacked step
                rows = index.reshape(-1)
                x = x_all.index_select(0, rows).view(*index.shape, *row_shape)
                y = y_all.index_select(0, rows).view(*index.shape, *y_all.shape[1:])
                output = stacked.forward(x, training=True)
                if task == "classification":
                    # classes on dim 1 ([K, C, B], the layout the model computes in): no copy
                    per_row = F.cross_entropy(output.transpose(1, 2), y, reduction="none")
                    losses = per_row.mean(dim=1)
                else:
                    losses = F.mse_loss(output.reshape(y.shape), y, reduction="none").mean(dim=1)
                member_losses = losses.detach()
                check(member_losses, epoch)
                for i in range(k):
                    seen[i] += y.shape[1]
            else:  # the folds' last batches differ in size: each fold on its own rows
                loss_list: list[torch.Tensor] = []
                outputs: list[torch.Tensor | None] = []
                for i, t in enumerate(tails):
                    if len(t) == 0 or (len(t) == 1 and batch_norm):
                        outputs.append(None)
                        continue
                    tail_out = stacked.forward_one(i, x_all[t], training=True)
                    loss_list.append(_loss(task, tail_out, y_all[t]))
                    outputs.append(tail_out)
                losses = torch.stack(loss_list)
                check_list = torch.zeros(k, device=device)
                j = 0
                for i, maybe in enumerate(outputs):
                    if maybe is None:
                        continue
                    check_list[i] = losses[j].detach()
                    j += 1
                member_losses = check_list
                check(check_list, epoch)
                for i, (t, out) in enumerate(zip(tails, outputs, strict=True)):
                    if out is None:
                        continue
                    out = out.detach()
                    seen[i] += len(t)
                    with torch.no_grad():
                        loss_sums[i] += check_list[i] * len(t)
                        yt = y_all[t]
                        if task == "classification":
                            score_sums[i, 0] += (out.argmax(dim=-1) == yt).sum()
                        else:
                            target = yt * stds[i] + means[i]
                            error = out.reshape(yt.shape) * stds[i] + means[i] - target
                            score_sums[i] += torch.stack(
                                [
                                    error.pow(2).sum(),
                                    error.abs().sum(),
                                    target.sum(),
                                    target.pow(2).sum(),
                                ]
                            )
            if step == 0:
                first_losses = member_losses  # the losses at initialization: the bounds' reference
            stacked.zero_grad()
            losses.sum().backward()  # d(sum)/d(fold's params) = that fold's own gradient
            stacked.gather_grads()
            if clip is not None:
                _clip_per_fold(stacked.flat, float(clip))
            if s == steps_per_epoch - 1:  # the lr the epoch's last step uses (a row per epoch)
                lr_used = stepper.lrs()
            stepper.step()
            step += 1
            if index is not None:
                for kept, value in zip(pending, (losses, output, y), strict=True):
                    kept.append(value.detach())
                if len(pending[0]) * output.numel() >= COUNT_CHUNK:
                    with torch.no_grad():
                        account(loss_sums, score_sums, *pending)
                    pending = ([], [], [])
        if pending[0]:
            with torch.no_grad():
                account(loss_sums, score_sums, *pending)
        if watch is not None:
            for i, found in watch.flush(epoch).items():
                diverged.setdefault(i, found)
        if not any(needed(i) for i in range(k)):
            break

        alive = [i for i in range(k) if i not in diverged]
        seen_t = torch.tensor(seen, dtype=loss_sums.dtype, device=device).clamp_min(1)
        train_values = _train_metrics(task, loss_sums, score_sums.T, seen_t)  # each [K]
        val_values = evaluate_members(stacked, val_split, task, means, stds)
        names = [("train", m) for m in train_values] + [("val", m) for m in val_values]
        # One transfer for every member's epoch (and the bounds' references, once).
        reference = [first_losses] if first_losses is not None and epoch == 1 else []
        columns = [*train_values.values(), *val_values.values(), *reference]
        table = torch.stack(columns, dim=1)[alive].tolist()
        for i, numbers in zip(alive, table, strict=True):
            if reference:
                bounds[i].initial = numbers.pop()
            metrics = {f"{sp}/{m}": v for (sp, m), v in zip(names, numbers, strict=True)}
            judged = epoch_divergence(epoch, step - 1, metrics, bounds[i].limit)
            if judged is not None:
                diverged[i] = judged
                continue
            metrics["train/lr"] = float(lr_used[i])
            for name, value in metrics.items():
                split, metric = name.split("/", 1)
                results[i].append((epoch, split, metric, value))
            if on_epoch is not None:
                on_epoch(members[i].fold, epoch, metrics)
        if not any(needed(i) for i in range(k)):
            break

    finished: list[FoldRows | DivergedError] = []
    test_split = PaddedSplit.of(datas, "test")
    if test_split is not None and any(needed(i) for i in range(k)):
        # every member's test rows, once, after the last epoch
        test_values = evaluate_members(stacked, test_split, task, means, stds)
        test_table = torch.stack(list(test_values.values()), dim=1).tolist()
        for i in range(k):
            if i in diverged:
                continue
            named = {f"test/{m}": v for m, v in zip(test_values, test_table[i], strict=True)}
            judged = epoch_divergence(epochs, step - 1, named, None)
            if judged is not None:
                diverged[i] = judged
                continue
            results[i].extend(
                (epochs, "test", m, v) for m, v in zip(test_values, test_table[i], strict=True)
            )
    for i, member in enumerate(members):
        if i in diverged:
            finished.append(diverged[i])
            continue
        finished.append(
            [
                {
                    "run_key": member.key,
                    "fold": member.fold,
                    "epoch": e,
                    "split": s,
                    "metric": m,
                    "value": v,
                }
                for e, s, m, v in results[i]
            ]
        )
    return finished


def should_stack(cfg: DictConfig, dataset: Dataset, n_pending: int) -> bool:
    """Whether to stack this run's pending folds (``stack_folds=on`` with a reason: an error)."""
    mode = enum_name(cfg.get("stack_folds", "auto"))
    if mode == "off" or n_pending < 1 or (mode == "auto" and n_pending < 2):
        return False
    reason = config_reason(cfg, dataset)
    if reason is not None:
        if mode == "on":
            raise UnstackableError(f"stack_folds=on, but the folds cannot be stacked: {reason}")
        return False
    if mode == "auto":
        model = build_model(cfg.model, dataset, list(cfg.get("allow_targets") or []))
        try:
            stacked = StackedModel([model])
        except UnstackableError:
            return False
        return stacked.macs * int(cfg.batch_size) <= AUTO_MAX_MACS_PER_STEP
    return True


def fold_results(
    cfg: DictConfig,
    key: str,
    dataset: Dataset,
    folds: list[tuple[np.ndarray, np.ndarray]],
    done_folds: set[int],
    test_idx: np.ndarray,
    device: torch.device,
    reporter: Any,
    run_fold: Callable[[int, Any], FoldRows],
    status: dict[str, Any] | None = None,
) -> Iterator[tuple[int, FoldRows]]:
    """Yield ``(fold, rows)`` for every fold not yet done, in fold order.

    Taken from :data:`PRECOMPUTED` when the stacked launcher trained them already; else
    stacked when :func:`should_stack` says so, else in parallel processes
    (``parallel_folds > 1``), else one fold after another with ``run_fold(fold, reporter)``.
    Raises :class:`~mlcli.train.DivergedError` where sequential training would, after yielding
    the folds before it. ``status`` (the run's status.json dict) gets ``fold_training``: how the
    folds were trained.
    """
    pending = [f for f in range(len(folds)) if f not in done_folds]
    status = status if status is not None else {}
    ready = PRECOMPUTED.get(key)
    if ready is not None and all(f in ready["results"] for f in pending):
        status["fold_training"] = "stacked grid"
        status["stacked_grid"] = dict(ready["info"])
        for fold in pending:
            result = ready["results"][fold]
            if isinstance(result, DivergedError):
                raise result
            yield fold, result
        return
    stack = should_stack(cfg, dataset, len(pending))
    if stack:
        if reporter is not None:
            reporter.stacked(len(pending))  # the display says "5 folds stacked"
        try:
            outcome = train_stacked(
                cfg,
                key,
                dataset,
                folds,
                pending,
                test_idx,
                device,
                reporter.epoch if reporter is not None else None,
            )
        except UnstackableError:
            if enum_name(cfg.get("stack_folds", "auto")) == "on":
                raise
            outcome = None
            if reporter is not None:
                reporter.stacked(0)  # one fold after another after all
        if outcome is not None:
            status["fold_training"] = "stacked"
            for fold in pending:
                result = outcome[fold]
                if isinstance(result, DivergedError):
                    raise result
                yield fold, result
            return
    if int(cfg.get("parallel_folds", 1)) > 1 and len(pending) > 1:
        from mlcli.parallel import parallel_fold_results

        status["fold_training"] = "parallel"
        # The workers report no progress: a live display belongs to the parent's terminal.
        yield from parallel_fold_results(
            int(cfg.parallel_folds), pending, lambda fold: run_fold(fold, None)
        )
        return
    status["fold_training"] = "sequential"
    for fold in pending:
        yield fold, run_fold(fold, reporter)
