"""Per-fold preprocessing: every statistic is fitted on the fold's training rows only.

Feature scaling (``dataset.normalize``) and the regression target's standardization are fitted on
``train_idx`` and applied to the fold's val and test rows, so nothing about val/test leaks in.
Variable-length sequences (``dataset.lengths``) are scaled per feature with statistics over their
valid time steps only, and their padding stays exactly zero; token ids are never scaled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlcli.data.base import Dataset
from mlcli.train import FoldData


def enum_name(value: Any) -> str:
    """The plain name of a config enum value (``Normalize.standard`` -> ``standard``) or string."""
    return str(getattr(value, "name", value))


def valid_steps(lengths: np.ndarray, max_length: int) -> np.ndarray:
    """``(N, T)`` bool mask of the valid time steps of zero-padded sequences."""
    return np.arange(max_length)[None, :] < lengths[:, None]


class Normalizer:
    """Feature scaling whose statistics come from the training rows only.

    With ``lengths`` (sequences ``(N, T, F)``), statistics are per feature over valid steps.
    """

    def __init__(self, kind: str, x_train: np.ndarray, lengths: np.ndarray | None = None) -> None:
        self.kind = kind
        if lengths is not None:
            x_train = x_train[valid_steps(lengths, x_train.shape[1])]  # (valid steps, F)
        if kind == "standard":
            self.shift = x_train.mean(axis=0)
            scale = x_train.std(axis=0)
        elif kind == "minmax":
            self.shift = x_train.min(axis=0)
            scale = x_train.max(axis=0) - self.shift
        else:
            self.shift, scale = np.zeros(1, np.float32), np.ones(1, np.float32)
        # A constant feature (e.g. a digits corner pixel) is only shifted, never divided by 0.
        self.scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        self.shift = self.shift.astype(np.float32)

    def __call__(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        out = (x - self.shift) / self.scale
        if lengths is not None:
            out[~valid_steps(lengths, x.shape[1])] = 0.0  # padding stays zero
        return out


def fold_tensors(
    dataset: Dataset,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test_idx: np.ndarray,
    dataset_cfg: Any,
    device: torch.device,
) -> FoldData:
    """Normalize with statistics fitted on ``train_idx`` alone, then move to ``device``."""
    lengths = dataset.lengths
    kind = enum_name(dataset_cfg.get("normalize", "standard"))
    if dataset.vocab_size is not None:
        kind = "none"  # token ids are categories, not quantities
    train_lengths = lengths[train_idx] if lengths is not None else None
    scaler = Normalizer(kind, dataset.X[train_idx], train_lengths)
    mean, std = 0.0, 1.0
    y = dataset.y
    if dataset.task == "regression" and dataset_cfg.get("normalize_target", True):
        mean = float(y[train_idx].mean())
        std = float(y[train_idx].std()) or 1.0
        y = ((y - mean) / std).astype(np.float32)

    def tensors(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = lengths[index] if lengths is not None else None
        x = dataset.X[index] if kind == "none" else scaler(dataset.X[index], rows)
        return torch.from_numpy(x).to(device), torch.from_numpy(y[index]).to(device)

    def lengths_of(index: np.ndarray) -> torch.Tensor | None:
        return None if lengths is None else torch.from_numpy(lengths[index]).to(device)

    x_train, y_train = tensors(train_idx)
    x_val, y_val = tensors(val_idx)
    x_test, y_test = tensors(test_idx) if len(test_idx) else (None, None)
    return FoldData(
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        y_test,
        mean,
        std,
        lengths_train=lengths_of(train_idx),
        lengths_val=lengths_of(val_idx),
        lengths_test=lengths_of(test_idx) if len(test_idx) else None,
    )
