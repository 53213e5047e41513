"""Fit one fold: the training loop, read top to bottom, and the metrics it records.

Metrics per epoch:

* ``train``: averaged over the epoch's mini-batches as they were trained on (train mode, so with
  dropout active), accumulated on the device without a host sync per step; plus ``lr``, the
  learning rate the epoch's last optimizer step used.
* ``val`` (and ``test`` once, after the last epoch): the whole split in eval mode.

Classification records ``loss`` (cross-entropy) and ``acc``; regression records ``loss`` (MSE on
the standardized target that training minimizes) and ``mse``, ``mae``, ``r2`` in the target's
original units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from mlcli.data.base import Task

if TYPE_CHECKING:
    from mlcli.analysis import Analyzer

MetricRow = tuple[int, str, str, float]
"""(epoch, split, metric, value)."""

EVAL_CHUNK = 8192


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(f"training loss became {loss} at epoch {epoch}, optimizer step {step}")
        self.epoch = epoch
        self.step = step
        self.loss = loss


@dataclass
class FoldData:
    """One fold's tensors, already normalized and on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    target_mean: float = 0.0
    target_std: float = 1.0


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (a trailing batch of a single row is skipped)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 or (rest == 1 and n == 1) else 0)


def _loss(task: Task, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task == "classification":
        return F.cross_entropy(output, target)
    return F.mse_loss(output.reshape(target.shape), target)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task, mean: float, std: float
) -> dict[str, torch.Tensor]:
    """Metrics of ``model`` on a whole split, in eval mode (values stay on the device)."""
    model.eval()
    outputs = torch.cat([model(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])
    model.train()
    loss = _loss(task, outputs, y)
    if task == "classification":
        acc = (outputs.argmax(dim=-1) == y).float().mean()
        return {"loss": loss, "acc": acc}
    prediction = outputs.reshape(y.shape) * std + mean
    target = y * std + mean
    error = prediction - target
    mse = error.pow(2).mean()
    total = (target - target.mean()).pow(2).mean()
    return {
        "loss": loss,
        "mse": mse,
        "mae": error.abs().mean(),
        "r2": 1.0 - mse / total.clamp_min(torch.finfo(total.dtype).tiny),
    }


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
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    analyzer: Analyzer | None = None,
    start_epoch: int = 1,
) -> list[MetricRow]:
    """Train ``model`` for ``epochs`` epochs on the fold's training rows; return metric rows.

    ``start_epoch`` > 1 continues a fold restored from a checkpoint (rows from that epoch on).

    The fold's test rows (if any) are evaluated exactly once, after the last epoch.
    Raises :class:`DivergedError` at the first optimizer step whose loss is not finite.
    """
    rows: list[MetricRow] = []
    n = len(data.x_train)
    device = data.x_train.device
    params = [p for p in model.parameters() if p.requires_grad]
    mean, std = data.target_mean, data.target_std
    step = (start_epoch - 1) * batches_per_epoch(n, batch_size)
    # A constant schedule (no warmup) never changes the lr: skip its per-step Python call.
    lr_fixed = all(getattr(f, "is_constant", False) for f in getattr(scheduler, "lr_lambdas", [0]))
    model.train()
    for epoch in range(start_epoch, epochs + 1):
        # Running sums stay on the device: one host sync per epoch, not one per step.
        loss_sum = torch.zeros((), device=device)
        score_sums = torch.zeros(4, device=device)  # acc: correct; reg: sse, sae, sum y, sum y²
        correct = score_sums[0]  # a view: accumulating into it fills score_sums[0]
        seen = 0
        lr_used = optimizer.param_groups[0]["lr"]
        permutation = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            index = permutation[start : start + batch_size]
            if len(index) < 2 <= n:
                continue  # a trailing batch of one row breaks batch norm (see batches_per_epoch)
            x, y = data.x_train[index], data.y_train[index]
            output = model(x)
            loss = _loss(task, output, y)
            if not torch.isfinite(loss):
                raise DivergedError(epoch, step, float(loss.detach()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, clip_grad_norm)
            lr_used = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if not lr_fixed:
                scheduler.step()
            step += 1

            batch = len(index)
            seen += batch
            with torch.no_grad():
                loss_sum.add_(loss.detach(), alpha=batch)
                if task == "classification":
                    correct.add_((output.argmax(dim=-1) == y).sum())
                else:
                    target = y * std + mean
                    error = output.detach().reshape(y.shape) * std + mean - target
                    score_sums += torch.stack(
                        [error.pow(2).sum(), error.abs().sum(), target.sum(), target.pow(2).sum()]
                    )

        train_values = _train_metrics(task, loss_sum, score_sums, max(seen, 1))
        val_values = evaluate(model, data.x_val, data.y_val, task, mean, std)
        # One transfer for everything the epoch recorded.
        names = [("train", k) for k in train_values] + [("val", k) for k in val_values]
        numbers = torch.stack([*train_values.values(), *val_values.values()]).tolist()
        epoch_metrics = {f"{split}/{k}": v for (split, k), v in zip(names, numbers, strict=True)}
        epoch_metrics["train/lr"] = float(lr_used)
        for key, value in epoch_metrics.items():
            split, metric = key.split("/", 1)
            rows.append((epoch, split, metric, value))
        if analyzer is not None:  # critical points / saddle escape / landscape (mlcli.analysis)
            rows.extend(
                analyzer.after_epoch(model, data.x_train, data.y_train, epoch, epoch == epochs)
            )
        if on_epoch is not None:
            on_epoch(epoch, epoch_metrics)

    if data.x_test is not None and data.y_test is not None and len(data.x_test) > 0:
        test_values = evaluate(model, data.x_test, data.y_test, task, mean, std)
        for metric, value in zip(
            test_values, torch.stack(list(test_values.values())).tolist(), strict=True
        ):
            rows.append((epochs, "test", metric, value))
    return rows


def _train_metrics(
    task: Task, loss_sum: torch.Tensor, sums: torch.Tensor, seen: int
) -> dict[str, torch.Tensor]:
    if task == "classification":
        return {"loss": loss_sum / seen, "acc": sums[0] / seen}
    sse, sae, sum_y, sum_y2 = sums
    total = (sum_y2 - sum_y * sum_y / seen).clamp_min(torch.finfo(sums.dtype).tiny)
    return {"loss": loss_sum / seen, "mse": sse / seen, "mae": sae / seen, "r2": 1.0 - sse / total}
