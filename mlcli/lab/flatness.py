"""The loss along the straight line between two saved solutions (the course's flatness homework).

Two runs of the same architecture on the same folds (here: a small-batch and a large-batch run)
each keep fold k's weights in ``models/``. :func:`line_losses` evaluates the training objective
of :math:`\\theta(a) = (1-a)\\,\\theta_A + a\\,\\theta_B` on the fold's train and validation rows
for every ``a``: ``a = 0`` is solution A, ``a = 1`` solution B, ``a < 0`` and ``a > 1`` step past
each one, away from the other. How fast the loss rises past an endpoint (:func:`rise`) is that
solution's sharpness along the line, in the same units for both (the step is a share of the same
distance).

The fold's tensors are made as training made them (the run's config, its folds,
:func:`mlcli.data.preprocess.fold_tensors`), so the loss at an endpoint is the loss of the saved
model itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ALPHAS = tuple(float(a) for a in np.round(np.linspace(-0.5, 1.5, 21), 6))
"""The points on the line: -0.5 to 1.5 in steps of 0.1 (0 and 1 are the two solutions)."""


@dataclass
class Split:
    """One split's inputs and targets as the training loop saw them."""

    x: torch.Tensor
    y: torch.Tensor


def interpolate(
    state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], a: float
) -> dict[str, torch.Tensor]:
    """The state dict :math:`(1-a)\\,A + a\\,B`: every floating tensor (weights, biases, batch
    norm's running statistics) on the line; an integer one (a batch counter) is A's. Raises
    ValueError when the two are not of the same architecture."""
    if state_a.keys() != state_b.keys():
        raise ValueError("the two models have different parameters: not the same architecture")
    mixed = {}
    for name, tensor_a in state_a.items():
        tensor_b = state_b[name]
        if tensor_a.shape != tensor_b.shape:
            raise ValueError(
                f"{name}: shapes {tuple(tensor_a.shape)} and {tuple(tensor_b.shape)} differ"
            )
        if tensor_a.is_floating_point():
            mixed[name] = torch.lerp(tensor_a, tensor_b.to(tensor_a.dtype), float(a))
        else:
            mixed[name] = tensor_a.clone()
    return mixed


@torch.no_grad()
def line_losses(
    model: nn.Module,
    state_a: dict[str, torch.Tensor],
    state_b: dict[str, torch.Tensor],
    splits: dict[str, Split],
    task: str,
    alphas: Sequence[float] = ALPHAS,
) -> dict[str, np.ndarray]:
    """Each split's loss (the task's training objective, the model in eval mode) at every point
    ``alphas`` of the line from ``state_a`` to ``state_b``; ``model`` is an instance of their
    architecture (its own weights are replaced)."""
    from mlcli.tasks.metrics import loss

    losses = {name: np.empty(len(alphas)) for name in splits}
    model.eval()
    for i, a in enumerate(alphas):
        # an endpoint is that model's own state, bit for bit (lerp at 0 or 1 can round)
        state = state_a if a == 0 else state_b if a == 1 else interpolate(state_a, state_b, a)
        model.load_state_dict(state)
        for name, split in splits.items():
            losses[name][i] = float(loss(task, model(split.x), split.y))  # type: ignore[arg-type]
    return losses


def rise(alphas: Sequence[float], values: np.ndarray, at: float, step: float) -> float:
    """How much ``values`` rises from the point ``at`` to the point ``at + step`` of the line
    (``step`` < 0 steps before it): NaN when either point is not among ``alphas``."""
    points = np.round(np.asarray(alphas, dtype=float), 6)
    here, there = (
        np.flatnonzero(points == round(at, 6)),
        np.flatnonzero(points == round(at + step, 6)),
    )
    if not len(here) or not len(there):
        return float("nan")
    return float(values[there[0]] - values[here[0]])


@dataclass
class SavedFold:
    """Fold ``fold`` of a finished run: its model rebuilt from ``models/`` and its state dict."""

    model: nn.Module
    state: dict[str, torch.Tensor]


def saved_fold(run_dir: Path, fold: int) -> SavedFold:
    """Fold ``fold``'s saved model of the run in ``run_dir`` (raises
    :class:`~mlcli.rundir.models.ModelFilesError` when its files are missing)."""
    from mlcli.engine.saved import rebuild
    from mlcli.rundir.models import load_model, model_name, read_schema

    schema = read_schema(run_dir)
    weights, preprocess = load_model(run_dir, model_name(fold))
    model = rebuild(schema, weights, preprocess)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return SavedFold(model, state)


def fold_rows(run_dir: Path, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``fold``'s (train, val) row indices of the run in ``run_dir``, planned from its
    ``config.yaml``."""
    return _planned(run_dir)[1].folds[fold]


def _planned(run_dir: Path) -> tuple[Any, Any]:
    from omegaconf import OmegaConf

    from mlcli.rundir import CONFIG_FILE
    from mlcli.runner import plan_folds

    cfg = OmegaConf.load(Path(run_dir) / CONFIG_FILE)
    return cfg, plan_folds(cfg, "flatness")  # type: ignore[arg-type]


def fold_splits(run_dir: Path, fold: int) -> tuple[str, dict[str, Split]]:
    """(the task, fold ``fold``'s train and val tensors) of the run in ``run_dir``, made from its
    ``config.yaml`` exactly as its training made them."""
    from mlcli.data.preprocess import fold_tensors

    cfg, plan = _planned(run_dir)
    train_idx, val_idx = plan.folds[fold]
    data = fold_tensors(
        plan.dataset, train_idx, val_idx, plan.test_idx, cfg.dataset, torch.device("cpu")
    )
    splits = {"train": Split(data.x_train, data.y_train), "val": Split(data.x_val, data.y_val)}
    return plan.dataset.task, splits


def between_runs(
    run_a: Path, run_b: Path, fold: int = 0, alphas: Sequence[float] = ALPHAS
) -> dict[str, np.ndarray]:
    """The train and val loss on the line from run ``run_a``'s fold ``fold`` model to run
    ``run_b``'s (both of one architecture, on the same folds: ``run_a``'s tensors are used)."""
    a, b = saved_fold(run_a, fold), saved_fold(run_b, fold)
    for rows_a, rows_b in zip(fold_rows(run_a, fold), fold_rows(run_b, fold), strict=True):
        if not np.array_equal(rows_a, rows_b):
            raise ValueError(
                f"{run_a} and {run_b} trained fold {fold} on different rows (another dataset, "
                "cv or seed): the line between them has no common loss"
            )
    task, splits = fold_splits(run_a, fold)
    return line_losses(a.model, a.state, b.state, splits, task, alphas)
