"""Targets of user data: infer the task, turn class labels into indices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_INFERRED_CLASSES = 20
"""A numeric target of integers with at most this many distinct values is inferred as classes."""


@dataclass
class TaskGuess:
    """The task inferred from a target, and the reason, stated to the user."""

    task: str
    reason: str


def infer_task(numbers: np.ndarray, column: str) -> TaskGuess:
    """Classification for integer targets with few distinct values, else regression.

    ``numbers`` holds the target as floats (every value a finite number); text labels are
    classification and are handled by the caller.
    """
    distinct = np.unique(numbers)
    integral = bool(np.all(distinct == np.round(distinct)))
    if integral and len(distinct) <= MAX_INFERRED_CLASSES:
        return TaskGuess(
            "classification",
            f"target {column!r} holds {len(distinct)} distinct integer values; "
            "set dataset.task=regression if it is a quantity",
        )
    kind = "integer" if integral else "real-valued"
    return TaskGuess(
        "regression",
        f"target {column!r} holds {len(distinct)} distinct {kind} values; "
        "set dataset.task=classification if they are labels",
    )


def encode_labels(values: np.ndarray, numeric: bool) -> tuple[np.ndarray, list[str]]:
    """Class indices 0..K-1 (sorted numerically for numbers, else as text) and the class names."""
    if numeric:
        numbers = values.astype(np.float64)
        classes, index = np.unique(numbers, return_inverse=True)
        names = [f"{c:g}" for c in classes]
    else:
        text = values if values.dtype.kind in "UT" else values.astype(str)  # T: StringDType
        classes, index = np.unique(text, return_inverse=True)
        names = [str(c) for c in classes]
    return index.astype(np.int64), names
