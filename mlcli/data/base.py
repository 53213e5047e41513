"""The one in-memory dataset type that every builder returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Task = Literal["classification", "regression", "tagging", "seq2seq"]

# Special tokens of token-sequence datasets (seq2seq targets: BOS ... EOS, padded with PAD).
PAD, BOS, EOS = 0, 1, 2


@dataclass
class Dataset:
    """Features and targets held in memory, plus what a model needs to know about them.

    ``X`` has shape ``(N, *in_shape)`` (flat features, ``C×H×W`` images or ``T×F`` sequences);
    ``y`` holds class indices (classification) or real values (regression). ``test_index`` is the
    dataset's own held-out test split, if it has one.
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
    lengths: np.ndarray | None = None
    vocab_size: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"{self.name}: {len(self.X)} feature rows but {len(self.y)} targets")
        token_input = self.vocab_size is not None
        self.X = np.ascontiguousarray(self.X, dtype=np.int64 if token_input else np.float32)
        if self.lengths is not None:
            self.lengths = np.asarray(self.lengths, dtype=np.int64)
        if self.task in ("classification", "tagging", "seq2seq"):
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
        if self.task == "seq2seq":
            assert self.vocab_size is not None
            return self.vocab_size
        if self.task in ("classification", "tagging"):
            return self.n_classes
        return 1 if self.y.ndim == 1 else int(self.y.shape[1])
