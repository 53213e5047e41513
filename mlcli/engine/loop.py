"""Fit one fold: the training loop, read top to bottom, and the metrics it records.

Metrics per epoch:

* ``train``: averaged over the epoch's mini-batches as they were trained on (train mode, so with
  dropout active), accumulated on the device without a host sync per step; plus ``lr``, the
  learning rate the epoch's last optimizer step used.
* ``train_step``: ``lr`` per optimizer step, at each epoch's first step and at every step whose
  lr differs from the step before (a warmup or a per-step decay): here the ``epoch`` column
  holds the optimizer step (counted from 1 over the fold), not the epoch.
* ``val`` (and ``test`` once, after the last epoch): the whole split in eval mode.

Classification records ``loss`` (cross-entropy) and ``acc``; regression records ``loss`` (MSE on
the standardized target that training minimizes) and ``mse``, ``mae``, ``r2`` in the target's
original units. Token tasks average over real tokens only (padding is never counted): tagging
records ``loss`` and ``acc``; seq2seq records ``loss`` and ``tf_acc`` (next-token accuracy under
teacher forcing) and, in evaluation, ``token_acc`` and ``exact_match`` of greedy decoding.
:mod:`mlcli.tasks` lists these names (the preflight checks ``metric=`` against them; a test holds
the two together); :mod:`mlcli.tasks.metrics` computes them, for this loop and the stacked one.

Every batch is trained on, but a trailing batch of one row when the model has batch norm. A fold
diverges (:class:`DivergedError`) at a step whose loss is not finite, or at the end of an epoch
whose val/test metrics are not finite or whose mean training loss exceeds ``diverge_factor`` ×
the loss at initialization (:mod:`mlcli.engine.divergence`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import nn

from mlcli.data.base import BOS, Task
from mlcli.data.preprocess import FoldData
from mlcli.engine.divergence import (
    DivergedError,
    DivergenceWatch,
    LossBound,
    defers_divergence_check,
    epoch_divergence,
)
from mlcli.engine.optim import step_function
from mlcli.engine.stopping import EarlyStopping
from mlcli.rundir.results import STEP_SPLIT
from mlcli.tasks import metrics as task_metrics

if TYPE_CHECKING:
    from mlcli.analysis import Analyzer

MetricRow = tuple[int, str, str, float]
"""(epoch, split, metric, value)."""


class FoldRows(list[dict[str, Any]]):
    """A fold's results in long form (``run_key, fold, epoch, split, metric, value`` per row)
    and, for a fold trained in this session, what predicting needs: ``model``, its weights (a
    state dict of CPU tensors, best or final as restored) and ``preprocess``, its fitted
    preprocessing (:attr:`mlcli.data.preprocess.FoldData.preprocess`)."""

    model: dict[str, torch.Tensor] | None = None
    preprocess: dict[str, Any] | None = None


EpochEnd = Callable[[int, int, dict[str, float]], None]
"""Called as ``on_epoch(fold, epoch, metrics)`` once an epoch's ``split/metric`` values are final
(both loops call it: the progress display, checkpoints, loggers)."""
LrSteps = Callable[[int, list[tuple[int, float]]], None]
"""Called as ``on_lr(fold, steps)`` at an epoch's end, just before ``on_epoch``: the epoch's
``(step, lr)`` pairs of its ``train_step/lr`` rows (both loops call it: checkpoints, loggers)."""

EVAL_CHUNK = 8192


class Seq2SeqModel(Protocol):
    """What the loop needs of a seq2seq model beyond its teacher-forced forward."""

    def generate(
        self, source: torch.Tensor, lengths: torch.Tensor | None, max_length: int
    ) -> torch.Tensor: ...


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` has a batch-norm layer (in train mode it needs more than one row)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_batch_size(batch_size: int, batch_norm: bool) -> None:
    """Refuse ``batch_size=1`` for a model with batch norm (every batch would be one row)."""
    if batch_size == 1 and batch_norm:
        raise ValueError(
            "batch_size=1 with a batch-norm model: batch norm needs more than one row per "
            "training batch; use batch_size >= 2, or a model without batch norm "
            "(model.batch_norm=false)"
        )


def batches_per_epoch(n: int, batch_size: int, batch_norm: bool = False) -> int:
    """Optimizer steps in one epoch of ``n`` rows: every batch, but for a model with batch norm
    (``batch_norm``) a trailing batch of a single row, which batch norm cannot train on."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 or (rest == 1 and (not batch_norm or n == 1)) else 0)


def forward(
    model: nn.Module, task: Task, x: torch.Tensor, lengths: torch.Tensor | None, y: torch.Tensor
) -> torch.Tensor:
    """The model's output for a batch; seq2seq is teacher-forced (the decoder reads BOS + y).

    Only a model whose ``forward`` takes ``lengths`` gets them; a fixed-size model (``mlp``)
    reads zero-padded sequences as they are.
    """
    if task == "seq2seq":
        target_in = torch.cat([torch.full_like(y[:, :1], BOS), y[:, :-1]], dim=1)
        return model(x, lengths, target_in)
    if lengths is not None and reads_lengths(model):
        return model(x, lengths)
    return model(x)


def reads_lengths(model: nn.Module) -> bool:
    """Whether a model's ``forward`` takes ``lengths`` (sequence models with padding masks)."""
    return "lengths" in inspect.signature(model.forward).parameters


def _rows(lengths: torch.Tensor | None, start: int) -> torch.Tensor | None:
    return None if lengths is None else lengths[start : start + EVAL_CHUNK]


# Modules whose forward never reads ``self.training`` (exact types: a subclass may read it).
_MODE_FREE = (
    nn.Sequential, nn.Linear, nn.Flatten, nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Sigmoid,
    nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Conv1d, nn.Conv2d, nn.MaxPool1d,
    nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.LayerNorm, nn.Embedding,
)  # fmt: skip


def mode_dependent(model: nn.Module) -> bool:
    """Whether ``model`` may compute differently in train and eval mode (dropout, batch norm,
    or any module not known to ignore the mode): only then does evaluation switch modes."""
    return any(type(m) not in _MODE_FREE for m in model.modules())


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    task: Task,
    mean: float,
    std: float,
    lengths: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Metrics of ``model`` on a whole split, in eval mode (values stay on the device).

    A seq2seq model is also decoded greedily (up to the targets' padded length) for
    ``token_acc`` (position-wise over real target tokens) and ``exact_match`` (whole sequence,
    EOS included).
    """
    toggle = mode_dependent(model)
    if toggle:
        model.eval()
    outputs, decoded = [], []
    for i in range(0, len(x), EVAL_CHUNK):
        x_i, y_i, lengths_i = x[i : i + EVAL_CHUNK], y[i : i + EVAL_CHUNK], _rows(lengths, i)
        outputs.append(forward(model, task, x_i, lengths_i, y_i))
        if task == "seq2seq":
            decoded.append(cast(Seq2SeqModel, model).generate(x_i, lengths_i, y.shape[1]))
    if toggle:
        model.train()
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    prediction = torch.cat(decoded) if decoded else None
    return task_metrics.eval_metrics(task, output, y, mean, std, prediction)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: FoldData,
    *,
    task: Task,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    clip_grad_norm: float | None = None,
    fold: int = 0,
    on_epoch: EpochEnd | None = None,
    on_lr: LrSteps | None = None,
    analyzer: Analyzer | None = None,
    start_epoch: int = 1,
    bound: LossBound | None = None,
    stopper: EarlyStopping | None = None,
) -> list[MetricRow]:
    """Train ``model`` for ``epochs`` epochs on the fold's training rows; return metric rows.

    ``start_epoch`` > 1 continues a fold restored from a checkpoint (rows from that epoch on).
    ``on_epoch(fold, epoch, metrics)`` is called at the end of every epoch, after
    ``on_lr(fold, steps)`` with the epoch's per-step lr rows. ``stopper`` (early
    stopping) ends training after the epoch it says, and with ``restore_best`` puts the best
    epoch's weights back before the test rows are evaluated.

    The fold's test rows (if any) are evaluated exactly once, after the last epoch.
    Raises :class:`DivergedError` at the first optimizer step whose loss is not finite, and at the
    end of an epoch whose val (or, after the last, test) metrics are not finite or whose mean
    training loss exceeds ``bound`` (:func:`epoch_divergence`).
    """
    rows: list[MetricRow] = []
    n = data.n_train
    device = data.x_train.device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer_step = step_function(optimizer)  # optimizer.step(), without its Python wrapping
    mean, std = data.target_mean, data.target_std
    # A trailing batch of one row is trained on, unless batch norm needs more (batches_per_epoch).
    batch_norm = has_batch_norm(model)
    check_batch_size(batch_size, batch_norm)
    step = (start_epoch - 1) * batches_per_epoch(n, batch_size, batch_norm)
    bound = bound if bound is not None else LossBound()
    first_loss: torch.Tensor | None = None  # the first step's loss, read at the epoch's end
    # A constant schedule (no warmup) never changes the lr: skip its per-step Python call.
    lr_fixed = all(getattr(f, "is_constant", False) for f in getattr(scheduler, "lr_lambdas", [0]))
    watch = DivergenceWatch(1, device) if defers_divergence_check(device) else None
    model.train()
    last_epoch = start_epoch - 1
    if analyzer is not None and start_epoch == 1:
        rows.extend(analyzer.before_training(model))  # a trajectory's starting point
    for epoch in range(start_epoch, epochs + 1):
        if stopper is not None and stopper.stopped:
            break  # (a fold resumed from the checkpoint of its last epoch)
        last_epoch = epoch
        # Running sums stay on the device: one host sync per epoch, not one per step (on the
        # CPU the loss is read at every step anyway, for the divergence check: it is summed
        # there, in double precision).
        loss_sum = torch.zeros((), device=device)
        loss_total = 0.0
        sums = task_metrics.train_sums(task, device, mean, std)  # the task's train metrics
        seen = 0
        lr_used = optimizer.param_groups[0]["lr"]
        lr_steps: list[tuple[int, float]] = []  # (step, lr): the epoch's first step, each change
        permutation = torch.randperm(n, generator=generator).to(device)
        for x, y, lengths in training_batches(data, permutation, batch_size, batch_norm):
            batch = len(y)
            if data.train_transform is not None:  # augmentation, then normalization
                x = data.train_transform(x)
            output = forward(model, task, x, lengths, y)
            loss = task_metrics.loss(task, output, y)
            if step == 0:
                first_loss = loss.detach()  # the loss at initialization: the bound's reference
            if watch is not None:
                watch.see(loss, step)
                loss_sum.add_(loss.detach(), alpha=batch)
            else:
                value = loss.item()
                if not math.isfinite(value):
                    raise DivergedError(epoch, step, value)
                loss_total += value * batch
            for p in params:
                p.grad = None
            loss.backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, clip_grad_norm)
            if not lr_fixed:
                lr_used = optimizer.param_groups[0]["lr"]
            if not lr_steps or (not lr_fixed and lr_used != lr_steps[-1][1]):
                lr_steps.append((step + 1, float(lr_used)))  # a Python float: no device sync
            optimizer_step()
            if not lr_fixed:
                scheduler.step()
            step += 1
            seen += batch
            sums.add(output.detach(), y, loss)

        if watch is not None and (diverged := watch.flush(epoch)):
            raise diverged[0]
        if watch is None:
            loss_sum = torch.tensor(loss_total, device=device)
        train_values = sums.values(loss_sum, max(seen, 1))
        val_values = evaluate_split(model, data, "val", task)
        # One transfer for everything the epoch recorded (and the bound's reference, once).
        names = [("train", k) for k in train_values] + [("val", k) for k in val_values]
        reference = [first_loss] if bound.initial is None and first_loss is not None else []
        numbers = torch.stack([*train_values.values(), *val_values.values(), *reference]).tolist()
        if reference:
            bound.initial = numbers.pop()
        epoch_metrics = {f"{split}/{k}": v for (split, k), v in zip(names, numbers, strict=True)}
        if (judged := epoch_divergence(epoch, step - 1, epoch_metrics, bound.limit)) is not None:
            raise judged
        epoch_metrics["train/lr"] = float(lr_used)
        rows.extend(lr_step_rows(lr_steps))
        rows.extend(epoch_rows(epoch, epoch_metrics))
        if analyzer is not None:  # critical points / saddle escape / landscape (mlcli.analysis)
            rows.extend(
                analyzer.after_epoch(model, data.x_train, data.y_train, epoch, epoch == epochs)
            )
        if on_lr is not None:
            on_lr(fold, lr_steps)
        if stopper is not None and stopper.update(epoch, epoch_metrics):
            stopper.keep(model.state_dict())
        if on_epoch is not None:
            on_epoch(fold, epoch, epoch_metrics)  # (a checkpoint then holds the stopper's state)
        if stopper is not None and stopper.stopped:
            break

    if stopper is not None and stopper.weights is not None:
        model.load_state_dict(stopper.weights)  # restore_best: the best epoch's weights
    has_test = data.x_test is not None and data.y_test is not None and len(data.x_test) > 0
    if has_test or (data.stream is not None and data.stream.n("test") > 0):
        test_values = evaluate_split(model, data, "test", task)
        numbers = torch.stack(list(test_values.values())).tolist()
        test_metrics = {f"test/{k}": v for k, v in zip(test_values, numbers, strict=True)}
        if (judged := epoch_divergence(last_epoch, step - 1, test_metrics, None)) is not None:
            raise judged
        rows.extend((last_epoch, "test", k, v) for k, v in zip(test_values, numbers, strict=True))
    return rows


def training_batches(
    data: FoldData, permutation: torch.Tensor, batch_size: int, batch_norm: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """One epoch's training batches ``(x, y, lengths)`` in ``permutation``'s order: every batch,
    but a trailing batch of one row for a model with batch norm (see :func:`batches_per_epoch`).
    Pictures on disk come from the fold's loader, in the same order."""
    n = data.n_train
    if data.stream is not None:
        normalize = data.train_transform is None  # else normalized after augmentation
        for x, y in data.stream.batches("train", permutation.tolist(), normalize):
            if len(y) == 1 and batch_norm and n > 1:
                continue
            yield x, y, None
        return
    for start in range(0, n, batch_size):
        batch = min(batch_size, n - start)
        if batch == 1 and batch_norm and n > 1:
            continue  # a trailing batch of one row breaks batch norm (see batches_per_epoch)
        index = permutation[start : start + batch]
        # index_select: the same rows as x[index], without advanced indexing's set-up
        x, y = data.x_train.index_select(0, index), data.y_train.index_select(0, index)
        yield x, y, None if data.lengths_train is None else data.lengths_train[index]


def evaluate_split(model: nn.Module, data: FoldData, split: str, task: Task) -> dict[str, Any]:
    """:func:`evaluate` on the fold's ``val`` or ``test`` rows (never augmented); pictures on disk
    are read batch by batch and their outputs joined."""
    mean, std = data.target_mean, data.target_std
    if data.stream is None:
        x, y = (data.x_val, data.y_val) if split == "val" else (data.x_test, data.y_test)
        lengths = data.lengths_val if split == "val" else data.lengths_test
        assert x is not None and y is not None
        return evaluate(model, x, y, task, mean, std, lengths)
    toggle = mode_dependent(model)
    if toggle:
        model.eval()
    outputs, targets = [], []
    with torch.no_grad():
        for x, y in data.stream.batches(split):
            outputs.append(model(x))
            targets.append(y)
    if toggle:
        model.train()
    return task_metrics.eval_metrics(task, torch.cat(outputs), torch.cat(targets), mean, std, None)


def epoch_rows(epoch: int, metrics: dict[str, float]) -> list[MetricRow]:
    """An epoch's ``split/metric`` values as metric rows."""
    rows = []
    for name, value in metrics.items():
        split, metric = name.split("/", 1)
        rows.append((epoch, split, metric, value))
    return rows


def lr_step_rows(steps: list[tuple[int, float]]) -> list[MetricRow]:
    """``(step, lr)`` pairs as ``train_step/lr`` metric rows (the step in the epoch column)."""
    return [(step, STEP_SPLIT, "lr", lr) for step, lr in steps]


def long_rows(
    run_key: str,
    fold: int,
    rows: list[MetricRow],
    model: dict[str, torch.Tensor] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> FoldRows:
    """A fold's metric rows in the long form of the results table, with its trained ``model``
    (a state dict, copied to the CPU) and its fitted ``preprocess``."""
    out = FoldRows(
        {"run_key": run_key, "fold": fold, "epoch": e, "split": s, "metric": m, "value": v}
        for e, s, m, v in rows
    )
    if model is not None:
        out.model = {name: t.detach().cpu().clone() for name, t in model.items()}
    out.preprocess = preprocess
    return out
