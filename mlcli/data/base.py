"""The one in-memory dataset type that every builder returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Task = Literal["classification", "regression"]


@dataclass
class Dataset:
    """Features and targets held in memory, plus what a model needs to know about them.

    ``X`` has shape ``(N, *in_shape)`` (flat features, ``C×H×W`` images or ``T×F`` sequences);
    ``y`` holds class indices (classification) or real values (regression). ``test_index`` is the
    dataset's own held-out test split, if it has one.

    ``categorical`` lists the columns of a flat ``X`` that hold category codes (one-hot encoded
    per fold, fitted on the training rows); ``X`` may hold NaN where a builder was asked to leave
    missing cells for per-fold imputation (``missing=mean``). ``ordered`` says the rows are in time
    order, so the test split is the last rows. ``lengths`` are the true lengths of padded
    sequences. ``notes`` state what a builder inferred or did (task, dropped rows...): the runner
    logs them and writes them to status.json.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    task: Task
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    test_index: np.ndarray | None = None
    groups: np.ndarray | None = None
    source: str = ""
    categorical: tuple[int, ...] = ()
    ordered: bool = False
    lengths: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"{self.name}: {len(self.X)} feature rows but {len(self.y)} targets")
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        if self.task == "classification":
            self.y = np.asarray(self.y, dtype=np.int64)
        else:
            self.y = np.asarray(self.y, dtype=np.float32)

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(int(d) for d in self.X.shape[1:])

    @property
    def n_classes(self) -> int:
        """Number of classes (classification only)."""
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.y.max()) + 1

    @property
    def out_features(self) -> int:
        """Width of the model's output: one logit per class, or one value per target."""
        if self.task == "classification":
            return self.n_classes
        return 1 if self.y.ndim == 1 else int(self.y.shape[1])
