"""Shared pieces of the structured-config schemas (no torch/pandas import: the CLI uses them)."""

from __future__ import annotations

import enum
from dataclasses import field
from typing import Any


def bound(default: Any, **bounds: float) -> Any:
    """A dataclass field whose value range (``gt``, ``ge``, ``lt``, ``le``) mlcli validates.

    OmegaConf checks types only; :func:`mlcli.config.validate` reads these bounds.
    """
    return field(default=default, metadata=bounds)


class Device(enum.Enum):
    """Where training runs: ``auto`` picks CUDA when it is available."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Normalize(enum.Enum):
    """Feature scaling, fitted on each fold's training rows only."""

    standard = "standard"
    minmax = "minmax"
    none = "none"


class Warmup(enum.Enum):
    """Learning-rate warmup: ``constant`` holds ``warmup_lr``, ``linear`` ramps up from ~0."""

    none = "none"
    constant = "constant"
    linear = "linear"


class TaskChoice(enum.Enum):
    """The task of a user's dataset: ``auto`` infers it from the target (and says so)."""

    auto = "auto"
    classification = "classification"
    regression = "regression"


class Missing(enum.Enum):
    """Empty or NA cells: ``error`` refuses them, ``drop`` drops their rows, ``mean`` imputes
    features per fold from the training rows (rows with a missing target are dropped)."""

    error = "error"
    drop = "drop"
    mean = "mean"


class Tokenizer(enum.Enum):
    """How text becomes tokens, fitted on each fold's training rows: whole words (and
    punctuation marks), characters, or learned subwords (``bpe``, ``wordpiece``)."""

    word = "word"
    char = "char"
    bpe = "bpe"
    wordpiece = "wordpiece"


class FinalModel(enum.Enum):
    """The run's final model, tested once: ``ensemble`` averages the fold models' predictions,
    ``refit`` retrains one model on every non-test row; ``none``: the fold models alone."""

    none = "none"
    ensemble = "ensemble"
    refit = "refit"


class StackFolds(enum.Enum):
    """Train a run's folds as one stacked model: ``auto`` when the model is overhead-bound."""

    auto = "auto"
    on = "on"
    off = "off"


# `continue` is a keyword, hence the functional form; OmegaConf matches members by name.
OnFailure = enum.Enum("OnFailure", [("continue", "continue"), ("stop", "stop")])
"""What a sweep does after a job fails: run the other jobs (``continue``) or start no more."""
