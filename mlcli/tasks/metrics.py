"""What each task computes from a model's output, in torch: the loss, the training-epoch sums and
the metrics of a split.

The plain loop (:func:`mlcli.engine.loop.fit`) and the stacked loop
(:func:`mlcli.engine.stacked.train_members`) call the same code for each task: :func:`loss` for
the objective, a :class:`TrainSums` accumulator (``sums.add(output, y, loss)`` after every
optimizer step, ``sums.values(loss_sum, seen)`` at the epoch's end) for the ``train`` metrics, and
the evaluation (:func:`eval_metrics`, :func:`regression_metrics`) for ``val`` and ``test``. The
names each task records are :mod:`mlcli.tasks`' tables.

A stack's outputs carry a leading member dimension (``[K, B, ...]``): the sums reduce over the
rows (the last dimension of ``y``) and keep one value per member.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch.nn import functional as F

from mlcli.data.base import IGNORE_INDEX, PAD, Task

COUNT_CHUNK = 1 << 20
"""Training outputs (elements) kept before they are reduced: one argmax (or one set of sums)
over many steps' outputs beats a few kernels a step."""
TOKEN_TASKS = ("tagging", "seq2seq")


def token_targets(task: Task, y: torch.Tensor) -> torch.Tensor:
    """Per-token targets with padding marked ``IGNORE_INDEX`` (tagging marks it already;
    seq2seq targets are padded with ``PAD``)."""
    return y.masked_fill(y == PAD, IGNORE_INDEX) if task == "seq2seq" else y


def loss(task: Task, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training objective of ``task``: cross-entropy (per example, or per real token), or
    the MSE on the standardized regression target."""
    if task == "classification":
        if output.dim() != 2:
            raise ValueError(
                "a classification task needs one prediction per example, shape (N, classes), but "
                f"the model returned {tuple(output.shape)}; use a pooled head (model.head=sequence)"
            )
        return F.cross_entropy(output, target)
    if task in TOKEN_TASKS:
        if output.dim() != 3:
            raise ValueError(
                f"a {task} task needs one prediction per token, shape (N, T, classes), but the "
                f"model returned {tuple(output.shape)}; use a per-token head (model.head=token)"
            )
        labels = token_targets(task, target)
        return F.cross_entropy(output.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    return F.mse_loss(output.reshape(target.shape), target)


def member_losses(task: Task, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean loss over a stacked step (``output`` ``[K, B, ...]``): ``[K]``, the
    loss each member's own model would compute (classification and regression are stacked)."""
    if task == "classification":
        # classes on dim 1 ([K, C, B], the layout a stacked model computes in): no copy
        return F.cross_entropy(output.transpose(1, 2), y, reduction="none").mean(dim=1)
    if task in TOKEN_TASKS:
        raise TypeError(f"a {task} task is never trained as a stack")
    return F.mse_loss(output.reshape(y.shape), y, reduction="none").mean(dim=1)


def token_sums(task: Task, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(correct, count) over the real tokens of a per-token output."""
    labels = token_targets(task, y)
    real = labels != IGNORE_INDEX
    correct = ((output.argmax(dim=-1) == labels) & real).sum()
    return torch.stack([correct, real.sum()]).to(output.dtype)


def regression_metrics(
    standardized: torch.Tensor,
    y: torch.Tensor,
    mean: float | torch.Tensor,
    std: float | torch.Tensor,
    average: Callable[[torch.Tensor], torch.Tensor] = torch.mean,
) -> dict[str, torch.Tensor]:
    """``mse``, ``mae`` and ``r2`` in the target's original units, from standardized predictions
    and targets (``average``: the mean over rows; a masked one for padded stacked splits)."""
    target = y * std + mean
    error = standardized * std + mean - target
    mse = average(error.pow(2))
    total = average((target - average(target)).pow(2))
    return {
        "mse": mse,
        "mae": average(error.abs()),
        "r2": 1.0 - mse / total.clamp_min(torch.finfo(total.dtype).tiny),
    }


def eval_metrics(
    task: Task,
    output: torch.Tensor,
    y: torch.Tensor,
    mean: float,
    std: float,
    decoded: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The metrics of a whole split from the model's ``output`` on it (values stay on the
    device); seq2seq also scores ``decoded``, the greedy decoding of the split."""
    value = loss(task, output, y)
    if task == "classification":
        return {"loss": value, "acc": (output.argmax(dim=-1) == y).float().mean()}
    if task == "tagging":
        correct, count = token_sums(task, output, y)
        return {"loss": value, "acc": correct / count}
    if task == "seq2seq":
        assert decoded is not None
        correct, count = token_sums(task, output, y)
        real = y != PAD
        return {
            "loss": value,
            "tf_acc": correct / count,
            "token_acc": ((decoded == y) & real).sum() / real.sum(),
            "exact_match": (decoded == y).all(dim=1).float().mean(),
        }
    return {"loss": value, **regression_metrics(output.reshape(y.shape), y, mean, std)}


def member_eval_metrics(
    task: Task,
    output: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """:func:`eval_metrics` of every member of a stack at once, over each member's real rows
    (``output`` ``[K, N, ...]`` zero-padded to the longest member's split; ``mask`` ``[K, N]``:
    1.0 for a real row): each metric as ``[K]`` values."""
    k, n = mask.shape
    counts = mask.sum(dim=1)

    def mean(values: torch.Tensor) -> torch.Tensor:  # [K, N] -> [K, 1], over real rows
        return ((values * mask).sum(dim=1) / counts)[:, None]

    if task == "classification":
        per_row = F.cross_entropy(output.transpose(1, 2), y, reduction="none")
        correct = (output.argmax(dim=-1) == y).to(per_row.dtype)
        metrics = {"loss": mean(per_row), "acc": mean(correct)}
    elif task in TOKEN_TASKS:
        raise TypeError(f"a {task} task is never trained as a stack")
    else:
        target, standardized = y.reshape(k, n), output.reshape(k, n)
        metrics = {
            "loss": mean((standardized - target).pow(2)),
            **regression_metrics(standardized, target, means[:, None], stds[:, None], mean),
        }
    return {name: value.squeeze(1) for name, value in metrics.items()}


# --------------------------------------------------------------------------------------------------
# The train metrics: sums over an epoch's steps, as they were trained on.


class TrainSums(Protocol):
    """One epoch's train-metric sums of a task, on the device (no host sync a step)."""

    def add(self, output: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """A step's (detached) output, targets and mean loss; with a leading member dimension
        for a stack."""

    def add_member(self, member: int, output: torch.Tensor, y: torch.Tensor) -> None:
        """One member's rows of a step that the stack trained member by member."""

    def values(self, loss_sum: torch.Tensor, seen: int | torch.Tensor) -> dict[str, torch.Tensor]:
        """The epoch's train metrics (one value, or one per member), from the sum of the steps'
        mean losses × rows (``loss_sum``) and the rows trained on (``seen``)."""


class ClassificationSums:
    """Correct predictions, counted from the kept outputs once :data:`COUNT_CHUNK` elements are
    reached (one argmax over many steps' outputs)."""

    def __init__(self, device: torch.device, members: int | None = None) -> None:
        self.correct = torch.zeros(() if members is None else (members,), device=device)
        self.outputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.elements = 0

    def add(self, output: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """Keep the step's outputs (counted later, many steps at once)."""
        self.outputs.append(output)
        self.targets.append(y)
        self.elements += output.numel()
        if self.elements >= COUNT_CHUNK:
            self._count()

    def add_member(self, member: int, output: torch.Tensor, y: torch.Tensor) -> None:
        """Count one member's rows now."""
        self.correct[member] += (output.argmax(dim=-1) == y).sum()

    def _count(self) -> None:
        if self.outputs:
            rows = self.targets[0].dim() - 1  # the rows' dimension (after a stack's members')
            output, y = torch.cat(self.outputs, dim=rows), torch.cat(self.targets, dim=rows)
            self.correct += (output.argmax(dim=-1) == y).sum(dim=-1)
            self.outputs, self.targets, self.elements = [], [], 0

    def values(self, loss_sum: torch.Tensor, seen: int | torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss`` and ``acc`` over the rows trained on."""
        self._count()
        return {"loss": loss_sum / seen, "acc": self.correct / seen}


class RegressionSums:
    """Squared and absolute errors and the target's first two moments, in the target's original
    units (``mean`` and ``std``: the fold's standardization; ``[K, 1]`` tensors for a stack),
    reduced once :data:`COUNT_CHUNK` elements are kept."""

    def __init__(
        self,
        device: torch.device,
        mean: float | torch.Tensor,
        std: float | torch.Tensor,
        members: int | None = None,
    ) -> None:
        self.mean, self.std = mean, std
        self.sums = torch.zeros((4,) if members is None else (members, 4), device=device)
        self.outputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.elements = 0

    def add(self, output: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """Keep the step's outputs (reduced later, many steps at once)."""
        self.outputs.append(output)
        self.targets.append(y)
        self.elements += output.numel()
        if self.elements >= COUNT_CHUNK:
            self._reduce()

    def add_member(self, member: int, output: torch.Tensor, y: torch.Tensor) -> None:
        """Add one member's rows now."""
        assert isinstance(self.mean, torch.Tensor) and isinstance(self.std, torch.Tensor)
        self.sums[member] += _error_sums(output, y, self.mean[member], self.std[member])

    def _reduce(self) -> None:
        if self.outputs:
            rows = self.targets[0].dim() - 1
            output, y = torch.cat(self.outputs, dim=rows), torch.cat(self.targets, dim=rows)
            self.sums += _error_sums(output, y, self.mean, self.std)
            self.outputs, self.targets, self.elements = [], [], 0

    def values(self, loss_sum: torch.Tensor, seen: int | torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss`` (on the standardized target) and ``mse``, ``mae``, ``r2``."""
        self._reduce()
        sse, sae, sum_y, sum_y2 = self.sums.unbind(-1)
        total = (sum_y2 - sum_y * sum_y / seen).clamp_min(torch.finfo(self.sums.dtype).tiny)
        return {
            "loss": loss_sum / seen,
            "mse": sse / seen,
            "mae": sae / seen,
            "r2": 1.0 - sse / total,
        }


def _error_sums(
    output: torch.Tensor, y: torch.Tensor, mean: float | torch.Tensor, std: float | torch.Tensor
) -> torch.Tensor:
    """(sse, sae, sum y, sum y²) over the rows (the last dimension of ``y``)."""
    target = y * std + mean
    error = output.reshape(y.shape) * std + mean - target
    sums = [error.pow(2).sum(-1), error.abs().sum(-1), target.sum(-1), target.pow(2).sum(-1)]
    return torch.stack(sums, dim=-1)


class TokenSums:
    """Correct and real tokens, and the loss weighted by real tokens (the epoch's loss is the
    token-weighted mean), added at every step. Token tasks are never stacked."""

    def __init__(self, task: Task, device: torch.device) -> None:
        self.task = task
        self.sums = torch.zeros(3, device=device)  # correct tokens, real tokens, loss × tokens

    def add(self, output: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """Count the step's real tokens."""
        right, count = token_sums(self.task, output, y)
        self.sums += torch.stack([right, count, loss.detach() * count])

    def add_member(self, member: int, output: torch.Tensor, y: torch.Tensor) -> None:
        """Not for token tasks (they are never stacked)."""
        raise TypeError(f"a {self.task} task is never trained as a stack")

    def values(self, loss_sum: torch.Tensor, seen: int | torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss`` and ``acc`` (tagging) or ``tf_acc`` (seq2seq) over real tokens."""
        tokens = self.sums[1].clamp_min(1.0)
        accuracy = "acc" if self.task == "tagging" else "tf_acc"
        return {"loss": self.sums[2] / tokens, accuracy: self.sums[0] / tokens}


def train_sums(
    task: Task,
    device: torch.device,
    mean: float | torch.Tensor = 0.0,
    std: float | torch.Tensor = 1.0,
    members: int | None = None,
) -> TrainSums:
    """A fresh epoch's :class:`TrainSums` for ``task`` (``members``: a stack's size)."""
    if task == "classification":
        return ClassificationSums(device, members)
    if task in TOKEN_TASKS:
        return TokenSums(task, device)
    return RegressionSums(device, mean, std, members)
