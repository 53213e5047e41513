"""Stacked folds: the K folds of a run trained as one model with a leading fold dimension.

A small MLP on a small batch is overhead-bound: each step spends far more time in Python and in
launching ~30 tiny kernels than in arithmetic. Training the K folds of a run side by side, with
every weight stacked along a new first dimension (``[K, out, in]``, ``torch.baddbmm`` instead of
``addmm``), pays that overhead once per step instead of K times. Activations are kept
features-first (``[K, features, B]``), so no matrix product has a narrow result (see
:meth:`StackedModel.forward`); all parameters are views of one ``[K, P]`` tensor, which the
optimizer (fused where it has a kernel) and the per-fold clipping update as one.

Each fold is set up as it is trained alone (:func:`mlcli.engine.setup.set_up_fold`) and keeps
what it has then:

* its initial weights (the model is built under the fold's own seed, then stacked),
* its batch order (its own generator, same permutation per epoch),
* its normalization statistics (its own :class:`~mlcli.data.preprocess.FoldData`),
* its batch-norm statistics (running mean/var per fold; the batch statistics of a step are
  computed per fold, by treating the K×C stacked features as K·C channels),
* its optimizer state: the optimizers mlcli stacks are elementwise (SGD, Adam, AdamW, RMSprop,
  Adagrad), so one optimizer over stacked tensors makes the same update as K optimizers (a
  fused kernel's up to float rounding),
* its gradient clipping (the norm is taken per fold),
* its divergence: a fold whose loss becomes NaN/inf is recorded at that step, and one whose
  epoch fails :func:`~mlcli.engine.divergence.epoch_divergence` (non-finite val/test metric, mean
  training loss past its own bound) at that epoch, exactly as the sequential loop would stop there
  (the folds do not mix, so the others are unaffected).

Dropout (its masks come from the global generator, in an order only sequential training has),
analyses, sequence tasks and models other than mlcli's ``linear``/``mlp`` are declared
unstackable (:func:`stacking_reason`): ``stack_folds=auto`` then trains sequentially,
``stack_folds=on`` fails with the reason. ``auto`` stacks when a step's arithmetic per fold is
small (overhead-bound). The per-task loss and metrics are those of :mod:`mlcli.tasks.metrics`,
as in the plain loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F

from mlcli.config import enum_name
from mlcli.data.augment import augments
from mlcli.data.base import Dataset, Task
from mlcli.data.preprocess import FoldData
from mlcli.engine.divergence import (
    DivergedError,
    DivergenceWatch,
    LossBound,
    defers_divergence_check,
    epoch_divergence,
)
from mlcli.engine.loop import (
    EVAL_CHUNK,
    EpochEnd,
    FoldRows,
    LrSteps,
    batches_per_epoch,
    check_batch_size,
    epoch_rows,
    long_rows,
    lr_step_rows,
)
from mlcli.engine.optim import step_function
from mlcli.engine.setup import FoldPlan, FoldSetup, set_up_fold
from mlcli.engine.stopping import EarlyStopping
from mlcli.tasks import metrics as task_metrics

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
    if any(cfg.analysis.get(name) is not None for name in ("hessian", "landscape", "trajectory")):
        return "an analysis is configured (it inspects one model at a time)"
    if dataset.pictures is not None:
        return "the pictures are read from disk per batch (dataset.cache=none)"
    if augments(cfg.get("augment")):
        return "augmentation transforms each fold's batches on their own"
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
        # Each member's state dict, by the names its own model gives them: ``[K, ...]`` tensors.
        self.named: dict[str, torch.Tensor] = {}
        self.buffers: list[torch.Tensor] = []  # batch-norm running statistics
        self.steps = 0  # training steps taken (batch norm's num_batches_tracked)

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
                self.named[f"{i}.weight"] = weight
                if bias is not None:
                    self.named[f"{i}.bias"] = bias
                self.macs += layer.in_features * layer.out_features
            elif isinstance(layer, nn.BatchNorm1d):
                if not (layer.affine and layer.track_running_stats):
                    raise UnstackableError("batch norm without affine/running statistics")
                self.batch_norm = True
                spec = (
                    stack([m.weight for m in same], True),
                    stack([m.bias for m in same], True),
                    stack([m.running_mean for m in same], False),
                    stack([m.running_var for m in same], False),
                    layer.momentum,
                    layer.eps,
                )
                self.layers.append(("batch_norm", spec))
                names = ("weight", "bias", "running_mean", "running_var")
                self.named.update({f"{i}.{n}": t for n, t in zip(names, spec[:4], strict=False)})
                self.named[f"{i}.num_batches_tracked"] = torch.zeros(self.k, dtype=torch.long)
                self.buffers.extend(spec[2:4])
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

    def member_state(self, i: int) -> list[torch.Tensor]:
        """A copy of member ``i``'s weights and batch-norm statistics."""
        return [self.flat.detach()[i].clone(), *(b[i].clone() for b in self.buffers)]

    def set_member_state(self, i: int, state: list[torch.Tensor]) -> None:
        """Put back what :meth:`member_state` copied (the other members are untouched)."""
        with torch.no_grad():
            self.flat[i] = state[0]
            for buffer, value in zip(self.buffers, state[1:], strict=True):
                buffer[i] = value

    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i`` as its own model's state dict (what ``load_state_dict`` reads)."""
        state = {name: t[i].detach().clone() for name, t in self.named.items()}
        for name in state:
            if name.endswith("num_batches_tracked"):
                state[name] = torch.tensor(self.steps, dtype=torch.long)
        return state

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
        return cls(torch.stack([pad(x) for x in xs]), torch.stack([pad(y) for y in ys]), mask)


@torch.no_grad()
def evaluate_members(
    stacked: StackedModel,
    split: PaddedSplit,
    task: Task,
    means: torch.Tensor,
    stds: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """:func:`mlcli.engine.loop.evaluate` for every member at once: each metric as ``[K]`` values
    over that member's real rows (eval mode: padded rows change nothing, batch norm included)."""
    k, n = split.mask.shape
    rows = max(1, EVAL_CHUNK // k)
    outputs = [stacked.forward(split.x[:, i : i + rows], training=False) for i in range(0, n, rows)]
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
    return task_metrics.member_eval_metrics(task, output, split.y, split.mask, means, stds)


@dataclass
class Member:
    """One model of a stack: a fold of a run (its data, batch order, and whose rows they are)."""

    key: str
    fold: int
    job: int
    data: FoldData
    generator: torch.Generator

    @classmethod
    def of(cls, setup: FoldSetup, key: str, job: int = 0) -> Member:
        """The member a fold set up by :func:`~mlcli.engine.setup.set_up_fold` becomes."""
        return cls(key, setup.fold, job, setup.data, setup.generator)


class Stepper(Protocol):
    """Optimizer and schedule of a stack: the lr each member's next step uses, and the step
    (on :attr:`StackedModel.flat`, whose gradient the loop sets)."""

    def lrs(self) -> list[float]: ...

    def step(self) -> None: ...


class SharedStepper:
    """One torch optimizer and schedule over the stacked tensors (all members alike).

    A fused Adam/AdamW steps through :class:`~mlcli.engine.optim.FusedAdamStep` (its kernel,
    called directly: the same numbers; :func:`~mlcli.engine.optim.step_function`); a constant
    schedule is not stepped (it never changes the lr), as in the plain loop.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        k: int,
    ) -> None:
        self.optimizer, self.scheduler, self.k = optimizer, scheduler, k
        # A constant schedule never changes the lr: the loop need not read it at every step.
        factors = getattr(scheduler, "lr_lambdas", [0])
        self.lr_fixed = all(getattr(f, "is_constant", False) for f in factors)
        self._step = step_function(optimizer)

    def lrs(self) -> list[float]:
        return [float(self.optimizer.param_groups[0]["lr"])] * self.k

    def step(self) -> None:
        self._step()
        if not self.lr_fixed:
            self.scheduler.step()


def stacking_reason(plan: FoldPlan) -> str | None:
    """Why ``plan``'s pending folds are not trained as one stacked model (None: they are).

    ``stack_folds=on`` demands it: a reason then raises :class:`UnstackableError` instead.
    ``auto`` stacks two or more folds of an overhead-bound model (a step's arithmetic per fold
    below :data:`AUTO_MAX_MACS_PER_STEP`) whose folds a pruner does not judge one by one.
    """
    cfg, dataset, pending = plan.cfg, plan.dataset, plan.pending
    mode = enum_name(cfg.get("stack_folds", "auto"))
    if mode == "off":
        return "stack_folds=off"
    if mode == "auto" and plan.one_at_a_time:
        return "a pruner judges the folds as they finish (stacked folds all finish at once)"
    if not pending or (mode == "auto" and len(pending) < 2):
        return "fewer than two folds to train"
    reason = config_reason(cfg, dataset) or _model_reason(plan, mode == "auto")
    if reason is not None and mode == "on":
        raise UnstackableError(f"stack_folds=on, but the folds cannot be stacked: {reason}")
    return reason


def _model_reason(plan: FoldPlan, auto: bool) -> str | None:
    """Why the run's model (one built here) cannot be stacked, or (``auto``) is not worth it."""
    cfg = plan.cfg
    model = plan.builders().model(None)  # (composed once: the folds build theirs with it)
    try:
        stacked = StackedModel([model])
        # One example through the stack: a layout it cannot compute shows now, not mid-training.
        stacked.forward(torch.zeros(1, 1, *plan.dataset.X.shape[1:]), training=False)
    except UnstackableError as error:
        return str(error)
    batch_size = int(cfg.batch_size)
    steps = {batches_per_epoch(len(train), batch_size, stacked.batch_norm) for train, _ in (
        plan.folds[f] for f in plan.pending
    )}  # fmt: skip
    if len(steps) != 1:
        return f"the folds have different numbers of batches per epoch {steps}"
    if auto and stacked.macs * batch_size > AUTO_MAX_MACS_PER_STEP:
        return "compute-bound model (stack_folds=auto)"
    return None


def train_stacked(
    plan: FoldPlan, on_epoch: EpochEnd | None = None, on_lr: LrSteps | None = None
) -> dict[int, FoldRows | DivergedError]:
    """Train ``plan``'s pending folds as one stacked model; each fold's rows (or its divergence).

    Every fold is set up as it is trained alone (:func:`~mlcli.engine.setup.set_up_fold`: same
    seeds, same data), so its rows equal those of sequential training up to float rounding.
    """
    cfg, builders = plan.cfg, plan.builders()
    setups = [set_up_fold(plan, fold, builders.model) for fold in plan.pending]
    members = [Member.of(setup, plan.key) for setup in setups]
    stacked = StackedModel([setup.model for setup in setups])
    steps_per_epoch = common_steps_per_epoch(members, int(cfg.batch_size), stacked.batch_norm)
    optimizer = builders.fused_optimizer(stacked.flat)
    scheduler = builders.scheduler(optimizer, total_steps=int(cfg.epochs) * steps_per_epoch)
    outcome = train_members(
        members,
        stacked,
        SharedStepper(optimizer, scheduler, len(members)),
        task=plan.dataset.task,
        epochs=int(cfg.epochs),
        batch_size=int(cfg.batch_size),
        clip=cfg.get("clip_grad_norm"),
        device=plan.device,
        on_epoch=on_epoch,
        on_lr=on_lr,
        diverge_factor=cfg.get("diverge_factor"),
        stoppers=[EarlyStopping.of(cfg, plan.metric) for _ in members],
    )
    return {m.fold: result for m, result in zip(members, outcome, strict=True)}


def common_steps_per_epoch(members: list[Member], batch_size: int, batch_norm: bool) -> int:
    """The members' optimizer steps per epoch (they must agree to step together; ``batch_norm``:
    the model has batch norm, so a trailing batch of one row is dropped)."""
    steps = {batches_per_epoch(len(m.data.x_train), batch_size, batch_norm) for m in members}
    if len(steps) != 1:
        raise UnstackableError(f"the folds have different numbers of batches per epoch {steps}")
    return steps.pop()


def _ragged_step(
    stacked: StackedModel,
    task: Task,
    tails: list[torch.Tensor],
    x_all: torch.Tensor,
    y_all: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, torch.Tensor, torch.Tensor]]]:
    """A step whose folds' batches differ in size (their last ones): each fold on its own rows
    ``tails[i]`` (none, or a single row under batch norm: no step for that fold). The losses of
    the folds that trained (to sum and backpropagate), every fold's loss (0 for the others), and
    each fold that trained with its rows and output."""
    losses: list[torch.Tensor] = []
    trained: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    for i, t in enumerate(tails):
        if len(t) == 0 or (len(t) == 1 and stacked.batch_norm):
            continue
        output = stacked.forward_one(i, x_all[t], training=True)
        losses.append(task_metrics.loss(task, output, y_all[t]))
        trained.append((i, t, output))
    stacked_losses = torch.stack(losses)
    member_losses = torch.zeros(len(tails), device=x_all.device)
    for (i, _, _), loss in zip(trained, stacked_losses, strict=True):
        member_losses[i] = loss.detach()
    return stacked_losses, member_losses, trained


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
    on_epoch: EpochEnd | None = None,
    on_lr: LrSteps | None = None,
    diverge_factor: float | None = None,
    stoppers: list[EarlyStopping | None] | None = None,
) -> list[FoldRows | DivergedError]:
    """Train the stack; each member's rows (long form, with its run key) or its divergence.

    A member's divergence is recorded at the step (or epoch end) where sequential training of the
    fold would raise it, each member with its own :class:`~mlcli.engine.loop.LossBound`
    (``diverge_factor`` × its own first loss). Sequential training of a run stops at its first
    diverging fold, so a run's later folds are not needed once an earlier one diverged; training
    stops when no member is still needed.

    ``stoppers``: each member's early stopping (:mod:`mlcli.engine.stopping`, the rule of the
    plain loop). A member that stops stops changing: after every later step its weights and
    batch-norm statistics are put back (its best epoch's with ``restore_best``), so it ends as
    it would alone; masking its gradient would not do, as momentum and Adam's state still move
    it.
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
    rules = stoppers if stoppers is not None else [None] * k
    best: dict[int, list[torch.Tensor]] = {}  # restore_best: each member's best epoch's state
    frozen: dict[int, list[torch.Tensor]] = {}  # each stopped member's final state
    last_epoch: dict[int, int] = {}  # each stopped member's last epoch

    def counts(i: int) -> bool:
        """Member i's rows count: not diverged, and no earlier fold of its run diverged."""
        m = members[i]
        return i not in diverged and not any(
            members[j].job == m.job and members[j].fold < m.fold for j in diverged
        )

    def needed(i: int) -> bool:
        """Member i still trains: its rows count and it has not stopped early."""
        return counts(i) and i not in frozen

    watch = DivergenceWatch(k, device) if defers_divergence_check(device) else None
    lr_fixed = bool(getattr(stepper, "lr_fixed", False))

    def check(losses: torch.Tensor, epoch: int) -> None:
        if watch is not None:  # on an accelerator: recorded on the device, read once an epoch
            watch.see(losses, step)
            return
        # One host sync per step, as in the sequential loop: a diverging fold is caught at once.
        if math.isfinite(losses.sum().item()):  # (a sum of finite losses that overflows: below)
            return
        for i, value in enumerate(losses.tolist()):
            if not math.isfinite(value) and i not in diverged and i not in frozen:
                diverged[i] = DivergedError(epoch, step, value)

    for epoch in range(1, epochs + 1):
        loss_sums = torch.zeros(k, device=device)
        # The full steps' losses and batch sizes, summed once at the epoch's end (one reduction,
        # not a few kernels a step), and the task's train metrics of every member.
        step_losses: list[torch.Tensor] = []
        step_rows: list[int] = []
        sums = task_metrics.train_sums(task, device, means[:, None], stds[:, None], members=k)
        seen = [0] * k
        lr_used = stepper.lrs()
        # Per member, (step, lr) at the epoch's first step and where it changes (train_step/lr).
        lr_steps: list[list[tuple[int, float]]] = [[(step + 1, lr)] for lr in lr_used]
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
                losses = task_metrics.member_losses(task, output, y)
                member_losses = losses.detach()
                check(member_losses, epoch)
                for i in range(k):
                    seen[i] += y.shape[1]
            else:  # the folds' last batches differ in size: each fold on its own rows
                losses, member_losses, trained = _ragged_step(stacked, task, tails, x_all, y_all)
                check(member_losses, epoch)
                for i, t, out in trained:
                    seen[i] += len(t)
                    with torch.no_grad():
                        loss_sums[i] += member_losses[i] * len(t)
                        sums.add_member(i, out.detach(), y_all[t])
            if step == 0:
                first_losses = member_losses  # the losses at initialization: the bounds' reference
            stacked.zero_grad()
            losses.sum().backward()  # d(sum)/d(fold's params) = that fold's own gradient
            stacked.gather_grads()
            if clip is not None:
                _clip_per_fold(stacked.flat, float(clip))
            if s > 0 and not lr_fixed:  # the lr each member's step uses, recorded where it changed
                lr_used = stepper.lrs()
                for i, lr in enumerate(lr_used):
                    if lr != lr_steps[i][-1][1]:
                        lr_steps[i].append((step + 1, lr))
            stepper.step()
            step += 1
            stacked.steps += 1
            for i, state in frozen.items():  # a stopped member stops changing
                stacked.set_member_state(i, state)
            if index is not None:
                step_losses.append(losses.detach())
                step_rows.append(y.shape[1])
                sums.add(output.detach(), y, losses)
        if step_losses:
            with torch.no_grad():
                rows_t = torch.tensor(step_rows, dtype=loss_sums.dtype, device=device)
                loss_sums += (torch.stack(step_losses) * rows_t[:, None]).sum(dim=0)
        if watch is not None:
            for i, found in watch.flush(epoch).items():
                if i not in frozen:  # (a stopped member's steps are undone)
                    diverged.setdefault(i, found)
        if not any(needed(i) for i in range(k)):
            break

        alive = [i for i in range(k) if i not in diverged and i not in frozen]
        seen_t = torch.tensor(seen, dtype=loss_sums.dtype, device=device).clamp_min(1)
        train_values = sums.values(loss_sums, seen_t)  # each [K]
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
            results[i].extend(lr_step_rows(lr_steps[i]))
            results[i].extend(epoch_rows(epoch, metrics))
            if on_lr is not None:
                on_lr(members[i].fold, lr_steps[i])
            rule = rules[i]
            if rule is not None:
                if rule.update(epoch, metrics) and rule.restore_best:
                    best[i] = stacked.member_state(i)
                if rule.stopped:
                    frozen[i] = best[i] if rule.restore_best else stacked.member_state(i)
                    stacked.set_member_state(i, frozen[i])
                    last_epoch[i] = epoch
            if on_epoch is not None:
                on_epoch(members[i].fold, epoch, metrics)
        if not any(needed(i) for i in range(k)):
            break

    for i, state in best.items():
        if i not in frozen:  # restore_best for the members that ran every epoch
            stacked.set_member_state(i, state)
    test_split = PaddedSplit.of(datas, "test")
    if test_split is not None and any(counts(i) for i in range(k)):
        # every member's test rows, once, after the last epoch
        test_values = evaluate_members(stacked, test_split, task, means, stds)
        test_table = torch.stack(list(test_values.values()), dim=1).tolist()
        for i in range(k):
            if i in diverged:
                continue
            named = {f"test/{m}": v for m, v in zip(test_values, test_table[i], strict=True)}
            judged = epoch_divergence(last_epoch.get(i, epochs), step - 1, named, None)
            if judged is not None:
                diverged[i] = judged
                continue
            results[i].extend(
                (last_epoch.get(i, epochs), "test", m, v)
                for m, v in zip(test_values, test_table[i], strict=True)
            )
    return [
        diverged[i]
        if i in diverged
        else long_rows(
            member.key,
            member.fold,
            results[i],
            model=stacked.member_state_dict(i),
            preprocess=member.data.preprocess,
        )
        for i, member in enumerate(members)
    ]
